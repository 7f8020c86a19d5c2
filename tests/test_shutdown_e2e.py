"""SIGTERM to the real ``imagine-bot run`` (Discord, one provider slot): the queued job is
refunded and its member told the bot is restarting, the running job still finishes and is
delivered within the grace period, and the process exits 0 with the database closed cleanly."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

from tests.fakes.discord import FakeDiscord
from tests.fakes.image_api import FAKE_API_KEY, FakeImageAPI, Stall
from tests.fakes.process import BotProcess


async def test_sigterm_refunds_the_queue_and_lets_the_running_job_finish(
    tmp_path: Path,
) -> None:
    async with FakeDiscord() as discord, FakeImageAPI() as api:
        env = {
            **discord.env(),
            "IMAGE_API_BASE_URL": api.base_url,
            "IMAGE_API_KEY": FAKE_API_KEY,
            "MAX_CONCURRENT_JOBS": "1",
            "SHUTDOWN_GRACE": "30",
        }
        bot = BotProcess(env, workdir=tmp_path)
        async with bot:
            discord.watch(bot)
            await discord.wait_connected()
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
            told = await discord.wait_response(queued)
            assert "restarting" in told.text and "Nothing was charged" in told.text
            assert bot.process.returncode is None  # still finishing the running job

            api.release.set()
            delivered = await discord.wait_response(running)
            assert delivered.attachments[0].image().size == (1024, 1024)
            assert await asyncio.wait_for(bot.process.wait(), 15) == 0, bot.log()

        assert [str(c.json["prompt"]) for c in api.generations] == ["a slow lighthouse"]
        log = bot.log()
        assert "Traceback" not in log, log[-6000:]
        with sqlite3.connect(tmp_path / "imagine.db") as db:
            rows = db.execute("SELECT prompt, state, refund_reason FROM jobs ORDER BY prompt")
            assert rows.fetchall() == [
                ("a slow lighthouse", "charged", None),
                ("a waiting fox", "refunded", "shutdown"),
            ]
        db.close()
