"""Telling a member why their request failed, and logging it at the level it deserves."""

from __future__ import annotations

import logging

from adapters.slack.chat import SlackChat
from adapters.slack.progress import QueueNote
from adapters.slack.refusal import tell_refusal
from adapters.slack.render import Origin
from bot.errors import ChannelNotAllowedError, PromptRefusedError, ProviderAuthError
from bot.messages import describe, is_operator_fault

__all__ = ["tell_failure"]

log = logging.getLogger(__name__)


async def tell_failure(
    chat: SlackChat, origin: Origin, err: BaseException, note: QueueNote | None = None
) -> None:
    """``note``, when it still offers Cancel, is replaced by the outcome."""
    if isinstance(err, ProviderAuthError):
        log.error("image provider rejected our credentials: %s", err)
    elif is_operator_fault(err):
        log.warning("job for %s failed: %s: %s", origin.user_id, type(err).__name__, err)
    else:
        log.info("request from %s refused: %s", origin.user_id, type(err).__name__)
    moderated = chat.service.moderation is not None
    if moderated and isinstance(err, PromptRefusedError | ChannelNotAllowedError):
        await tell_refusal(chat, origin, err)  # with "Ask an admin", or the channels
        return
    if note is None or not await note.settle(describe(err)):
        await chat.tell(origin, describe(err))
