"""Live: nothing a member, an admin or the image API sends stalls the one event loop. The real
``imagine-bot run`` serves a Slack workspace and a Discord server from one process. In the Slack
workspace, all at once: an admin's backtracking block pattern checked against 4,000-character
prompts, a spend cap of ``1e999990`` dollars, a job the image API answers with
``Retry-After: 3600``, and a job it answers with a 13000x13000 PNG of a few hundred kB. Meanwhile
the Discord server's command is acknowledged within Discord's 3 seconds and gets its image, and
every attack gets its own clear answer, at no charge."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.discord import FakeDiscord
from tests.fakes.image_api import Bomb, FakeImageAPI, Stall, rate_limited
from tests.fakes.process import BotProcess
from tests.fakes.slack import Envelope, FakeSlack

pytestmark = pytest.mark.e2e

ADMIN = "UADMIN"
DISCORD_ACK_DEADLINE = 3.0
HOSTILE = "a" * 4000


async def test_every_attack_at_once_leaves_another_server_served(tmp_path: Path) -> None:
    async with FakeDiscord() as discord, FakeSlack() as slack, FakeImageAPI() as api:
        slack.add_user(ADMIN, "ada")
        env = {
            **discord.env(),
            **slack.env(),
            **api.env(),
            "IMAGE_API_MAX_RETRIES": "0",
            "IMAGE_API_ALLOW_PRIVATE_URLS": "true",
            "SLACK_ADMIN_USER_IDS": ADMIN,
            # The queue pauses this long after the 429 (20 s by default): the Discord job
            # waits that out, then gets its image.
            "IMAGE_API_MAX_RETRY_WAIT": "3",
        }
        bot = BotProcess(env, workdir=tmp_path)
        async with bot:
            discord.watch(bot)
            slack.watch(bot)
            await discord.wait_connected()
            await slack.wait_connected()

            async def slack_says(text: str, user: str = ADMIN) -> str:
                envelope = await slack.slash_command(text, user=user, channel="C1")
                [answer] = await slack.wait_for(lambda: slack.responses_to(envelope)[:1])
                return answer.text

            assert "(a|a)*b" in await slack_says("admin block add /(a|a)*b/")
            # The image API: the first job stalls until the others are in flight, the second
            # is told to come back in an hour, the third gets a decompression bomb.
            api.script(Stall(rate_limited(retry_after="3600")), Bomb())
            limited = await slack.slash_command("a lighthouse", user="U2", channel="C1")
            await api.wait_for(lambda: len(api.generations) == 1)
            bombed = await slack.slash_command("a cottage", user="U3", channel="C1")
            await api.wait_for(lambda: len(api.generations) == 2)
            hostile = [
                await slack.slash_command(HOSTILE, user=f"U{4 + i}", channel="C1") for i in range(4)
            ]
            huge = await slack.slash_command("admin spend-cap 1e999990", user=ADMIN, channel="C1")

            interaction = await discord.slash(
                "imagine", {"prompt": "a calm sea"}, member=discord.member()
            )
            api.release.set()
            result = await discord.wait_response(interaction)
            assert interaction.ack_delay is not None
            assert interaction.ack_delay < DISCORD_ACK_DEADLINE
            assert len(result.attachments) == 1

            def last(envelope: Envelope) -> str:
                responses = slack.responses_to(envelope)
                return responses[-1].text if responses else ""

            # Each attack got its own answer, and none cost anything.
            await slack.wait_for(lambda: "rate-limited" in last(limited))
            assert "Nothing was charged" in last(limited)
            await slack.wait_for(lambda: "Nothing was charged" in last(bombed))
            await slack.wait_for(lambda: "1,000,000" in last(huge))
            await slack.wait_for(lambda: len(slack.uploads_in("C1")) == len(hostile))
            assert len(api.generations) == 2 + 1 + len(hostile)
            quota = await slack.slash_command("quota", user="U2", channel="C1")
            await slack.wait_for(lambda: "no limits" in last(quota) or "left" in last(quota))
        assert "Traceback" not in bot.log(), bot.log()[-6000:]
