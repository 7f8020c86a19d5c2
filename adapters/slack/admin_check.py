"""Whether a Slack member is an admin of the workspace their request came from."""

from __future__ import annotations

import logging

import aiohttp
from slack_sdk.errors import SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.render import Origin
from bot.admin import listed_admin

__all__ = ["is_workspace_admin"]

log = logging.getLogger(__name__)


async def is_workspace_admin(
    client: AsyncWebClient,
    origin: Origin,
    *,
    admin_user_ids: frozenset[str],
    home_workspace: str,
) -> bool:
    """Listed in ``SLACK_ADMIN_USER_IDS`` for the workspace, or an admin/owner there
    according to ``users.info``. The bot's token answers for its own workspace
    (``home_workspace``, from ``auth.test``) only, so ``users.info`` counts only there."""
    user_id = origin.user_id
    if listed_admin(
        admin_user_ids,
        workspace_id=origin.team_id,
        home_workspace=home_workspace,
        user_id=user_id,
    ):
        return True
    if not home_workspace or origin.team_id != home_workspace:
        log.info("admin check for %s in workspace %s: not this bot's", user_id, origin.team_id)
        return False
    try:
        response = await client.users_info(user=user_id)
    except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
        log.warning("users.info for %s failed (%s): treating as not an admin", user_id, exc)
        return False
    user = response.get("user") or {}
    return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))
