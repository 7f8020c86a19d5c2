"""Live: a hostile blocked pattern on one server does not hold up another. The real
``imagine-bot run`` serves a Discord server and a Slack workspace from one process (one event
loop), against the fake Discord, the fake Slack and the fake image API. While the Discord
server's admin patterns, shapes that backtrack for ever in Python's ``re``, are checked against
long prompts, a command in the Slack workspace is acknowledged within Slack's 3 seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.discord import FakeDiscord
from tests.fakes.image_api import FakeImageAPI
from tests.fakes.process import BotProcess
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.e2e

# Patterns the old shape guard let through, and that a run of "a" without "b" or "!" sends
# into endless backtracking; prompts far beyond the ~25 letters that froze the bot for 20 s.
PATTERNS = ("(a|a)*b", r"(.|\w)*!", "a*a*a*a*a*a*b")
HOSTILE = ("a" * 3000, "a" * 2999 + "c", "a" * 2998 + "cd")
SLACK_ACK_DEADLINE = 3.0  # Slack retries a command it did not see acknowledged in time


async def test_another_servers_command_is_acknowledged_while_hostile_patterns_are_checked(
    tmp_path: Path,
) -> None:
    async with FakeDiscord() as discord, FakeSlack() as slack, FakeImageAPI() as api:
        slack.add_user("U1")
        env = {
            **discord.env(),
            **slack.env(),
            **api.env(),
            "IMAGE_API_MAX_RETRIES": "0",
        }
        bot = BotProcess(env, workdir=tmp_path)
        async with bot:
            discord.watch(bot)
            slack.watch(bot)
            try:
                await discord.wait_connected()
                await slack.wait_connected()
                admin = discord.member("boss", manage_guild=True)
                for pattern in PATTERNS:
                    added = await discord.slash(
                        "imagine-admin",
                        {"term": f"/{pattern}/"},
                        subcommand="add",
                        group="block",
                        member=admin,
                    )
                    answer = await discord.wait_response(added)
                    assert answer.ephemeral and pattern in answer.content, answer.content

                hostile = [
                    await discord.slash("imagine", {"prompt": p}, member=discord.member())
                    for p in HOSTILE
                ]
                # Each is acknowledged (deferred) before its prompt is checked.
                await discord.wait_for(lambda: all(i.acked for i in hostile))
                envelope = await slack.slash_command("help", user="U1", channel="C1")
                ack = await slack.wait_ack(envelope)
                assert ack.at - envelope.sent_at < SLACK_ACK_DEADLINE
                [help_text] = await slack.wait_for(lambda: slack.responses_to(envelope)[:1])
                assert "--model" in help_text.text

                # The hostile prompts matched no pattern, so they were drawn as usual.
                for interaction in hostile:
                    result = await discord.wait_response(interaction)
                    assert len(result.attachments) == 1, result.content
                assert len(api.generations) == len(HOSTILE)
            except BaseException:
                print(bot.log())
                raise
        assert "Traceback" not in bot.log(), bot.log()[-6000:]
