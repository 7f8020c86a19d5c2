"""The one object every Slack listener works through: tell a member, run acknowledged work,
drop redelivered envelopes, check that the bot can post, check admins, deliver a result.

Every listener acknowledges at once (Slack allows 3 s) and hands the work to ``spawn``,
which tracks it so shutdown can cancel it (a cancelled job is refunded by the service).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Coroutine
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.admin_check import is_workspace_admin
from adapters.slack.api_error import error_code
from adapters.slack.membership import NOT_IN_CHANNEL_ERRORS, Membership
from adapters.slack.render import Origin
from adapters.slack.reply import tell
from adapters.slack.upload import upload_images
from bot.errors import DeliveryError
from bot.messages import DELIVERY_FAILED, describe, not_in_channel_text
from bot.models import GenerationResult
from bot.service import ImageService

__all__ = ["CLOSE_GRACE_S", "SlackChat"]

log = logging.getLogger(__name__)

_SEEN_EVENTS = 10_000
CLOSE_GRACE_S = 10.0


class SlackChat:
    """The Web API client and HTTP session, the bot's identity (``auth.test``), and the
    requests in flight."""

    def __init__(
        self,
        *,
        service: ImageService,
        client: AsyncWebClient,
        session: aiohttp.ClientSession,
        admin_user_ids: frozenset[str] = frozenset(),
    ) -> None:
        self.service = service
        self.client = client
        self.session = session
        self.admin_user_ids = admin_user_ids
        self.bot_user_id = ""
        self.team_id = ""  # the workspace the bot token belongs to (auth.test)
        self.membership = Membership(client)
        self._tasks: set[asyncio.Task[None]] = set()
        self._seen: OrderedDict[str, None] = OrderedDict()

    # -- work in flight ---------------------------------------------------------------------

    def spawn(self, origin: Origin, work: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run ``work`` for an acknowledged request; a stop waits for it."""
        task = asyncio.create_task(self._guard(origin, work), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, origin: Origin, work: Awaitable[None]) -> None:
        try:
            async with self.service.handling():
                await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("Slack request from %s failed unexpectedly", origin.user_id)
            await self.tell(origin, describe(exc))

    async def close(self, *, grace: float = CLOSE_GRACE_S) -> None:
        """Let the work in flight finish for up to ``grace`` seconds (by now the service has
        settled every job, so what is left is telling members the outcome), then cancel the
        rest and wait for it (the service refunds cancelled jobs)."""
        tasks = list(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("stopping: %d Slack request(s) cut short", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    def first_time(self, event_id: str | None) -> bool:
        """False when this process already took ``event_id`` (a redelivery while the first
        delivery is still running); the ledger catches redeliveries across restarts."""
        if event_id is None:
            return True
        if event_id in self._seen:
            return False
        self._seen[event_id] = None
        while len(self._seen) > _SEEN_EVENTS:
            self._seen.popitem(last=False)
        return True

    # -- members and conversations ------------------------------------------------------------

    async def tell(
        self,
        origin: Origin,
        text: str,
        *,
        markup: bool = False,
        blocks: list[dict[str, Any]] | None = None,
        replace: bool = False,
    ) -> None:
        """An ephemeral message to the requester (``reply.tell``)."""
        await tell(
            self.client, self.session, origin, text, markup=markup, blocks=blocks, replace=replace
        )

    async def can_post(self, origin: Origin) -> bool:
        """Whether the bot is a member of the conversation, so the upload will work."""
        return await self.membership.can_post(origin)

    async def is_admin(self, origin: Origin) -> bool:
        """An admin of the workspace the request came from (``admin_check``)."""
        return await is_workspace_admin(
            self.client, origin, admin_user_ids=self.admin_user_ids, home_workspace=self.team_id
        )

    def note_bot_user(self, context: Any) -> None:
        """Bolt's context knows the bot's user id, should ``auth.test`` not have told yet."""
        bot_user_id = getattr(context, "bot_user_id", None)
        if bot_user_id:
            self.bot_user_id = str(bot_user_id)

    def not_in_channel(self) -> str:
        mention = f"<@{self.bot_user_id}>" if self.bot_user_id else "@imagine-bot"
        return not_in_channel_text(f"/invite {mention}")

    # -- delivery -----------------------------------------------------------------------------

    async def deliver(self, result: GenerationResult, origin: Origin) -> None:
        """Upload the images; a failed upload tells the user and raises ``DeliveryError``,
        so the service refunds the job."""
        try:
            await upload_images(self.client, result, origin)
        except SlackApiError as exc:
            error = error_code(exc)
            if error in NOT_IN_CHANNEL_ERRORS:
                self.membership.forget(origin.channel_id)
                log.warning(
                    "job %s: cannot post in %s (%s)", result.job_id, origin.channel_id, error
                )
                await self.tell(origin, self.not_in_channel(), markup=True)
            else:
                log.error("job %s: upload to Slack failed: %s", result.job_id, error)
                await self.tell(origin, DELIVERY_FAILED)
            raise DeliveryError(f"Slack upload failed: {error}", notified=True) from exc
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.error("job %s: upload to Slack failed: %s", result.job_id, exc)
            await self.tell(origin, DELIVERY_FAILED)
            raise DeliveryError("Slack upload failed", notified=True) from exc
        log.info(
            "job %s: uploaded %d image(s) to %s",
            result.job_id,
            len(result.images),
            origin.channel_id,
        )
