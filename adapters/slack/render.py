"""Converters between Slack payloads and the core's plain types, and the Slack rendering of a
result: the upload's initial comment, the files, and the Reroll button (Block Kit).

Pure functions: no I/O, no Slack SDK. All wording comes from ``bot.messages``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.event_key import platform_event
from bot.messages import BUTTON_LABELS, REROLL_HINT, result_summary
from bot.models import GenerationResult, Requester

__all__ = [
    "REROLL_ACTION_ID",
    "Origin",
    "button",
    "button_section",
    "clip",
    "code",
    "escape",
    "event_id",
    "file_uploads",
    "from_action",
    "from_mention",
    "from_slash_command",
    "initial_comment",
    "plain_text",
    "reroll_blocks",
    "strip_bot_mention",
    "to_requester",
]

log = logging.getLogger(__name__)

REROLL_ACTION_ID = "imagine_reroll"
PLATFORM = "slack"

_MAX_ALT_TEXT = 1000
_MAX_TITLE = 80
_MAX_COMMENT_PROMPT = 2000
# <@U123>, <@U123|name>, <#C123|general>, <!here>, <https://x|label>, <mailto:a@b|a@b>
_ESCAPED = re.compile(r"<([@#!]?)([^<>|]*)(?:\|([^<>]*))?>")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request came from and where its answers go.

    ``thread_ts`` is the thread results are posted into (``None``: the channel itself);
    ``note_thread_ts`` an existing thread for ephemeral notes (Slack hides ephemeral
    messages in a thread that does not exist yet); ``response_url`` the command's or
    button's webhook for ephemeral replies, when there is one. ``bot_is_member``: the
    request itself proves the bot is in the conversation (Slack sends ``app_mention`` only
    from conversations the bot is in).
    """

    team_id: str
    channel_id: str
    user_id: str
    user_name: str = ""
    thread_ts: str | None = None
    note_thread_ts: str | None = None
    response_url: str | None = None
    interactive: bool = False
    bot_is_member: bool = False

    def requester(self, *, is_admin: bool = False) -> Requester:
        return to_requester(self, is_admin=is_admin)


def to_requester(origin: Origin, *, is_admin: bool = False) -> Requester:
    return Requester(
        platform=PLATFORM,
        workspace_id=origin.team_id,
        channel_id=origin.channel_id,
        user_id=origin.user_id,
        display_name=origin.user_name,
        is_admin=is_admin,
    )


def from_slash_command(body: Mapping[str, Any]) -> Origin:
    return Origin(
        team_id=str(body.get("team_id") or ""),
        channel_id=str(body.get("channel_id") or ""),
        user_id=str(body.get("user_id") or ""),
        user_name=str(body.get("user_name") or ""),
        response_url=body.get("response_url") or None,
    )


def from_mention(body: Mapping[str, Any]) -> Origin:
    """An ``app_mention`` event callback: results go into the mention's thread."""
    event = body.get("event") or {}
    existing_thread = event.get("thread_ts") or None
    return Origin(
        team_id=str(body.get("team_id") or event.get("team") or ""),
        channel_id=str(event.get("channel") or ""),
        user_id=str(event.get("user") or ""),
        thread_ts=existing_thread or event.get("ts") or None,
        note_thread_ts=existing_thread,
        bot_is_member=True,
    )


def from_action(body: Mapping[str, Any]) -> Origin:
    """A ``block_actions`` payload (a button click on one of our messages)."""
    user = body.get("user") or {}
    team = body.get("team") or {}
    container = body.get("container") or {}
    channel = body.get("channel") or {}
    message = body.get("message") or {}
    thread_ts = container.get("thread_ts") or message.get("thread_ts") or None
    return Origin(
        team_id=str(team.get("id") or user.get("team_id") or ""),
        channel_id=str(channel.get("id") or container.get("channel_id") or ""),
        user_id=str(user.get("id") or ""),
        user_name=str(user.get("username") or user.get("name") or ""),
        thread_ts=thread_ts,
        note_thread_ts=thread_ts,
        response_url=body.get("response_url") or None,
        interactive=True,
    )


