"""A refused prompt, told to the member with an "Ask an admin" button carrying the review id
(the click is handled in ``review.py``), or a request outside the allowed channels."""

from __future__ import annotations

import logging
from typing import Any

from adapters.slack.chat import SlackChat
from adapters.slack.render import Origin, button, escape
from bot.errors import ChannelNotAllowedError, PromptRefusedError, ServerRulesError
from bot.messages import REVIEW_BUTTON_LABELS, describe

__all__ = ["ASK_ACTION_ID", "refusal_blocks", "tell_refusal"]

log = logging.getLogger(__name__)

ASK_ACTION_ID = "imagine_review_ask"


def refusal_blocks(text: str, review_id: str) -> list[dict[str, Any]]:
    """The refusal with its "Ask an admin" button (the value is the review id)."""
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": escape(text)}},
        {
            "type": "actions",
            "block_id": "imagine_review_ask",
            "elements": [button(ASK_ACTION_ID, REVIEW_BUTTON_LABELS["ask"], review_id)],
        },
    ]


async def tell_refusal(chat: SlackChat, origin: Origin, err: ServerRulesError) -> None:
    """The refusal, ephemeral, with an "Ask an admin" button carrying the review id; or,
    outside the allowed channels, links to them."""
    text = describe(err, channel_label=lambda channel_id: f"<#{channel_id}>")
    if isinstance(err, ChannelNotAllowedError):
        log.info("request from %s outside the allowed channels", origin.user_id)
        await chat.tell(origin, text, markup=True)  # our channel links only
        return
    if not isinstance(err, PromptRefusedError) or err.review_id is None:
        await chat.tell(origin, text)
        return
    log.info("request from %s refused (%s)", origin.user_id, err.source)
    await chat.tell(origin, text, blocks=refusal_blocks(text, err.review_id))
