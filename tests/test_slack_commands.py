"""The words ``/imagine`` understands besides a prompt, and the text conversions between Slack's
escaped text and what a user typed (pure functions, no Slack)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.slack.config import SlackSettings
from adapters.slack.grammar import Admin as AdminRequest
from adapters.slack.grammar import (
    AdminHelp,
    ClearQuota,
    Generate,
    Help,
    Models,
    Quota,
    SetQuota,
    SpendCap,
    Usage,
    parse_command,
)
from adapters.slack.render import escape, file_uploads, plain_text, strip_bot_mention
from bot.errors import ConfigError, InvalidRequestError
from bot.models import GeneratedImage, GenerationRequest, GenerationResult


def _parse(text: str) -> object:
    """What the handler ends up with for an admin: the arguments read after the rights check."""
    command = parse_command(text)
    return command.parse() if isinstance(command, AdminRequest) else command


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Help()),
        ("help", Help()),
        ("QUOTA", Quota()),
        ("models", Models()),
        ("models on a runway --ar 9:16", Generate("models on a runway --ar 9:16")),
        ("help me draw a cat", Generate("help me draw a cat")),
        ("admin", AdminHelp()),
        ("admin help", AdminHelp()),
        ("admin building at night", Generate("admin building at night")),
        ("admin clear-quota <@U123|ann>", ClearQuota("U123")),
        ("admin clear-quota default", ClearQuota(None)),
        ("admin spend-cap $50", SpendCap(50_000_000)),
        ("admin spend-cap off", SpendCap(None)),
        ("admin usage", Usage(30)),
        ("admin usage 7", Usage(7)),
        (
            "admin set-quota <@U123|ann> images_per_day=20 usd_per_month=2.50",
            SetQuota("U123", images_per_day=20, usd_micros_per_month=2_500_000),
        ),
        (
            "admin set-quota default images_per_month=100 images_per_day=none",
            SetQuota(None, images_per_month=100, unset=frozenset({"images_per_day"})),
        ),
    ],
)
def test_commands_are_recognised(text: str, expected: object) -> None:
    assert _parse(text) == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("admin set-quota", "needs a user or default"),
        ("admin set-quota @ann images_per_day=5", "is not a user"),
        ("admin set-quota <@U1> images_per_week=5", "images_per_day=N"),
        ("admin set-quota <@U1> images_per_day=lots", "whole number"),
        ("admin set-quota <@U1> usd_per_month=-3", "amount in USD"),
        ("admin set-quota <@U1> images_per_day=1 images_per_day=2", "given twice"),
        ("admin set-quota <@U1>", "at least one limit"),
        ("admin clear-quota", "one user"),
        ("admin spend-cap lots", "amount in USD"),
        ("admin usage 0", "1 to 366 days"),
        ("admin usage last week", "number of days"),
    ],
)
def test_admin_mistakes_say_what_is_expected(text: str, complaint: str) -> None:
    with pytest.raises(InvalidRequestError, match=complaint):
        _parse(text)


def test_slack_escapes_become_what_the_user_typed() -> None:
    text = "a portrait of <@U1|ann> in <#C1|general> &lt;3 &amp; <https://x.io/a|a link>"
    assert plain_text(text) == "a portrait of @ann in #general <3 & a link"
    assert plain_text("see <https://x.io/a>") == "see https://x.io/a"
    assert strip_bot_mention("<@UBOT> a red fox <@UBOT|imagine-bot>", "UBOT") == "a red fox"
    assert escape("<@U1> & <!here>") == "&lt;@U1&gt; &amp; &lt;!here&gt;"


def test_slack_settings_pick_the_mode_and_explain_mistakes() -> None:
    socket = SlackSettings(slack_bot_token="xoxb-1", slack_app_token="xapp-1")
    assert socket.enabled and socket.mode == "socket"
    http = SlackSettings(slack_bot_token="xoxb-1", slack_signing_secret="s", http_port=3000)
    assert http.enabled and http.mode == "http"
    assert not SlackSettings(slack_bot_token="xoxb-1").enabled
    assert SlackSettings(slack_admin_user_ids="U1, U2,U3").admin_user_ids == {"U1", "U2", "U3"}
    with pytest.raises(ConfigError, match="HTTP_PORT"):
        SlackSettings(slack_bot_token="xoxb-1", slack_signing_secret="s")
    with pytest.raises(ConfigError, match="looks like the app-level token"):
        SlackSettings(slack_bot_token="xapp-1", slack_app_token="xapp-2")


def test_the_manifest_declares_what_the_adapter_uses() -> None:
    manifest = (Path(__file__).resolve().parents[1] / "slack-manifest.yml").read_text()
    lines = {line.split("#")[0].strip() for line in manifest.splitlines()}
    for scope in (
        "commands",
        "chat:write",
        "files:write",
        "app_mentions:read",
        "users:read",
        "im:write",
        "channels:read",
    ):
        assert f"- {scope}" in lines, scope
    for setting in (
        "- command: /imagine",
        "should_escape: true",
        "- app_mention",
        "is_enabled: true",
        "socket_mode_enabled: true",
        "messages_tab_enabled: true",
    ):
        assert setting in lines, setting


def test_reading_the_slack_settings_loads_no_slack_sdk(tmp_path: Path) -> None:
    # `imagine-bot run` reads SlackSettings even when Slack is not configured.
    code = (
        "import sys\n"
        "from adapters.slack import serve\n"
        "from adapters.slack.config import SlackSettings\n"
        "SlackSettings()\n"
        "print(sorted(m for m in sys.modules if m.startswith(('slack_bolt', 'slack_sdk'))))\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,  # no .env here
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "text",
    [
        "admin spend-cap 1e999990",
        "admin set-quota <@U1> usd_per_month=1e999990",
        "admin set-quota <@U1> usd_per_month=1e400",
        "admin set-quota <@U1> usd_per_month=1000000.01",
        "admin set-quota <@U1> usd_per_month=0.0000001",
        "admin set-quota <@U1> usd_per_month=" + "9" * 5000,
        "admin spend-cap NaN",
        "admin spend-cap Infinity",
    ],
)
def test_money_beyond_the_bounds_is_a_one_line_usage_error(text: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        _parse(text)
    assert caught.value.reason.startswith(("usd_per_month must be", "spend-cap must be"))
    assert "1,000,000" in caught.value.reason and "6 decimals" in caught.value.reason


@pytest.mark.parametrize(
    "text", ["images_per_day=" + "9" * 4000, "images_per_month=1000001", "images_per_day=1e3"]
)
def test_image_counts_beyond_the_bounds_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="whole number of images from 0 to 1,000,000"):
        _parse(f"admin set-quota <@U1> {text}")


def test_the_largest_amounts_still_parse() -> None:
    assert _parse("admin spend-cap $1,000,000") == SpendCap(1_000_000_000_000)
    assert _parse("admin set-quota <@U1> usd_per_month=0.000001 images_per_day=1000000") == (
        SetQuota("U1", images_per_day=1_000_000, usd_micros_per_month=1)
    )


def test_admin_arguments_are_not_read_before_the_rights_check() -> None:
    # A malformed amount still comes back as an admin request: the handler refuses a member
    # who is not an admin before anything reads "1e999990".
    assert parse_command("admin spend-cap 1e999990") == AdminRequest("spend-cap", ("1e999990",))


@pytest.mark.parametrize("prompt", ["🦊" * 600, "狐" * 900, "a" * 1200, "a red fox"])
def test_alt_text_fits_slacks_limit_in_bytes_and_keeps_whole_characters(prompt: str) -> None:
    image = GeneratedImage(data=b"png", mime_type="image/png", width=8, height=8, seed=1)
    result = GenerationResult(
        job_id="0123456789abcdef",
        request=GenerationRequest(prompt=prompt, model="m", size="1024x1024", n=1, seed=1),
        images=(image,),
        cost_micros=0,
        model_label="M",
    )
    [upload] = file_uploads(result)
    alt = upload["alt_txt"]
    assert len(alt.encode()) <= 1000
    assert alt == prompt or (alt.endswith("…") and prompt.startswith(alt[:-1]))
    assert len(alt.encode()) > 990 or alt == prompt  # clipped no more than needed
