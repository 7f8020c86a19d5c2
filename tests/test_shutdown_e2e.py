"""SIGTERM to the real ``imagine-bot run`` (Discord and Slack, one provider slot): the process
first stops taking new events (it leaves Slack's socket; Discord interactions go unanswered,
for a peer to take), then drains the jobs it accepted, queued ones included, within
``SHUTDOWN_GRACE``; what outlives the grace is refunded and its member told before the process
exits 0, with no traceback in the log."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.fakes.discord import FakeDiscord
from tests.fakes.image_api import FakeImageAPI, Stall
from tests.fakes.process import BotProcess
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.e2e


def _env(discord: FakeDiscord, slack: FakeSlack, api: FakeImageAPI, grace: int) -> dict[str, str]:
    return {
        **discord.env(),
        **slack.env(),
        **api.env(),
        "MAX_CONCURRENT_JOBS": "1",
        "SHUTDOWN_GRACE": str(grace),
    }


def _clean(log: str) -> None:
    for noise in ("Traceback", "Task exception was never retrieved", "never awaited"):
        assert noise not in log, log[-6000:]


async def test_sigterm_stops_taking_events_then_drains_the_queue(tmp_path: Path) -> None:
    async with FakeDiscord() as discord, FakeSlack() as slack, FakeImageAPI() as api:
        bot = BotProcess(_env(discord, slack, api, grace=30), workdir=tmp_path)
        async with bot:
            discord.watch(bot)
            slack.watch(bot)
            await discord.wait_connected()
            await slack.wait_connected()
            api.script(Stall())
            running = await discord.slash(
                "imagine", {"prompt": "a slow lighthouse"}, member=discord.member("ada")
            )
            await asyncio.wait_for(api.stalled.wait(), 10)
            queued = await discord.slash(
                "imagine", {"prompt": "a waiting fox"}, member=discord.member("bob")
            )
            await discord.wait_for(
                lambda: any(m.content.startswith("Queued") for m in discord.messages_for(queued))
            )

            assert bot.process is not None
            bot.process.send_signal(signal.SIGTERM)
            await slack.wait_for(lambda: not slack.connected)  # it has begun to drain
            late = await discord.slash(
                "imagine", {"prompt": "for the peer"}, member=discord.member("cy")
            )
            assert bot.process.returncode is None  # still finishing the accepted jobs

            api.release.set()
            delivered = await discord.wait_response(running)
            assert delivered.attachments[0].image().size == (1024, 1024)
            drained = await discord.wait_response(queued)
            assert drained.attachments and drained.embeds[0]["description"] == "a waiting fox"
            assert await asyncio.wait_for(bot.process.wait(), 15) == 0, bot.log()

        assert not late.acked  # left to another copy of the bot
        assert slack.connections == 1  # and no reconnect to Slack while draining
        assert [str(c.json["prompt"]) for c in api.generations] == [
            "a slow lighthouse",
            "a waiting fox",
        ]
        _clean(bot.log())
        with sqlite3.connect(tmp_path / "imagine.db") as db:
            rows = db.execute("SELECT prompt, state FROM jobs ORDER BY prompt").fetchall()
        db.close()
        assert rows == [("a slow lighthouse", "charged"), ("a waiting fox", "charged")]


async def test_a_job_that_outlives_the_grace_is_refunded_and_its_member_told(
    tmp_path: Path,
) -> None:
    async with FakeDiscord() as discord, FakeSlack() as slack, FakeImageAPI() as api:
        bot = BotProcess(_env(discord, slack, api, grace=1), workdir=tmp_path)
        async with bot:
            discord.watch(bot)
            slack.watch(bot)
            await discord.wait_connected()
            await slack.wait_connected()
            api.script(Stall(), Stall())
            stuck = await discord.slash(
                "imagine", {"prompt": "a stuck lighthouse"}, member=discord.member("ada")
            )
            await asyncio.wait_for(api.stalled.wait(), 10)
            waiting = await slack.slash_command("a stuck boat", user="U1", channel="C1")
            await slack.wait_for(
                lambda: [r for r in slack.responses_to(waiting) if r.text.startswith("Queued")]
            )
            assert bot.process is not None
            bot.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(bot.process.wait(), 15) == 0, bot.log()

        # Both were told before the process exited.
        told = discord.messages_for(stuck)[-1]
        assert "restarting" in told.content and "Nothing was charged" in told.content
        [*_, note] = slack.responses_to(waiting)
        assert "restarting" in note.text and "Nothing was charged" in note.text
        _clean(bot.log())
        with sqlite3.connect(tmp_path / "imagine.db") as db:
            rows = db.execute("SELECT state, refund_reason FROM jobs").fetchall()
        db.close()
        assert rows == [("refunded", "shutdown"), ("refunded", "shutdown")]


async def test_a_stop_right_after_connecting_is_clean(tmp_path: Path) -> None:
    """Before discord.py has announced ready (it waits for the guilds to stream in)."""
    async with FakeDiscord() as discord, FakeSlack() as slack, FakeImageAPI() as api:
        bot = BotProcess(_env(discord, slack, api, grace=5), workdir=tmp_path)
        async with bot:
            discord.watch(bot)
            await discord.wait_connected()
            assert await bot.stop() == 0
        _clean(bot.log())
