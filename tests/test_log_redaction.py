"""Secrets stay out of the log at every level, whatever library logs them: DEBUG is where
discord.py prints gateway events (interaction tokens) and REST routes, and slack-sdk and Bolt
print envelopes (``response_url``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.redaction import REDACTED, redact
from tests.fakes.discord import FakeDiscord
from tests.fakes.image_api import FAKE_API_KEY, FakeImageAPI
from tests.fakes.process import BotProcess
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.e2e


async def test_tokens_and_response_urls_never_reach_the_debug_log(tmp_path: Path) -> None:
    async with FakeDiscord() as discord, FakeSlack() as slack, FakeImageAPI() as api:
        env = {
            **discord.env(),
            **slack.env(),
            **api.env(),
            "LOG_LEVEL": "DEBUG",
        }
        async with BotProcess(env, workdir=tmp_path) as bot:
            discord.watch(bot)
            slack.watch(bot)
            await discord.wait_connected()
            await slack.wait_connected()
            member = discord.member()
            command = await discord.slash("imagine", {"prompt": "a lantern"}, member=member)
            result = await discord.wait_response(command)
            click = await discord.click(result, "Reroll", member=member)
            await discord.wait_for(
                lambda: [m for m in discord.messages_for(click) if m.attachments]
            )
            envelope = await slack.slash_command("a paper lantern", user="U1", channel="C1")
            await slack.wait_for(lambda: slack.uploads_in("C1"))
            await slack.wait_for(lambda: slack.responses_to(envelope))
            log = bot.log()
    secrets = {
        discord.token,
        slack.bot_token,
        slack.app_token,
        FAKE_API_KEY,
        *(i.token for i in discord.interactions.values()),
        *(e.response_url_key or "" for e in slack.envelopes),
    } - {""}
    assert len(secrets) >= 7
    assert [s for s in secrets if s in log] == []
    # The library lines are still there, with the secrets cut out.
    assert f"/interactions/{command.id}/{REDACTED}" in log
    assert "response_url" in log and REDACTED in log


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        ("POST /api/v10/interactions/1234/aW50ZXJhY3Rpb246abc-_.x/callback", "/callback"),
        ("PATCH /webhooks/42/aW50ZXJhY3Rpb246xyz/messages/@original", "/messages/@original"),
        ("{'token': 'aW50ZXJhY3Rpb246abc', 'id': '9'}", "'id': '9'"),
        ('{"response_url":"https://hooks.slack.com/commands/T1/2/s3cr3t","x":1}', '"x":1'),
        ("posting to https://hooks.slack.com/actions/T0AB/123/AbC_d-9 failed", "failed"),
        ("Authorization: Bearer xoxb-1234-5678-abcdefgh", "Authorization"),
        ("app token xapp-1-A0B-123-f00ba4", "app token"),
        ("login with MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.abcdefghijklmnopqrstuvwxyz012", "login"),
    ],
)
def test_each_kind_of_secret_is_cut_and_the_rest_of_the_line_kept(line: str, kept: str) -> None:
    cleaned = redact(line)
    assert REDACTED in cleaned and kept in cleaned
    secret_parts = ("aW50ZXJhY3Rpb246abc", "aW50ZXJhY3Rpb246xyz", "s3cr3t", "AbC_d-9")
    assert not any(part in cleaned for part in secret_parts)
    assert "abcdefgh" not in cleaned and "f00ba4" not in cleaned and ".abcdefghij" not in cleaned


def test_ordinary_lines_are_left_alone() -> None:
    line = "job 3f2a: delivered 2 image(s), max_tokens=5, tokens used: 12, /interactions page"
    assert redact(line) == line
