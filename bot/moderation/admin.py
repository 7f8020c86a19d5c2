"""The moderation admin API: blocked words and patterns, allowed channels, the review
channel, spoilers and the moderation log. Every method takes the acting ``Requester``, refuses
anyone but an admin of their own server, and is audited."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import timedelta

from bot.admin import actor_name
from bot.errors import (
    InvalidRequestError,
    PermissionDeniedError,
)
from bot.models import (
    ModerationEntry,
    Requester,
    ServerRules,
)
from bot.moderation.filter import (
    check_pattern,
    check_term,
)
from bot.moderation.screening import Moderation
from bot.store.moderation import RuleKind

__all__ = ["MAX_RULES", "BlockChange", "ModerationAdmin", "split_block_term"]

log = logging.getLogger(__name__)

MAX_RULES = 500
"""Most blocked words (and, separately, patterns and allowed channels) per server."""


def split_block_term(text: str) -> tuple[bool, str]:
    """How admins type a block rule: ``/regex/`` is a pattern, anything else a word or phrase.
    Returns ``(is_pattern, value)``: ``"/n[a@]ked/"`` -> ``(True, "n[a@]ked")``."""
    stripped = text.strip()
    if len(stripped) > 2 and stripped.startswith("/") and stripped.endswith("/"):
        return True, stripped[1:-1].strip()
    return False, stripped


@dataclass(frozen=True, slots=True)
class BlockChange:
    """What ``block`` or ``unblock`` did: the ``value`` as stored, whether it is a
    ``pattern``, and whether anything ``changed`` (``False``: it was already so)."""

    value: str
    pattern: bool
    changed: bool


class ModerationAdmin:
    """The admin API for moderation. Every method takes the acting ``Requester``, raises
    ``PermissionDeniedError`` unless ``actor.is_admin``, acts on the actor's own platform and
    server only, and is audited (actor ``"<platform>:<user id>"``)."""

    def __init__(self, moderation: Moderation) -> None:
        self.moderation = moderation
        self._store = moderation.store

    @staticmethod
    def _check(actor: Requester, action: str) -> None:
        if not actor.is_admin:
            raise PermissionDeniedError(action)

    async def _add(self, actor: Requester, kind: RuleKind, value: str) -> bool:
        if await self._store.count_rules(actor.platform, actor.workspace_id, kind) >= MAX_RULES:
            raise InvalidRequestError(f"this server already has {MAX_RULES} of those")
        added = await self._store.add_rule(
            actor.platform, actor.workspace_id, kind, value, actor=actor_name(actor)
        )
        log.info("%s added %s rule to %s", actor_name(actor), kind, actor.workspace_id or "-")
        return added

    async def block(self, actor: Requester, term_or_regex: str) -> BlockChange:
        """Block what an admin typed: ``/regex/`` as a pattern, anything else as a word or
        phrase (``split_block_term``); every platform's ``block add`` is this call."""
        pattern, value = split_block_term(term_or_regex)
        if pattern:
            return BlockChange(value, True, await self.block_add_pattern(actor, value))
        return BlockChange(value, False, await self.block_add(actor, value))

    async def unblock(self, actor: Requester, term_or_regex: str) -> BlockChange:
        """Unblock what an admin typed, ``/regex/`` or a word; every platform's
        ``block remove`` is this call."""
        pattern, value = split_block_term(term_or_regex)
        return BlockChange(value, pattern, await self.block_remove(actor, term_or_regex))

    async def block_add(self, actor: Requester, term: str) -> bool:
        """Block a word or phrase; ``False`` when it was already blocked."""
        self._check(actor, "change the blocked words")
        return await self._add(actor, "term", check_term(term))

    async def block_add_pattern(self, actor: Requester, regex: str) -> bool:
        """Block a regular expression (``InvalidRequestError`` when RE2 cannot run it, it is
        too complex, alone or with the server's other patterns, or it matches everything)."""
        self._check(actor, "change the blocked words")
        rules = await self.moderation.rules(actor.platform, actor.workspace_id)
        # RE2's compiler can take tens of milliseconds on a large pattern: off the loop.
        vet = functools.partial(check_pattern, regex, rules.blocked_patterns)
        pattern = await self.moderation.off_loop(vet)
        return await self._add(actor, "pattern", pattern)

    async def block_remove(self, actor: Requester, term_or_regex: str) -> bool:
        """Unblock a word or a pattern (also accepted as ``/regex/``); ``False`` when neither
        was blocked."""
        self._check(actor, "change the blocked words")
        where = (actor.platform, actor.workspace_id)
        name = actor_name(actor)
        is_pattern, value = split_block_term(term_or_regex)
        if is_pattern and await self._store.remove_rule(*where, "pattern", value, actor=name):
            return True
        try:
            term = check_term(term_or_regex)
        except InvalidRequestError:
            term = None
        if term is not None and await self._store.remove_rule(*where, "term", term, actor=name):
            return True
        return await self._store.remove_rule(*where, "pattern", term_or_regex.strip(), actor=name)

    async def block_list(self, actor: Requester) -> ServerRules:
        self._check(actor, "view the blocked words")
        return await self.moderation.rules(actor.platform, actor.workspace_id)

    async def set_review_channel(self, actor: Requester, channel_id: str | None) -> None:
        """Where "Ask an admin" requests go (``None``: nowhere; the button then says so)."""
        self._check(actor, "set the review channel")
        await self._store.set_review_channel(
            actor.platform, actor.workspace_id, channel_id or None, actor=actor_name(actor)
        )

    async def allow_channel(self, actor: Requester, channel_id: str) -> bool:
        """Add a channel to the allow-list (once it has one, /imagine works only there)."""
        self._check(actor, "change where images can be made")
        if not channel_id:
            raise InvalidRequestError("name a channel")
        return await self._add(actor, "channel", channel_id)

    async def disallow_channel(self, actor: Requester, channel_id: str) -> bool:
        self._check(actor, "change where images can be made")
        return await self._store.remove_rule(
            actor.platform, actor.workspace_id, "channel", channel_id, actor=actor_name(actor)
        )

    async def set_spoilers(self, actor: Requester, on: bool) -> None:
        self._check(actor, "change the spoiler setting")
        await self._store.set_spoilers(
            actor.platform, actor.workspace_id, on, actor=actor_name(actor)
        )

    async def log(
        self, actor: Requester, days: int = 7, *, limit: int = 50
    ) -> tuple[ModerationEntry, ...]:
        """Refusals in the actor's server over the last ``days`` days, newest first."""
        self._check(actor, "view the moderation log")
        if not 1 <= days <= 366:
            raise InvalidRequestError("days must be between 1 and 366")
        since = self._store.now() - timedelta(days=days)
        return await self._store.log(actor.platform, actor.workspace_id, since=since, limit=limit)
