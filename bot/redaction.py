"""Secrets taken out of log lines, whatever logged them and at whatever level.

Our code never logs a token, but the libraries do at DEBUG: discord.py logs every gateway event
(an interaction carries its token) and every REST route (``/interactions/<id>/<token>``,
``/webhooks/<app>/<token>``), and slack-sdk and Bolt log envelopes with their ``response_url``.
Anyone holding one of those can answer as the bot for 15 to 30 minutes, so the log formatter
passes every finished line through ``redact``.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact"]

REDACTED = "[redacted]"

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Discord interaction and webhook tokens in REST paths.
    (re.compile(r"(/(?:interactions|webhooks)/\d+/)[\w.\-]+"), rf"\1{REDACTED}"),
    # Slack response_url secrets: https://hooks.slack.com/commands/T123/456/<secret>.
    (re.compile(r"(/(?:commands|actions)/[TE][A-Z0-9]+/\d+/)[\w.\-]+"), rf"\1{REDACTED}"),
    # Token-like fields in logged payloads: JSON, Python reprs, query strings.
    (
        re.compile(
            r"""(["']?\b(?:token|response_url|trigger_id|interaction_token|signing_secret)"""
            r"""["']?\s*[:=]\s*["']?)[^"'\s,}&]+""",
            re.IGNORECASE,
        ),
        rf"\1{REDACTED}",
    ),
    # Slack tokens anywhere (bot, user, app-level, refresh).
    (re.compile(r"\b(xox[abeprs]|xapp)-[\w-]+"), rf"\1-{REDACTED}"),
    # Discord bot tokens: base64 user id, timestamp, HMAC.
    (re.compile(r"\b[\w-]{23,28}\.[\w-]{6}\.[\w-]{27,}"), REDACTED),
    # Authorization headers, however they are printed.
    (re.compile(r"((?:Bearer|Bot)\s+)[\w.\-]{16,}"), rf"\1{REDACTED}"),
)


def redact(text: str) -> str:
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text
