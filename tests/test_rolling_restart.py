"""A rolling restart: two ``imagine-bot run`` processes on one database and one Discord bot
token (every session receives every interaction; the first to acknowledge it answers). Under
steady load one process after the other is stopped with SIGTERM and replaced. Nobody is told
"I'm restarting" while a peer is up, and no interaction is left at "thinking…"."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.fakes.discord import FakeDiscord, FakeInteraction
from tests.fakes.image_api import FakeImageAPI
from tests.fakes.process import BotProcess

pytestmark = pytest.mark.e2e

ROUNDS = 3  # stop-and-replace steps
PER_ROUND = 6  # commands sent while each step is under way


async def test_a_rolling_restart_under_load_answers_every_member(tmp_path: Path) -> None:
    async with FakeDiscord() as discord, FakeImageAPI() as api:
        env = {
            **discord.env(),
            **api.env(),
            "SHUTDOWN_GRACE": "20",
            "DEFAULT_IMAGES_PER_DAY": "100",
        }
        bots = [BotProcess(env, workdir=tmp_path / "db") for _ in range(2)]
        every = list(bots)
        for bot in bots:
            await bot.start()
            discord.watch(bot)
        asked: list[FakeInteraction] = []
        try:
            await discord.wait_connected(connections=2)
            await discord.wait_for(lambda: discord.sessions == 2)
            for step in range(ROUNDS):
                stopping, peer = bots[step % 2], bots[(step + 1) % 2]
                assert stopping.process is not None
                asked.append(
                    await discord.slash(
                        "imagine", {"prompt": f"before {step}"}, member=discord.member()
                    )
                )
                stopping.process.terminate()
                for i in range(PER_ROUND):
                    asked.append(
                        await discord.slash(
                            "imagine", {"prompt": f"step {step} #{i}"}, member=discord.member()
                        )
                    )
                assert await asyncio.wait_for(stopping.process.wait(), 30) == 0, stopping.log()
                replacement = BotProcess(env, workdir=tmp_path / "db")
                every.append(replacement)
                await replacement.start()
                discord.watch(replacement)
                bots[step % 2] = replacement
                await discord.wait_for(lambda: discord.sessions == 2)
                assert peer.process is not None and peer.process.returncode is None
            answers = [await discord.wait_response(i, timeout=30) for i in asked]
        finally:
            for bot in bots:
                await bot.stop()

    for bot in every:
        for noise in ("Traceback", "Task exception was never retrieved"):
            assert noise not in bot.log(), bot.log()[-6000:]
    restarting = [a.content for a in answers if "restarting" in a.content]
    assert restarting == []
    assert all(a.attachments for a in answers), [a.content for a in answers if not a.attachments]
    assert all(i.acked and len(i.callbacks) == 1 for i in asked)
    prompts = [str(c.json["prompt"]) for c in api.generations]
    assert sorted(prompts) == sorted(dict.fromkeys(prompts))  # each drawn once
    assert len(prompts) == len(asked)
