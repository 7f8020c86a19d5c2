"""Two ``imagine-bot run`` processes on one real PostgreSQL, serving Discord and Slack together
(the fakes, with the real discord.py and slack-bolt in each process): quotas, the provider cap
and the fair order are the cluster's, whichever process took the command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from bot.store.postgres.queue import CHANNEL
from tests.fakes.discord import FakeDiscord, FakeInteraction
from tests.fakes.image_api import FakeImageAPI
from tests.fakes.postgres import database_url, psql
from tests.fakes.process import BotProcess
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.e2e


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path, env: dict[str, str], *, processes: int = 2
) -> AsyncIterator[tuple[list[BotProcess], str]]:
    url = database_url(str(tmp_path))
    env = {**env, "DATABASE_URL": url, "SHUTDOWN_GRACE": "5"}
    bots = [BotProcess(env, workdir=tmp_path / f"bot{i}") for i in range(processes)]
    try:
        for bot in bots:
            await bot.start()
        yield bots, url
    finally:
        for bot in bots:
            await bot.stop()
    for bot in bots:
        for noise in ("Traceback", "Task exception was never retrieved"):
            assert noise not in bot.log(), bot.log()[-6000:]


@contextlib.asynccontextmanager
async def handover_heard(url: str) -> AsyncIterator[asyncio.Event]:
    """Set when a stopping process announces that it handed queued jobs over (the queue's
    own notification, heard as the other processes hear it)."""
    heard = asyncio.Event()

    def listener(conn: object, pid: int, channel: str, payload: str) -> None:
        if payload.startswith("handover "):
            heard.set()

    conn = await asyncpg.connect(url)
    try:
        await conn.add_listener(CHANNEL, listener)
        yield heard
    finally:
        await conn.close()


def _charged(url: str) -> list[tuple[str, int]]:
    rows = psql(
        "SELECT json_agg(json_build_array(user_id, charged_images)) FROM jobs "
        "WHERE state = 'charged'",
        url=url,
    ).strip()
    return [(str(u), int(n)) for u, n in json.loads(rows or "null") or []]


async def test_quota_and_the_provider_cap_hold_across_two_processes(tmp_path: Path) -> None:
    async with FakeDiscord() as discord, FakeSlack() as slack, FakeImageAPI(latency=0.3) as api:
        env = {
            **discord.env(),
            **slack.env(),
            **api.env(),
            "DEFAULT_IMAGES_PER_DAY": "3",
            "MAX_CONCURRENT_JOBS": "2",
            "MAX_JOBS_PER_USER": "10",
        }
        async with cluster(tmp_path, env) as (bots, url):
            for bot in bots:
                discord.watch(bot)
                slack.watch(bot)
            await discord.wait_connected(connections=2)
            await discord.wait_for(lambda: discord.sessions == 2)
            await slack.wait_connected(connections=2)
            member = discord.member()
            # One member's 10 commands at once: every session sees each; under a limit of 3
            # images a day at most 3 are drawn, whichever process answers which.
            asked = await asyncio.gather(
                *(
                    discord.slash("imagine", {"prompt": f"fox {i}"}, member=member)
                    for i in range(10)
                )
            )
            # Slack members at the same time, on the same provider cap.
            envelopes = [
                await slack.slash_command(f"a harbour {i}", user=f"U{i}", channel="C1")
                for i in range(4)
            ]
            answers = [await discord.wait_response(i, timeout=40) for i in asked]
            uploads = await slack.wait_for(
                lambda: (found := slack.uploads_in("C1")) and len(found) >= 4 and found,
                timeout=40,
            )
            await slack.wait_all_acked()

    drawn = [a for a in answers if a.attachments]
    assert len(drawn) == 3, [a.content for a in answers]
    refused = [a for a in answers if not a.attachments]
    assert all(a.ephemeral and "limit" in a.content.lower() for a in refused), [
        a.content for a in refused
    ]
    assert all(isinstance(i, FakeInteraction) and len(i.callbacks) == 1 for i in asked)
    assert len(uploads) == 4
    assert all(slack.ack_for(e) is not None for e in envelopes)
    assert api.peak_in_flight == 2  # the cap is the cluster's: 2, not 2 per process
    assert len(api.generations) == 3 + 4
    charged = _charged(url)
    assert sorted(n for _, n in charged) == [1] * 7
    assert sum(1 for user, _ in charged if user == member.id) == 3


async def test_a_member_with_one_job_waits_at_most_one_slot_behind_a_long_queue(
    tmp_path: Path,
) -> None:
    async with FakeDiscord() as discord, FakeImageAPI() as api:
        env = {
            **discord.env(),
            **api.env(),
            "DEFAULT_IMAGES_PER_DAY": "100",
            "MAX_CONCURRENT_JOBS": "1",
            "MAX_JOBS_PER_USER": "25",
        }
        async with cluster(tmp_path, env) as (bots, url):
            for bot in bots:
                discord.watch(bot)
            await discord.wait_connected(connections=2)
            await discord.wait_for(lambda: discord.sessions == 2)
            busy, newcomer = discord.member(), discord.member()
            with api.stalling():
                first = await discord.slash("imagine", {"prompt": "busy 0"}, member=busy)
                await api.wait_stalled()
                queued = [
                    await discord.slash("imagine", {"prompt": f"busy {i}"}, member=busy)
                    for i in range(1, 20)
                ]
                # Every one of them is in the cluster's queue before the newcomer asks.
                await discord.wait_for(
                    lambda: psql("SELECT count(*) FROM queue", url=url).strip() == "20",
                    timeout=20,
                )
                alone = await discord.slash("imagine", {"prompt": "newcomer"}, member=newcomer)
                await discord.wait_for(
                    lambda: psql("SELECT count(*) FROM queue", url=url).strip() == "21",
                    timeout=20,
                )
            for interaction in [first, *queued, alone]:
                await discord.wait_response(interaction, timeout=60)

    prompts = [str(c.json["prompt"]) for c in api.generations]
    assert prompts[0] == "busy 0"
    assert prompts.index("newcomer") == 1, prompts


async def test_a_job_whose_process_is_killed_is_delivered_by_the_other_once(
    tmp_path: Path,
) -> None:
    async with FakeDiscord() as discord, FakeImageAPI() as api:
        env = {**discord.env(), **api.env(), "DEFAULT_IMAGES_PER_DAY": "10"}
        async with cluster(tmp_path, env) as (bots, url):
            for bot in bots:
                discord.watch(bot)
            await discord.wait_connected(connections=2)
            await discord.wait_for(lambda: discord.sessions == 2)
            member = discord.member()
            with api.stalling():
                asked = await discord.slash("imagine", {"prompt": "a lighthouse"}, member=member)
                await api.wait_stalled()
                [pid] = psql(
                    "SELECT b.pid FROM queue q JOIN boots b ON b.boot_id = q.runner", url=url
                ).split()
                [victim] = [b for b in bots if b.process and b.process.pid == int(pid)]
                [survivor] = [b for b in bots if b is not victim]
                assert victim.process is not None
                discord.watch(survivor)  # the one whose exit would be a failure now
                victim.process.kill()
                await victim.process.wait()
            answer = await discord.wait_response(asked, timeout=40)
            charged = _charged(url)

    assert answer.attachments, answer.content
    assert f"<@{member.id}>" not in answer.content or answer.attachments
    assert charged == [(member.id, 1)]  # one charge, though the image API drew it twice
    assert [str(c.json["prompt"]) for c in api.generations] == ["a lighthouse"] * 2
    assert "taken over" in survivor.log()


async def test_a_stopping_process_hands_its_queued_jobs_to_the_other(tmp_path: Path) -> None:
    async with FakeDiscord() as discord, FakeImageAPI() as api:
        env = {
            **discord.env(),
            **api.env(),
            "DEFAULT_IMAGES_PER_DAY": "10",
            "MAX_CONCURRENT_JOBS": "1",
            "MAX_JOBS_PER_USER": "10",
        }
        async with cluster(tmp_path, env) as (bots, url):
            for bot in bots:
                discord.watch(bot)
            await discord.wait_connected(connections=2)
            await discord.wait_for(lambda: discord.sessions == 2)
            members = [discord.member() for _ in range(6)]
            with api.stalling():
                asked = [
                    await discord.slash("imagine", {"prompt": f"boat {i}"}, member=m)
                    for i, m in enumerate(members)
                ]
                await api.wait_stalled()
                await discord.wait_for(
                    lambda: psql("SELECT count(*) FROM queue", url=url).strip() == "6",
                    timeout=20,
                )
                # The process that accepted the most of the queued jobs stops.
                acceptors = psql(
                    "SELECT b.pid FROM queue q JOIN boots b ON b.boot_id = q.acceptor "
                    "WHERE q.state = 'queued'",
                    url=url,
                ).split()
                pid = max(set(acceptors), key=acceptors.count)
                [stopping] = [b for b in bots if b.process and b.process.pid == int(pid)]
                [staying] = [b for b in bots if b is not stopping]
                assert stopping.process is not None
                discord.watch(staying)  # the one whose exit would be a failure now
                async with handover_heard(url) as heard:
                    stopping.process.terminate()
                    async with asyncio.timeout(20):
                        await heard.wait()
            assert await asyncio.wait_for(stopping.process.wait(), 30) == 0, stopping.log()
            answers = [await discord.wait_response(i, timeout=40) for i in asked]
            charged = _charged(url)

    assert all(a.attachments for a in answers), [a.content for a in answers]
    assert not [a.content for a in answers if "restarting" in a.content.lower()]
    assert sorted(charged) == sorted((m.id, 1) for m in members)
    assert "handed to the other processes" in stopping.log()


async def test_slack_http_mode_behind_a_load_balancer_charges_a_redelivery_once(
    tmp_path: Path,
) -> None:
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    ports = [_free_port(), _free_port()]
    async with FakeSlack() as slack, FakeImageAPI() as api:
        env = {
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": secret,
            "SLACK_API_BASE_URL": slack.base_url,
            **api.env(),
            "DEFAULT_IMAGES_PER_DAY": "2",
            "MAX_JOBS_PER_USER": "10",
        }
        url = database_url(str(tmp_path))
        bots = [
            BotProcess(
                {**env, "DATABASE_URL": url, "HTTP_PORT": str(port)},
                workdir=tmp_path / f"bot{i}",
            )
            for i, port in enumerate(ports)
        ]
        try:
            for bot in bots:
                await bot.start()
            await slack.wait_for(lambda: len(slack.calls("auth.test")) >= 2, timeout=20)
            events = [f"http://127.0.0.1:{port}/slack/events" for port in ports]
            # A round-robin balancer: one member's four commands, two to each process.
            for i in range(4):
                form = slack.slash_payload(f"a tall ship {i}", user="U7", channel="C1")
                status, _, _ = await slack.post_signed(events[i % 2], secret=secret, form=form)
                assert status == 200
            # Slack redelivers an event the first process was slow to answer; the balancer
            # sends the retry to the other one.
            mention = slack.mention_payload("a red kite", user="U8", channel="C1", event_id="Ev1")
            for target in events:
                status, _, _ = await slack.post_signed(target, secret=secret, json_body=mention)
                assert status == 200
            thread = mention["event"]["ts"]
            await slack.wait_for(lambda: slack.uploads_in("C1", thread_ts=thread), timeout=30)
            await slack.wait_for(lambda: len(slack.uploads_in("C1")) >= 3, timeout=30)

            def refused() -> list[object] | None:
                found = [r for r in slack.responses if "limit" in r.text.lower()]
                return found if len(found) >= 2 else None

            refusals = await slack.wait_for(refused, timeout=30)
            charged = _charged(url)
        finally:
            for bot in bots:
                await bot.stop()
    assert len(refusals) == 2  # 2 a day: the other two commands were refused
    assert sorted(user for user, _ in charged) == ["U7", "U7", "U8"]
    assert len(slack.uploads_in("C1", thread_ts=thread)) == 1
    for bot in bots:
        assert "Traceback" not in bot.log(), bot.log()[-4000:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
