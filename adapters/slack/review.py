"""Reviews on Slack: the "Ask an admin" click under a refusal (``refusal.py``), the review
post with Approve / Deny in the workspace's review channel, and the approved job.

Buttons carry the review id as their value and the reviews live in the database, so they
work after a restart. Who may decide is checked by the core (``Moderation.decide``), with
``is_admin`` computed as for the quota commands (``SLACK_ADMIN_USER_IDS`` or a workspace
admin or owner). A denied user is told with an ephemeral message in the channel they asked
in (only they see it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackClientError

from adapters.slack.chat import SlackChat
from adapters.slack.refusal import ASK_ACTION_ID
from adapters.slack.render import Origin, button, clip, escape, event_id, from_action
from adapters.slack.upload import post_reroll_button
from bot.errors import BotError
from bot.messages import (
    REVIEW_BUTTON_LABELS,
    REVIEW_POST_FAILED,
    REVIEW_SENT,
    describe,
    review_decided_text,
    review_denied_text,
    review_fields,
    review_title,
)
from bot.models import GenerationResult, Requester, Review
from bot.moderation.approval import run_approved
from bot.moderation.screening import Moderation, ReviewPost

__all__ = ["APPROVE_ACTION_ID", "DENY_ACTION_ID", "ReviewListener", "review_blocks"]

log = logging.getLogger(__name__)

APPROVE_ACTION_ID = "imagine_review_approve"
DENY_ACTION_ID = "imagine_review_deny"
_MAX_SECTION = 2900  # Slack allows 3000 characters in a section's text


def review_blocks(review: Review, *, decided: str | None = None) -> list[dict[str, Any]]:
    """What the admins see: the prompt, who asked where, the rule that matched; Approve and
    Deny until decided, then ``decided`` in their place."""
    lines = [f"*{escape(review_title(review))}*", f"> {escape(clip(review.request.prompt, 2000))}"]
    fields = review_fields(
        review,
        user=f"<@{review.requester.user_id}>",
        channel=f"<#{review.requester.channel_id}>",
    )
    for name, value in fields:
        lines.append(f"*{escape(name)}:* {value if name in _MARKUP_FIELDS else escape(value)}")
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": clip("\n".join(lines), _MAX_SECTION)},
        },
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"review {review.review_id}"}],
        },
    ]
    if decided is None:
        blocks.append(
            {
                "type": "actions",
                "block_id": "imagine_review_decide",
                "elements": [
                    button(
                        APPROVE_ACTION_ID,
                        REVIEW_BUTTON_LABELS["approve"],
                        review.review_id,
                        "primary",
                    ),
                    button(
                        DENY_ACTION_ID, REVIEW_BUTTON_LABELS["deny"], review.review_id, "danger"
                    ),
                ],
            }
        )
    else:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": decided}})
    return blocks


# Field values that are mentions we built (shown as mrkdwn), not text users typed.
_MARKUP_FIELDS = frozenset({"Requested by", "Channel"})


class ReviewListener:
    """The Ask, Approve and Deny clicks; registered before the catch-all action listener."""

    def __init__(self, chat: SlackChat, moderation: Moderation) -> None:
        self.chat = chat
        self.moderation = moderation

    def register(self, app: AsyncApp) -> None:
        app.action(ASK_ACTION_ID)(self.on_ask)
        app.action(re.compile(f"^({APPROVE_ACTION_ID}|{DENY_ACTION_ID})$"))(self.on_decide)

    # -- listeners ------------------------------------------------------------------------------

    async def on_ask(self, ack: Callable[[], Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()
        if not self.chat.first_time(event_id(body.get("trigger_id"))):
            return
        origin = from_action(body)
        review_id = _value(body)
        self.chat.spawn(origin, self._ask(review_id, origin), name=f"slack-ask-{review_id}")

    async def on_decide(self, ack: Callable[[], Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()
        if not self.chat.first_time(event_id(body.get("trigger_id"))):
            return
        origin = from_action(body)
        actions = body.get("actions") or [{}]
        approve = actions[0].get("action_id") == APPROVE_ACTION_ID
        container = body.get("container") or {}
        message_ts = str(container.get("message_ts") or (body.get("message") or {}).get("ts"))
        review_id = _value(body)
        self.chat.spawn(
            origin,
            self._decide(review_id, origin, approve, message_ts),
            name=f"slack-decide-{review_id}",
        )

    # -- Ask an admin ---------------------------------------------------------------------------

    async def _ask(self, review_id: str, origin: Origin) -> None:
        """The refused user asks for a review (``Moderation.ask``): the prompt goes to the
        review channel with Approve / Deny; the refusal becomes "sent to the admins"."""
        chat = self.chat
        try:
            post = await self.moderation.ask(review_id, origin.requester())
        except BotError as err:
            log.info("review %s: request refused: %s", review_id, type(err).__name__)
            await chat.tell(origin, describe(err))
            return
        if not await self._post(post):
            await self.moderation.withdraw(review_id)
            await chat.tell(origin, REVIEW_POST_FAILED)
            return
        log.info("review %s: sent to the review channel %s", review_id, post.channel_id)
        await chat.tell(origin, REVIEW_SENT, replace=True)

    async def _post(self, post: ReviewPost) -> bool:
        """Post the review for the admins; ``False`` when Slack would not take it."""
        review = post.review
        where = Origin(
            team_id=review.requester.workspace_id, channel_id=post.channel_id, user_id=""
        )
        if not await self.chat.can_post(where):
            log.error(
                "review %s: the bot is not in the review channel %s; /invite it there",
                review.review_id,
                post.channel_id,
            )
            return False
        try:
            await self.chat.client.chat_postMessage(
                channel=post.channel_id, text=review_title(review), blocks=review_blocks(review)
            )
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.error("review %s: cannot post in the review channel: %s", review.review_id, exc)
            return False
        return True

    # -- Approve / Deny -------------------------------------------------------------------------

    async def _decide(self, review_id: str, origin: Origin, approve: bool, message_ts: str) -> None:
        chat = self.chat
        actor = origin.requester(is_admin=await chat.is_admin(origin))
        try:
            review = await self.moderation.decide(review_id, actor, approve)
        except BotError as err:
            log.info("review %s: decision by %s refused: %s", review_id, actor.user_id, err)
            await chat.tell(origin, describe(err))
            return
        log.info("review %s: %s by %s", review_id, review.state, actor.user_id)
        decided = review_decided_text(approve, f"<@{actor.user_id}>")
        try:
            await chat.client.chat_update(
                channel=origin.channel_id,
                ts=message_ts,
                text=decided,
                blocks=review_blocks(review, decided=decided),
            )
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("review %s: could not update the review message: %s", review_id, exc)
        user = _origin_of(review.requester)
        if not approve:
            await chat.tell(user, review_denied_text(f"<@{user.user_id}>"), markup=True)
            return
        await self._run_approved(review, user, origin)

    async def _run_approved(self, review: Review, user: Origin, admin: Origin) -> None:
        """The approved job (``run_approved``), uploaded into the channel the user asked in,
        followed by the Reroll button."""
        chat = self.chat

        async def deliver(result: GenerationResult) -> None:
            await chat.deliver(result, user)

        run = await run_approved(chat.service, review, deliver=deliver)
        if run.result is not None:
            await post_reroll_button(chat.client, user, run.result.job_id)
        if run.to_user is not None:
            await chat.tell(user, run.to_user)
        if run.to_admin is not None:
            await chat.tell(admin, run.to_admin)


def _value(body: dict[str, Any]) -> str:
    actions = body.get("actions") or [{}]
    return str(actions[0].get("value") or "")


def _origin_of(requester: Requester) -> Origin:
    """Where a review's user asked: ephemeral notes and the approved images go there."""
    return Origin(
        team_id=requester.workspace_id,
        channel_id=requester.channel_id,
        user_id=requester.user_id,
        user_name=requester.display_name,
    )
