"""The moderation words of ``/imagine admin`` (pure; ``commands.parse_command`` hands them
here)::

    admin block add WORD|/regex/        admin block remove WORD|/regex/     admin block list
    admin review-channel #channel|none
    admin channels allow #channel       admin channels remove #channel      admin channels list
    admin spoilers on|off
    admin moderation-log [days]

A blocked term may be several words (``admin block add bad phrase``). Channels come as Slack
sends them with ``should_escape`` on (``<#C123|general>``), or as a bare id. Mistakes raise
``InvalidRequestError`` with a one-line reason.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TypeGuard

from adapters.slack.render import plain_text
from bot.errors import InvalidRequestError

__all__ = [
    "MODERATION_SUBCOMMANDS",
    "BlockAdd",
    "BlockList",
    "BlockRemove",
    "ChannelsAllow",
    "ChannelsList",
    "ChannelsRemove",
    "ModerationCommand",
    "ModerationLog",
    "ReviewChannel",
    "Spoilers",
    "is_moderation_command",
    "parse_moderation",
]

log = logging.getLogger(__name__)

MODERATION_SUBCOMMANDS = ("block", "review-channel", "channels", "spoilers", "moderation-log")
_CHANNEL = re.compile(r"^<#([CG][A-Z0-9]+)(?:\|[^>]*)?>$")
_BARE_CHANNEL = re.compile(r"^[CG][A-Z0-9]{2,}$")
_UNSET = frozenset({"none", "off", "-", "clear"})
_MAX_DAYS = 366
_DEFAULT_DAYS = 7


@dataclass(frozen=True, slots=True)
class BlockAdd:
    """``term`` as typed: a word or phrase, or ``/regex/``."""

    term: str


@dataclass(frozen=True, slots=True)
class BlockRemove:
    term: str


@dataclass(frozen=True, slots=True)
class BlockList:
    pass


@dataclass(frozen=True, slots=True)
class ReviewChannel:
    """``channel_id`` ``None`` clears it (no reviews)."""

    channel_id: str | None


@dataclass(frozen=True, slots=True)
class ChannelsAllow:
    channel_id: str


@dataclass(frozen=True, slots=True)
class ChannelsRemove:
    channel_id: str


@dataclass(frozen=True, slots=True)
class ChannelsList:
    pass


@dataclass(frozen=True, slots=True)
class Spoilers:
    on: bool


@dataclass(frozen=True, slots=True)
class ModerationLog:
    days: int = _DEFAULT_DAYS


ModerationCommand = (
    BlockAdd
    | BlockRemove
    | BlockList
    | ReviewChannel
    | ChannelsAllow
    | ChannelsRemove
    | ChannelsList
    | Spoilers
    | ModerationLog
)

_TYPES = (
    BlockAdd,
    BlockRemove,
    BlockList,
    ReviewChannel,
    ChannelsAllow,
    ChannelsRemove,
    ChannelsList,
    Spoilers,
    ModerationLog,
)


def is_moderation_command(command: object) -> TypeGuard[ModerationCommand]:
    return isinstance(command, _TYPES)


def parse_moderation(sub: str, args: list[str]) -> ModerationCommand:
    """``sub`` is one of ``MODERATION_SUBCOMMANDS`` (casefolded); ``args`` the words after it
    as Slack sent them (still escaped)."""
    if sub == "block":
        return _block(args)
    if sub == "review-channel":
        if len(args) != 1:
            raise InvalidRequestError(
                "review-channel takes one channel, e.g. admin review-channel #mods, or none"
            )
        if args[0].casefold() in _UNSET:
            return ReviewChannel(None)
        return ReviewChannel(_channel(args[0]))
    if sub == "channels":
        return _channels(args)
    if sub == "spoilers":
        if len(args) != 1 or args[0].casefold() not in ("on", "off"):
            raise InvalidRequestError("spoilers takes on or off, e.g. admin spoilers on")
        return Spoilers(args[0].casefold() == "on")
    return _log(args)


def _block(args: list[str]) -> ModerationCommand:
    verb = args[0].casefold() if args else ""
    if verb == "list" and len(args) == 1:
        return BlockList()
    if verb in ("add", "remove") and len(args) > 1:
        term = plain_text(" ".join(args[1:])).strip()
        return BlockAdd(term) if verb == "add" else BlockRemove(term)
    raise InvalidRequestError(
        "use admin block add WORD (or /regex/), admin block remove WORD, or admin block list"
    )


def _channels(args: list[str]) -> ModerationCommand:
    verb = args[0].casefold() if args else ""
    if verb == "list" and len(args) == 1:
        return ChannelsList()
    if verb in ("allow", "remove") and len(args) == 2:
        channel_id = _channel(args[1])
        return ChannelsAllow(channel_id) if verb == "allow" else ChannelsRemove(channel_id)
    raise InvalidRequestError(
        "use admin channels allow #channel, admin channels remove #channel, or admin channels list"
    )


def _channel(word: str) -> str:
    match = _CHANNEL.match(word)
    if match is not None:
        return match.group(1)
    if _BARE_CHANNEL.match(word):
        return word
    raise InvalidRequestError(f"{word[:40]!r} is not a channel; pick one with # (e.g. #general)")


def _log(args: list[str]) -> ModerationLog:
    if not args:
        return ModerationLog()
    if len(args) > 1 or not (args[0].isascii() and args[0].isdigit()):
        raise InvalidRequestError("moderation-log takes a number of days, e.g. 7")
    days = int(args[0][:4])
    if not 1 <= days <= _MAX_DAYS:
        raise InvalidRequestError(f"moderation-log covers 1 to {_MAX_DAYS} days")
    return ModerationLog(days)