def event_id(platform_id: object) -> str | None:
    """The ledger's idempotency key for a Slack id (a trigger or event id), unique across
    platforms; ``None`` when Slack sent none."""
    return platform_event(PLATFORM, str(platform_id)) if platform_id else None


def strip_bot_mention(text: str, bot_user_id: str) -> str:
    """The command in an ``app_mention``: the text without the bot's ``<@BOT>`` mentions."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", " ", text)
    return " ".join(text.split())


def plain_text(text: str) -> str:
    """Slack's escaped text as a user typed it: ``<@U1|ann>`` -> ``@ann``, links -> their
    label or URL, ``&lt;`` -> ``<``."""

    def readable(match: re.Match[str]) -> str:
        sigil, target, label = match.group(1), match.group(2), match.group(3)
        if sigil == "@":
            return "@" + (label or target)
        if sigil == "#":
            return "#" + (label or target)
        if sigil == "!":
            return "@" + (label or target.split("^")[0])
        return label or target.removeprefix("mailto:")

    text = _ESCAPED.sub(readable, text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def escape(text: str) -> str:
    """Text safe inside a Slack mrkdwn message (no accidental mentions or links)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def code(text: str) -> str:
    """A preformatted block (tables and help keep their columns)."""
    return f"```{text}```"


def _clip_bytes(text: str, limit: int) -> str:
    """At most ``limit`` bytes of UTF-8, cut at a character boundary: Slack refuses alt text
    over its limit (``alt_txt_too_large``), and emoji or CJK take 3-4 bytes a character."""
    data = text.encode()
    if len(data) <= limit:
        return text
    ellipsis = "\u2026"
    return data[: limit - len(ellipsis.encode())].decode(errors="ignore") + ellipsis


def initial_comment(result: GenerationResult, *, user_id: str) -> str:
    """The upload's comment: who asked, the prompt, then model, size, seed, cost and quota."""
    prompt = clip(result.request.prompt, _MAX_COMMENT_PROMPT)
    lines = [f"<@{user_id}>: {escape(prompt)}"]
    if result.revised_prompt and result.revised_prompt != result.request.prompt:
        lines.append(f"_{escape(clip(result.revised_prompt, _MAX_COMMENT_PROMPT))}_")
    lines.append(result_summary(result))
    return "\n".join(lines)


def file_uploads(result: GenerationResult) -> list[dict[str, Any]]:
    """``files_upload_v2(file_uploads=...)`` items, one per image."""
    stem = f"imagine-{result.job_id[:12]}"
    title = clip(result.request.prompt, _MAX_TITLE)
    alt = _clip_bytes(result.revised_prompt or result.request.prompt, _MAX_ALT_TEXT)
    many = len(result.images) > 1
    uploads = []
    for index, image in enumerate(result.images, start=1):
        suffix = f"-{index}" if many else ""
        uploads.append(
            {
                "content": image.data,
                "filename": f"{stem}{suffix}.{image.extension}",
                "title": f"{title} ({index}/{len(result.images)})" if many else title,
                "alt_txt": alt,
            }
        )
    return uploads


def button_section(
    block_id: str, text: str, *, action_id: str, label: str, value: str, style: str | None = None
) -> list[dict[str, Any]]:
    """One section: ``text`` (mrkdwn) with a button whose value (a job id) makes the click
    understood after a restart too."""
    return [
        {
            "type": "section",
            "block_id": block_id,
            "text": {"type": "mrkdwn", "text": text},
            "accessory": button(action_id, label, value, style),
        }
    ]


def button(action_id: str, label: str, value: str, style: str | None = None) -> dict[str, Any]:
    """A Block Kit button; ``value`` (a job or review id) comes back with the click."""
    found: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "value": value,
    }
    if style is not None:
        found["style"] = style
    return found


def reroll_blocks(job_id: str) -> list[dict[str, Any]]:
    """A message with the Reroll button; the button's value is the job id, so it works after
    a restart (the job's parameters live in the ledger)."""
    return button_section(
        "imagine_reroll",
        REROLL_HINT,
        action_id=REROLL_ACTION_ID,
        label=BUTTON_LABELS["reroll"],
        value=job_id,
    )
