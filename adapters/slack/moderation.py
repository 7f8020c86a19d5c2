"""Moderation on Slack: the "Ask an admin" button under a refusal, the review post with
Approve / Deny in the workspace's review channel, the approved job, and the moderation
admin commands (``/imagine admin block ...``; grammar in moderation_commands.py).

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
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackClientError

from adapters.slack import moderation_commands as mc
from adapters.slack.render import Origin, button, escape, from_action, reroll_blocks
from bot.errors import (
    BotError,
    ChannelNotAllowedError,
    DeliveryError,
    DuplicateRequestError,
    PromptRefusedError,
)
from bot.messages import (
    REROLL_HINT,
    REVIEW_BUTTON_LABELS,
    REVIEW_POST_FAILED,
    REVIEW_SENT,
    SPOILERS_DISCORD_ONLY,
    block_added_text,
    block_list_text,
    block_removed_text,
    channel_allowed_text,
    channel_disallowed_text,
    channels_list_text,
    describe,
    moderation_log_text,
    review_channel_text,
    review_decided_text,
    review_denied_text,
    review_fields,
    review_job_failed_text,
    review_title,
    spoilers_text,
)
from bot.models import GenerationResult, Requester, Review
from bot.moderation.screening import Moderation, ModerationAdmin, split_block_term

if TYPE_CHECKING:
    from adapters.slack.handlers import SlackHandlers

__all__ = [
    "APPROVE_ACTION_ID",
    "ASK_ACTION_ID",
    "DENY_ACTION_ID",
    "SlackModeration",
    "refusal_blocks",
    "review_blocks",
]

log = logging.getLogger(__name__)

ASK_ACTION_ID = "imagine_review_ask"
APPROVE_ACTION_ID = "imagine_review_approve"
DENY_ACTION_ID = "imagine_review_deny"
PLATFORM = "slack"
_MAX_SECTION = 2900  # Slack allows 3000 characters in a section's text
_MAX_REPLY = 3900


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


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


def review_blocks(review: Review, *, decided: str | None = None) -> list[dict[str, Any]]:
    """What the admins see: the prompt, who asked where, the rule that matched; Approve and
    Deny until decided, then ``decided`` in their place."""
    lines = [f"*{escape(review_title(review))}*", f"> {escape(_clip(review.request.prompt, 2000))}"]
    fields = review_fields(
        review,
        user=f"<@{review.requester.user_id}>",
        channel=f"<#{review.requester.channel_id}>",
    )
    for name, value in fields:
        lines.append(f"*{escape(name)}:* {value if name in _MARKUP_FIELDS else escape(value)}")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip("\n".join(lines), 2900)}},
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


class SlackModeration:
    """Registered on the Bolt app by ``SlackHandlers`` (before its catch-all action
    listener); uses its Web API client, ``tell``, ``is_admin``, ``can_post`` and ``deliver``."""

    def __init__(self, handlers: SlackHandlers, moderation: Moderation) -> None:
        self.handlers = handlers
        self.moderation = moderation
        self.admin = ModerationAdmin(moderation)

    def register(self, app: AsyncApp) -> None:
        app.action(ASK_ACTION_ID)(self.on_ask)
        app.action(re.compile(f"^({APPROVE_ACTION_ID}|{DENY_ACTION_ID})$"))(self.on_decide)

    # -- the refusal ----------------------------------------------------------------------------

    async def refused(
        self, origin: Origin, err: PromptRefusedError | ChannelNotAllowedError
    ) -> None:
        """The refusal, ephemeral, with an "Ask an admin" button carrying the review id; or,
        outside the allowed channels, links to them."""
        text = describe(err)
        if isinstance(err, ChannelNotAllowedError):
            log.info("request from %s outside the allowed channels", origin.user_id)
            await self.handlers.tell(origin, text, markup=True)  # our channel links only
            return
        if err.review_id is None:
            await self.handlers.tell(origin, text)
            return
        log.info("request from %s refused (%s)", origin.user_id, err.source)
        await self.handlers.tell(origin, text, blocks=refusal_blocks(text, err.review_id))

    # -- listeners ------------------------------------------------------------------------------

    async def on_ask(self, ack: Callable[[], Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()
        if not self._first_time(body):
            return
        origin = from_action(body)
        review_id = _value(body)
        self.handlers.spawn(origin, self._ask(review_id, origin), name=f"slack-ask-{review_id}")

    async def on_decide(self, ack: Callable[[], Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()
        if not self._first_time(body):
            return
        origin = from_action(body)
        actions = body.get("actions") or [{}]
        approve = actions[0].get("action_id") == APPROVE_ACTION_ID
        container = body.get("container") or {}
        message_ts = str(container.get("message_ts") or (body.get("message") or {}).get("ts"))
        review_id = _value(body)
        self.handlers.spawn(
            origin,
            self._decide(review_id, origin, approve, message_ts),
            name=f"slack-decide-{review_id}",
        )

    def _first_time(self, body: dict[str, Any]) -> bool:
        """False for a click this process already took (a redelivered envelope)."""
        trigger = body.get("trigger_id")
        return self.handlers.first_time(f"slack:{trigger}" if trigger else None)

    # -- Ask an admin ---------------------------------------------------------------------------

    async def _ask(self, review_id: str, origin: Origin) -> None:
        handlers = self.handlers
        requester = origin.requester()
        rules = await self.moderation.rules(PLATFORM, origin.team_id)
        review_channel = rules.review_channel_id
        if review_channel is not None:
            target = Origin(team_id=origin.team_id, channel_id=review_channel, user_id="")
            if not await handlers.can_post(target):
                log.error(
                    "review %s: the bot is not in the review channel %s; /invite it there",
                    review_id,
                    review_channel,
                )
                await handlers.tell(origin, REVIEW_POST_FAILED)
                return
        try:
            review = await self.moderation.request_review(review_id, requester)
        except BotError as err:
            log.info("review %s: request refused: %s", review_id, type(err).__name__)
            await handlers.tell(origin, describe(err))
            return
        channel_id = review_channel
        if channel_id is None:  # set in between; request_review checked there is one now
            channel_id = (await self.moderation.rules(PLATFORM, origin.team_id)).review_channel_id
        if channel_id is None:
            await self.moderation.withdraw_request(review_id)
            await handlers.tell(origin, REVIEW_POST_FAILED)
            return
        try:
            await handlers.client.chat_postMessage(
                channel=channel_id,
                text=review_title(review),
                blocks=review_blocks(review),
            )
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.error("review %s: cannot post in the review channel: %s", review_id, exc)
            await self.moderation.withdraw_request(review_id)
            await handlers.tell(origin, REVIEW_POST_FAILED)
            return
        log.info("review %s: sent to the review channel %s", review_id, channel_id)
        await self.handlers.tell(origin, REVIEW_SENT, replace=True)

    # -- Approve / Deny -------------------------------------------------------------------------

    async def _decide(self, review_id: str, origin: Origin, approve: bool, message_ts: str) -> None:
        handlers = self.handlers
        actor = origin.requester(is_admin=await handlers.is_admin(origin))
        try:
            review = await self.moderation.decide(review_id, actor, approve)
        except BotError as err:
            log.info("review %s: decision by %s refused: %s", review_id, actor.user_id, err)
            await handlers.tell(origin, describe(err))
            return
        log.info("review %s: %s by %s", review_id, review.state, actor.user_id)
        decided = review_decided_text(approve, f"<@{actor.user_id}>")
        try:
            await handlers.client.chat_update(
                channel=origin.channel_id,
                ts=message_ts,
                text=decided,
                blocks=review_blocks(review, decided=decided),
            )
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("review %s: could not update the review message: %s", review_id, exc)
        user = _origin_of(review.requester)
        if not approve:
            await handlers.tell(user, review_denied_text(f"<@{user.user_id}>"), markup=True)
            return
        await self._run_approved(review, user, origin)

    async def _run_approved(self, review: Review, user: Origin, admin: Origin) -> None:
        """The approved job, for the user who asked (charged to them), uploaded into the
        channel they asked in, followed by the Reroll button."""
        handlers = self.handlers

        async def deliver(result: GenerationResult) -> None:
            await handlers.deliver(result, user)

        try:
            result = await handlers.service.generate(
                review.request,
                review.requester,
                event_id=f"review:{review.review_id}",
                deliver=deliver,
                screen=False,
            )
        except DuplicateRequestError as err:
            log.info("review %s: already handled by job %s", review.review_id, err.job_id)
            return
        except DeliveryError as err:
            if not err.notified:
                await handlers.tell(user, describe(err))
            await handlers.tell(admin, review_job_failed_text(describe(err)))
            return
        except BotError as err:
            log.info("review %s: approved job failed: %s", review.review_id, type(err).__name__)
            await handlers.tell(user, describe(err))
            await handlers.tell(admin, review_job_failed_text(describe(err)))
            return
        try:
            await handlers.client.chat_postMessage(
                channel=user.channel_id, text=REROLL_HINT, blocks=reroll_blocks(result.job_id)
            )
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("job %s: could not post the Reroll button: %s", result.job_id, exc)

    # -- admin commands -------------------------------------------------------------------------

    async def admin_command(self, actor: Requester, command: mc.ModerationCommand) -> str:
        """Run one moderation admin command; the answer is Slack mrkdwn (user text escaped).
        ``ModerationAdmin`` refuses non-admins (``PermissionDeniedError``)."""
        admin = self.admin
        if isinstance(command, mc.BlockAdd):
            pattern, value = split_block_term(command.term)
            if pattern:
                added = await admin.block_add_pattern(actor, value)
            else:
                added = await admin.block_add(actor, value)
            return escape(block_added_text(value, pattern=pattern, added=added))
        if isinstance(command, mc.BlockRemove):
            pattern, value = split_block_term(command.term)
            removed = await admin.block_remove(actor, value)
            return escape(block_removed_text(value, pattern=pattern, removed=removed))
        if isinstance(command, mc.BlockList):
            return escape(block_list_text(await admin.block_list(actor)))
        if isinstance(command, mc.ReviewChannel):
            await admin.set_review_channel(actor, command.channel_id)
            where = None if command.channel_id is None else f"<#{command.channel_id}>"
            return review_channel_text(where)
        if isinstance(command, mc.ChannelsAllow):
            added = await admin.allow_channel(actor, command.channel_id)
            return channel_allowed_text(f"<#{command.channel_id}>", added=added)
        if isinstance(command, mc.ChannelsRemove):
            removed = await admin.disallow_channel(actor, command.channel_id)
            return channel_disallowed_text(f"<#{command.channel_id}>", removed=removed)
        if isinstance(command, mc.ChannelsList):
            rules = await admin.block_list(actor)
            return channels_list_text([f"<#{c}>" for c in rules.allowed_channel_ids])
        if isinstance(command, mc.Spoilers):
            await admin.set_spoilers(actor, command.on)
            return f"{spoilers_text(command.on)} {SPOILERS_DISCORD_ONLY}"
        if isinstance(command, mc.ModerationLog):
            entries = await admin.log(actor, command.days)
            text = moderation_log_text(
                entries,
                days=command.days,
                user_label=lambda user_id: f"<@{user_id}>",
                channel_label=lambda channel_id: f"<#{channel_id}>",
                quote=escape,
            )
            return _clip(text, _MAX_REPLY)
        raise AssertionError(f"unhandled command {command!r}")


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
