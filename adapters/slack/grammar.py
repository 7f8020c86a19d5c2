"""The words ``/imagine`` (and a mention) understand besides a prompt::

    help | quota | models
    admin [help]
    admin set-quota <@user|default> images_per_day=N images_per_month=N usd_per_month=X
    admin clear-quota <@user|default>
    admin spend-cap <X|off>
    admin usage [days]
    admin block add|remove WORD|/regex/, block list, review-channel #channel|none,
    admin channels allow|remove #channel, channels list, spoilers on|off, moderation-log [days]

A subcommand word counts only when the whole text is that word (``/imagine models`` lists the
models, ``/imagine models on a runway`` draws them), and ``admin`` only when the next word is
an admin subcommand or nothing. Everything else is a prompt for the shared grammar. Pure
functions; mistakes raise ``InvalidRequestError`` with a one-line reason.

An admin subcommand comes back unparsed (``Admin``): its arguments are untrusted text, so
``admin_command.py`` checks the member's rights first and only then calls ``Admin.parse``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from adapters.slack.moderation_grammar import (
    MODERATION_SUBCOMMANDS,
    ModerationCommand,
    parse_moderation,
)
from bot.amount import parse_count, parse_usd
from bot.errors import InvalidRequestError

__all__ = [
    "ADMIN_SUBCOMMANDS",
    "Admin",
    "AdminCommand",
    "AdminHelp",
    "ClearQuota",
    "Command",
    "Generate",
    "Help",
    "Models",
    "Quota",
    "SetQuota",
    "SpendCap",
    "Usage",
    "parse_command",
]

log = logging.getLogger(__name__)

# ... and the moderation words (adapters/slack/moderation_grammar.py).
ADMIN_SUBCOMMANDS = (
    "set-quota",
    "clear-quota",
    "spend-cap",
    "usage",
    "help",
    *MODERATION_SUBCOMMANDS,
)
LIMIT_KEYS = ("images_per_day", "images_per_month", "usd_per_month")
_UNSET = frozenset({"none", "off", "default", "-"})
_USER = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")
_MAX_DAYS = 366


@dataclass(frozen=True, slots=True)
class Generate:
    text: str


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class Quota:
    pass


@dataclass(frozen=True, slots=True)
class Models:
    pass


@dataclass(frozen=True, slots=True)
class AdminHelp:
    pass


@dataclass(frozen=True, slots=True)
class SetQuota:
    """``user_id`` ``None`` is the workspace default. Each limit is ``None`` when not given;
    ``unset`` names the limits given as ``none``/``off``/``default`` (no longer set at this
    scope, so the next scope's value applies)."""

    user_id: str | None
    images_per_day: int | None = None
    images_per_month: int | None = None
    usd_micros_per_month: int | None = None
    unset: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ClearQuota:
    user_id: str | None


@dataclass(frozen=True, slots=True)
class SpendCap:
    """``usd_micros`` ``None`` removes the cap."""

    usd_micros: int | None


@dataclass(frozen=True, slots=True)
class Usage:
    days: int = 30


AdminCommand = SetQuota | ClearQuota | SpendCap | Usage | ModerationCommand


@dataclass(frozen=True, slots=True)
class Admin:
    """``admin <sub> <args>`` before its arguments are read; ``parse`` reads them."""

    sub: str
    args: tuple[str, ...]

    def parse(self) -> AdminCommand:
        return _parse_admin(self.sub, list(self.args))


Command = Generate | Help | Quota | Models | AdminHelp | Admin


def parse_command(text: str) -> Command:
    """What ``text`` (the slash command's text, or a mention without the bot) asks for."""
    words = text.split()
    if not words:
        return Help()
    first = words[0].casefold()
    if len(words) == 1 and first == "help":
        return Help()
    if len(words) == 1 and first == "quota":
        return Quota()
    if len(words) == 1 and first == "models":
        return Models()
    if first != "admin":
        return Generate(" ".join(words))
    if len(words) == 1:
        return AdminHelp()
    sub = words[1].casefold()
    if sub not in ADMIN_SUBCOMMANDS:
        return Generate(" ".join(words))
    if sub == "help":
        return AdminHelp()
    return Admin(sub, tuple(words[2:]))


def _parse_admin(sub: str, args: list[str]) -> AdminCommand:
    if sub in MODERATION_SUBCOMMANDS:
        return parse_moderation(sub, args)
    if sub == "set-quota":
        return _set_quota(args)
    if sub == "clear-quota":
        if len(args) != 1:
            raise InvalidRequestError("clear-quota takes one user, e.g. admin clear-quota @ann")
        return ClearQuota(_target(args[0]))
    if sub == "spend-cap":
        if len(args) != 1:
            raise InvalidRequestError("spend-cap takes one amount in USD, e.g. 50, or off")
        value = args[0].casefold()
        return SpendCap(None if value in _UNSET else parse_usd(value, name="spend-cap"))
    return _usage(args)


def _target(word: str) -> str | None:
    if word.casefold() == "default":
        return None
    match = _USER.match(word)
    if match is None:
        raise InvalidRequestError(
            f"{word[:40]!r} is not a user; mention one (@ann) or write default"
        )
    return match.group(1)


def _set_quota(args: list[str]) -> SetQuota:
    if not args:
        raise InvalidRequestError(
            "set-quota needs a user or default and limits, e.g. "
            "admin set-quota @ann images_per_day=20 usd_per_month=5"
        )
    user_id = _target(args[0])
    values: dict[str, int | None] = {}
    unset: set[str] = set()
    for pair in args[1:]:
        key, sep, value = pair.partition("=")
        key = key.casefold().replace("-", "_")
        if not sep or key not in LIMIT_KEYS:
            raise InvalidRequestError(
                f"{pair[:40]!r} is not a limit; use {', '.join(k + '=N' for k in LIMIT_KEYS)}"
            )
        if key in values or key in unset:
            raise InvalidRequestError(f"{key} given twice; give each limit once")
        value = value.strip().casefold()
        if value in _UNSET:
            unset.add(key)
            continue
        parse = parse_usd if key == "usd_per_month" else parse_count
        values[key] = parse(value, name=key)
    if not values and not unset:
        raise InvalidRequestError(
            "set-quota needs at least one limit, e.g. images_per_day=20 (or images_per_day=none)"
        )
    renamed = {"usd_per_month": "usd_micros_per_month"}
    return SetQuota(
        user_id=user_id,
        images_per_day=values.get("images_per_day"),
        images_per_month=values.get("images_per_month"),
        usd_micros_per_month=values.get("usd_per_month"),
        unset=frozenset(renamed.get(k, k) for k in unset),
    )


def _usage(args: list[str]) -> Usage:
    if not args:
        return Usage()
    if len(args) > 1 or not (args[0].isascii() and args[0].isdigit()):
        raise InvalidRequestError("usage takes a number of days, e.g. admin usage 7")
    days = int(args[0][:4])
    if not 1 <= days <= _MAX_DAYS:
        raise InvalidRequestError(f"usage covers 1 to {_MAX_DAYS} days")
    return Usage(days)
