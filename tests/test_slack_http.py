"""End to end on Slack in HTTP mode: Slack POSTs signed requests to ``/slack/events`` on
``HTTP_PORT``; the bot verifies the signature before doing anything."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.fakes.process import BotProcess
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.e2e

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_signed_requests_are_served_and_badly_signed_ones_rejected(tmp_path: Path) -> None:
    port = _free_port()
    events = f"http://127.0.0.1:{port}/slack/events"
    async with FakeSlack() as slack:
        env = {
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_BASE_URL": slack.base_url,
            "HTTP_PORT": str(port),
        }
        async with BotProcess(env, workdir=tmp_path) as bot:
            slack.watch(bot)
            # The bot checks its token once it listens.
            await slack.wait_for(lambda: slack.calls("auth.test"))

            forged = slack.slash_payload("a forged request", user="U1", channel="C1")
            status, _, _ = await slack.post_signed(events, secret="not-the-secret", form=forged)
            assert status == 401
            stale = slack.slash_payload("a replayed request", user="U1", channel="C1")
            status, _, _ = await slack.post_signed(
                events, secret=SECRET, form=stale, timestamp=int(time.time()) - 600
            )
            assert status == 401
            for malformed in ("soon", "1e9", "９" * 3, "1" * 40):
                status, text, _ = await slack.post_signed(
                    events, secret=SECRET, form=stale, timestamp=malformed
                )
                assert (status, text) == (400, "malformed X-Slack-Request-Timestamp")

            good = slack.slash_payload("a snowy cabin --ar 16:9", user="U1", channel="C1")
            status, _, seconds = await slack.post_signed(events, secret=SECRET, form=good)
            assert status == 200 and seconds < 3.0, bot.log()
            [upload] = await slack.wait_for(lambda: slack.uploads_in("C1"))

            mention = slack.mention_payload("a red kite", user="U2", channel="C1")
            status, _, _ = await slack.post_signed(events, secret=SECRET, json_body=mention)
            assert status == 200
            thread = mention["event"]["ts"]
            await slack.wait_for(lambda: slack.uploads_in("C1", thread_ts=thread))

    assert "a snowy cabin" in (upload.initial_comment or "")
    assert "1792x1024" in (upload.initial_comment or "")
    assert "preview, free" in (upload.initial_comment or "")
    comments = " ".join(u.initial_comment or "" for u in slack.uploads.values())
    assert "forged" not in comments and "replayed" not in comments
    assert len([u for u in slack.uploads.values() if u.completed]) == 2
    assert "Traceback" not in bot.log()
    rejected = {str(forged["response_url"]), str(stale["response_url"])}
    assert not [r for r in slack.responses if str(r.key) in " ".join(rejected)]
