"""Buttons keep working after the bot restarts: their custom ids carry the job id and the job's
parameters live in the ledger (the same database file). Also the global command sync (no
``DISCORD_GUILD_IDS``) and the offline preview provider (no ``IMAGE_API_KEY``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.discord import FakeDiscord, FakeMessage
from tests.fakes.process import BotProcess

pytestmark = pytest.mark.e2e


def _field(message: FakeMessage, name: str) -> str:
    for field in message.embeds[0].get("fields", []):
        if field["name"] == name:
            return str(field["value"])
    raise KeyError(name)


async def test_reroll_and_delete_work_on_a_message_sent_before_a_restart(tmp_path: Path) -> None:
    async with FakeDiscord() as discord:
        env = discord.env(guild_sync=False)  # preview provider, global commands
        author, clicker = discord.member("ada"), discord.member("bob")

        first = BotProcess(env, workdir=tmp_path)
        async with first:
            discord.watch(first)
            await discord.wait_connected()
            [sync] = discord.command_syncs
            assert sync.guild_id is None  # PUT /applications/{id}/commands
            interaction = await discord.slash(
                "imagine", {"prompt": "a quiet harbour", "seed": 7}, member=author
            )
            original = await discord.wait_response(interaction)
            assert _field(original, "Cost") == "free (preview)"
            assert original.attachments[0].image().size == (1024, 1024)
            assert await first.stop() == 0, first.log()

        second = BotProcess(env, workdir=tmp_path)
        async with second:
            discord.watch(second)
            await discord.wait_connected(connections=2)
            reroll = await discord.click(original, "Reroll", member=clicker)
            rerolled = await discord.wait_response(reroll)
            assert reroll.ack_delay is not None and reroll.ack_delay < 3.0
            assert rerolled.embeds[0]["description"] == "a quiet harbour"
            assert _field(original, "Seed") == "7" != _field(rerolled, "Seed")
            assert rerolled.attachments[0].image().size == (1024, 1024)

            await discord.click(original, "Delete", member=author)
            await discord.wait_for(lambda: original.deleted)
            assert not rerolled.deleted
            assert await second.stop() == 0, second.log()
        assert "Traceback" not in first.log() + second.log(), second.log()[-6000:]
