"""Whether the bot is in a conversation, so an upload there will work."""

from __future__ import annotations

import logging
import time

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.api_error import error_code
from adapters.slack.render import Origin

__all__ = ["NOT_IN_CHANNEL_ERRORS", "Membership"]

log = logging.getLogger(__name__)

# Errors that mean "the bot cannot post in this conversation".
NOT_IN_CHANNEL_ERRORS = frozenset(
    {"not_in_channel", "channel_not_found", "invalid_channel", "no_permission"}
)
_MEMBERSHIP_TTL_S = 300.0


class Membership:
    """The conversations the bot was recently seen to be a member of."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self._until: dict[str, float] = {}

    def forget(self, channel_id: str) -> None:
        """Slack refused a post there: ask again next time."""
        self._until.pop(channel_id, None)

    async def can_post(self, origin: Origin) -> bool:
        """A mention proves membership; otherwise ``conversations.info`` says (cached a few
        minutes). When Slack cannot tell (e.g. a missing ``*:read`` scope) we try anyway."""
        channel = origin.channel_id
        if origin.bot_is_member:
            return True
        if self._until.get(channel, 0.0) > time.monotonic():
            return True
        try:
            response = await self.client.conversations_info(channel=channel)
        except SlackApiError as exc:
            error = error_code(exc)
            if error in NOT_IN_CHANNEL_ERRORS:
                return False
            log.warning("cannot check membership of %s (%s); trying anyway", channel, error)
            return True
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("cannot check membership of %s (%s); trying anyway", channel, exc)
            return True
        info = response.get("channel") or {}
        member = bool(info.get("is_member", True)) if isinstance(info, dict) else True
        if member:
            self._until[channel] = time.monotonic() + _MEMBERSHIP_TTL_S
        return member
