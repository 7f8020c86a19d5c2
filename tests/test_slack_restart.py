"""The bot's life cycle on Slack: the Reroll button keeps working after a restart (the button
carries the job id and the job's parameters live in the ledger, the same database file), and
a token Slack rejects stops the bot at once with a message saying what to fix."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.fakes.image_api import FakeImageAPI
from tests.fakes.process import BotProcess
from tests.fakes.slack import FakeSlack, PostedMessage, Upload

pytestmark = pytest.mark.e2e


def _seed(comment: str) -> int:
    [seed] = re.findall(r"\bseed (\d+)\b", comment)
    return int(seed)


def _reroll_message_for(slack: FakeSlack, upload: Upload) -> PostedMessage | None:
    for message in slack.posted(upload.channel_id):
        if any(str(b.get("value"))[:12] in upload.filename for b in message.buttons()):
            return message
    return None


async def test_reroll_after_a_restart_draws_the_same_prompt_with_a_new_seed(
    tmp_path: Path,
) -> None:
    async with FakeSlack() as slack, FakeImageAPI() as api:
        env = {**slack.env(), **api.env()}
        first = BotProcess(env, workdir=tmp_path)
        async with first:
            slack.watch(first)
            await slack.wait_connected()
            mention = await slack.mention("a quiet harbour --seed 7", user="U1", channel="C1")
            thread = mention.payload["event"]["ts"]
            [original] = await slack.wait_for(lambda: slack.uploads_in("C1", thread_ts=thread))
            button_message = await slack.wait_for(lambda: _reroll_message_for(slack, original))
            assert button_message.thread_ts == thread
            await slack.wait_all_acked()
            assert await first.stop() == 0, first.log()

        second = BotProcess(env, workdir=tmp_path)
        async with second:
            slack.watch(second)
            await slack.wait_connected(connections=2)
            [button] = button_message.buttons()
            click = await slack.click(button, button_message, user="U2")
            ack = await slack.wait_ack(click)
            assert ack.at - click.sent_at < 3.0
            rerolled = await slack.wait_for(
                lambda: [u for u in slack.uploads_in("C1", thread_ts=thread) if u is not original]
            )
            assert len(rerolled) == 1, second.log()
            await slack.wait_all_acked()

    comment = rerolled[0].initial_comment or ""
    assert "<@U2>" in comment and "a quiet harbour" in comment
    first_call, second_call = (r.json for r in api.generations)
    # Seeds as numbers: a new seed such as 71234 merely starts with the old one's digits.
    assert _seed(original.initial_comment or "") == first_call["seed"] == 7
    assert _seed(comment) == second_call["seed"] != 7
    assert second_call["prompt"] == first_call["prompt"] == "a quiet harbour"
    assert second_call["model"] == first_call["model"]
    assert second_call["size"] == first_call["size"]


async def test_a_rejected_app_token_stops_the_bot_with_a_clear_message(tmp_path: Path) -> None:
    async with FakeSlack() as slack:
        env = {**slack.env(), "SLACK_APP_TOKEN": "xapp-revoked"}
        bot = BotProcess(env, workdir=tmp_path)
        async with bot:
            assert bot.process is not None
            async with asyncio.timeout(30):
                code = await bot.process.wait()
    assert code == 1
    assert "Slack rejected SLACK_APP_TOKEN (invalid_auth)" in bot.log()
    assert "xapp-revoked" not in bot.log()
    [opened] = slack.calls("apps.connections.open")
    assert opened.error == "invalid_auth" and slack.connections == 0
