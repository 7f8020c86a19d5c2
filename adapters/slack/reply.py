"""An ephemeral reply to the member who asked: the one way the Slack parts tell a member
something only they should see."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_sdk.errors import SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.render import Origin, escape
from adapters.slack.response import respond

__all__ = ["tell"]

log = logging.getLogger(__name__)


async def tell(
    client: AsyncWebClient,
    session: aiohttp.ClientSession,
    origin: Origin,
    text: str,
    *,
    markup: bool = False,
    blocks: list[dict[str, Any]] | None = None,
    replace: bool = False,
) -> None:
    """Through the command's or button's ``response_url`` when there is one (it works even
    where the bot is not a member), else ``chat.postEphemeral`` (in the thread, when the
    thread exists). Plain ``text`` is escaped (it may quote what the user typed); ``markup``
    sends it as Slack mrkdwn (mentions we built). ``replace`` swaps the message whose button
    was clicked."""
    if not markup:
        text = escape(text)
    if (
        origin.response_url
        and origin.note_thread_ts is None
        and await respond(
            session,
            origin.response_url,
            text,
            blocks=blocks,
            replace_original=replace if origin.interactive else None,
        )
    ):
        return
    try:
        await client.chat_postEphemeral(
            channel=origin.channel_id,
            user=origin.user_id,
            text=text,
            blocks=blocks,
            thread_ts=origin.note_thread_ts,
        )
    except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
        log.warning("could not tell %s: %s", origin.user_id, exc)
