"""A crash (``kill -9``) with jobs running and queued, then a restart on the same database:
the real ``imagine-bot run`` against the fake Discord and Slack and a fake image API whose
``Stall`` answers keep the first jobs running until the crash.

What a member sees: their "Generating…" or "Queued" message becomes "This job was interrupted
by a restart; nothing was charged." with Try again, within seconds of the restart; their quota
is whole again; Try again makes one job and one charge however often it is pressed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from bot.messages import ALREADY_WORKING, INTERRUPTED_NOTICE
from tests.fakes.discord import FakeDiscord, FakeMessage
from tests.fakes.image_api import FakeImageAPI, Stall
from tests.fakes.process import REPO_ROOT, BotProcess
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.e2e

RUNNING, QUEUED = 2, 4


def _crowded(platform: dict[str, str], api: FakeImageAPI) -> dict[str, str]:
    """One image a day per member, ``RUNNING`` slots, one job per member at a time."""
    return {
        **platform,
        **api.env(),
        "IMAGE_API_MAX_RETRIES": "0",
        "DEFAULT_IMAGES_PER_DAY": "1",
        "MAX_CONCURRENT_JOBS": str(RUNNING),
        "MAX_JOBS_PER_USER": "1",
    }


async def test_a_crash_on_discord_refunds_and_tells_every_member_after_the_restart(
    tmp_path: Path,
) -> None:
    async with FakeDiscord() as discord, FakeImageAPI() as api:
        env = _crowded(discord.env(), api)
        members = [discord.member() for _ in range(RUNNING + QUEUED)]
        api.script(*(Stall() for _ in range(RUNNING)))
        crashed = BotProcess(env, workdir=tmp_path)
        async with crashed:
            discord.watch(crashed)
            await discord.wait_connected()
            asked = [
                await discord.slash("imagine", {"prompt": f"lantern {i}"}, member=member)
                for i, member in enumerate(members)
            ]

            def shown(prefix: str) -> list[FakeMessage]:
                found = [discord.messages.get(i.original_id or "") for i in asked]
                return [m for m in found if m is not None and m.content.startswith(prefix)]

            await discord.wait_for(lambda: len(shown("Queued")) == QUEUED)
            await api.wait_for(lambda: len(api.generations) == RUNNING)
            await crashed.kill()

        restarted = BotProcess(env, workdir=tmp_path)
        async with restarted:
            discord.watch(restarted)
            started = time.monotonic()
            told = await discord.wait_for(
                lambda: len(shown("<@")) == len(asked) and shown("<@"), timeout=10
            )
            told_after = time.monotonic() - started
            for message in told:
                assert INTERRUPTED_NOTICE in message.content
                assert message.button("Try again")
            assert {u for m in told for u in m.mentioned_user_ids()} == {m.id for m in members}
            assert told_after < 10, restarted.log()
            await discord.wait_connected(connections=2)

            # Their daily image is theirs again: one asks anew, one presses Try again twice.
            fresh = await discord.slash("imagine", {"prompt": "again"}, member=members[0])
            assert (await discord.wait_response(fresh)).attachments
            retried_message = next(m for m in told if members[1].id in m.content)
            before = len(api.generations)
            first = await discord.click(retried_message, "Try again", member=members[1])
            second = await discord.click(retried_message, "Try again", member=members[1])
            result = await discord.wait_response(first)
            repeat = await discord.wait_response(second)
            assert result.attachments and result.embeds[0]["description"] == "lantern 1"
            assert repeat.ephemeral and repeat.content == ALREADY_WORKING
            assert len(api.generations) == before + 1
            quota = await discord.slash("quota", member=members[1])
            assert "0 images left of 1" in (await discord.wait_response(quota)).content
            assert await restarted.stop() == 0
        assert "Traceback" not in restarted.log(), restarted.log()[-6000:]


async def test_a_crash_on_slack_refunds_tells_and_reruns_a_redelivered_command_once(
    tmp_path: Path,
) -> None:
    async with FakeSlack() as slack, FakeImageAPI() as api:
        env = _crowded(slack.env(), api)
        users = [f"U{i}" for i in range(RUNNING + QUEUED)]
        api.script(*(Stall() for _ in range(RUNNING)))
        crashed = BotProcess(env, workdir=tmp_path)
        async with crashed:
            slack.watch(crashed)
            await slack.wait_connected()
            asked = [
                await slack.slash_command(f"a paper boat {i}", user=user, channel="C1")
                for i, user in enumerate(users)
            ]

            def notes(prefix: str) -> list[str]:
                return [
                    r.text
                    for envelope in asked
                    for r in slack.responses_to(envelope)[-1:]
                    if r.text.startswith(prefix)
                ]

            await slack.wait_for(lambda: len(notes("Queued")) == QUEUED)
            await api.wait_for(lambda: len(api.generations) == RUNNING)
            await crashed.kill()

        restarted = BotProcess(env, workdir=tmp_path)
        async with restarted:
            slack.watch(restarted)
            await slack.wait_for(lambda: len(notes(INTERRUPTED_NOTICE)) == len(asked), timeout=10)
            for envelope in asked:
                [*_, notice] = slack.responses_to(envelope)
                assert notice.ephemeral and notice.body.get("replace_original") is True
                assert [b["text"]["text"] for b in notice.buttons()] == ["Try again"]

            # Slack redelivers the first command (its ack was lost in the crash): it runs once
            # more, and a third delivery is a duplicate again.
            before = len(api.generations)
            for attempt in (1, 2):
                await slack.send(
                    "slash_commands",
                    asked[0].payload,
                    retry_attempt=attempt,
                    retry_reason="timeout",
                )
            await slack.wait_for(
                lambda: [
                    u
                    for u in slack.uploads_in("C1")
                    if "a paper boat 0" in (u.initial_comment or "")
                ]
            )
            # Try again, pressed twice by the member of the second job.
            [*_, notice] = slack.responses_to(asked[1])
            [button] = notice.buttons()
            await slack.click_note(button, channel="C1", user=users[1])
            await slack.click_note(button, channel="C1", user=users[1])
            await slack.wait_for(
                lambda: [
                    u
                    for u in slack.uploads_in("C1")
                    if "a paper boat 1" in (u.initial_comment or "")
                ]
            )
            await slack.wait_for(lambda: ALREADY_WORKING in slack.ephemeral_to(users[1]))
            # The others can generate at once.
            again = await slack.slash_command("a new boat", user=users[2], channel="C1")
            await slack.wait_for(
                lambda: [
                    u for u in slack.uploads_in("C1") if "a new boat" in (u.initial_comment or "")
                ]
            )
            assert len(api.generations) == before + 3
            assert len(slack.uploads_in("C1")) == 3
            quota = await slack.slash_command("quota", user=users[1], channel="C1")
            [answer] = await slack.wait_for(lambda: slack.responses_to(quota))
            assert "0 images left of 1" in answer.text
            assert again and await restarted.stop() == 0
        assert "Traceback" not in restarted.log(), restarted.log()[-6000:]


async def test_a_one_off_command_with_a_short_job_timeout_leaves_a_running_job_alone(
    tmp_path: Path,
) -> None:
    """`imagine-bot quota ...` sweeps for orphans when it starts; with JOB_TIMEOUT far below
    the bot's it used to refund the bot's live job, which was then delivered for free."""
    async with FakeDiscord() as discord, FakeImageAPI() as api:
        env = {
            **discord.env(),
            **api.env(),
            "DEFAULT_IMAGES_PER_DAY": "1",
        }
        api.script(Stall())
        async with BotProcess(env, workdir=tmp_path) as bot:
            discord.watch(bot)
            await discord.wait_connected()
            member = discord.member()
            running = await discord.slash("imagine", {"prompt": "a long job"}, member=member)
            await api.wait_for(lambda: len(api.generations) == 1)
            swept = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "adapters.cli",
                "quota",
                "audit",
                cwd=tmp_path,
                env={
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "PYTHONPATH": str(REPO_ROOT),
                    "DATABASE_URL": f"sqlite:///{tmp_path / 'imagine.db'}",
                    "JOB_TIMEOUT": "0.01",
                },
            )
            assert await swept.wait() == 0
            api.release.set()
            delivered = await discord.wait_response(running)
            assert len(delivered.attachments) == 1
            quota = await discord.slash("quota", member=member)
            assert "0 images left of 1" in (await discord.wait_response(quota)).content
            again = await discord.slash("imagine", {"prompt": "one too many"}, member=member)
            refused = await discord.wait_response(again)
            assert refused.ephemeral and "daily image limit" in refused.content
