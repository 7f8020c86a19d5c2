"""Telling a member why their request failed, and logging it at the level it deserves."""

from __future__ import annotations

import logging

from adapters.slack.chat import SlackChat
from adapters.slack.progress import QueueNote
from adapters.slack.refusal import tell_refusal
from adapters.slack.render import Origin
from bot.errors import BotError, ServerRulesError
from bot.messages import describe

__all__ = ["tell_failure"]

log = logging.getLogger(__name__)


async def tell_failure(
    chat: SlackChat, origin: Origin, err: BaseException, note: QueueNote | None = None
) -> None:
    """``note``, when it still offers Cancel, is replaced by the outcome. Nothing is said
    when the member was told already (``notified``)."""
    if isinstance(err, BotError) and err.notified:
        return  # logged where it was told
    level = err.log_level if isinstance(err, BotError) else logging.WARNING
    log.log(level, "request from %s failed: %s: %s", origin.user_id, type(err).__name__, err)
    if chat.service.moderation is not None and isinstance(err, ServerRulesError):
        await tell_refusal(chat, origin, err)  # with "Ask an admin", or the channels
        return
    if note is None or not await note.settle(describe(err)):
        await chat.tell(origin, describe(err))
