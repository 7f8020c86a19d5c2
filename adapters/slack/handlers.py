"""What the bot does with each Slack request: ``/imagine``, an ``@mention``, a Reroll click.

Every listener acknowledges at once (Slack allows 3 s) and hands the work to a task that
this object tracks, so shutdown can cancel it (a cancelled job is refunded by the service).
Results are uploaded with ``files_upload_v2``; notes and fixable errors are ephemeral.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import commands as cmd
from adapters.slack.api_error import error_code
from adapters.slack.moderation import SlackModeration
from adapters.slack.moderation_commands import is_moderation_command
from adapters.slack.notice import RETRY_ACTION_ID, reach, tell_interrupted
from adapters.slack.progress import CANCEL_ACTION_ID, QueueNote, QueueNotes
from adapters.slack.render import (
    REROLL_ACTION_ID,
    Origin,
    escape,
    file_uploads,
    from_action,
    from_mention,
    from_slash_command,
    initial_comment,
    plain_text,
    reroll_blocks,
    strip_bot_mention,
)
from adapters.slack.response import respond
from bot.admin import QuotaAdmin, listed_admin, scope_in, to_csv
from bot.errors import (
    BotError,
    ChannelNotAllowedError,
    DeliveryError,
    DuplicateRequestError,
    JobCancelledError,
    PermissionDeniedError,
    PromptRefusedError,
    ProviderAuthError,
)
from bot.messages import (
    ADMIN_COMMANDS_ACTION,
    ALREADY_WORKING,
    DELIVERY_FAILED,
    REROLL_HINT,
    SLACK_ADMIN_HELP,
    USAGE_CSV_FAILED,
    USAGE_CSV_SENT,
    WORKSPACE_DEFAULT,
    admin_usage_error,
    allowance_text,
    describe,
    help_text,
    is_operator_fault,
    models_table,
    not_in_channel_text,
    progress_text,
    quota_cleared_text,
    quota_set_text,
    spend_cap_text,
    usage_summary,
)
from bot.models import GenerationRequest, GenerationResult, Requester, Scope
from bot.service import Deliver, ImageService
from bot.store.ledger import Interrupted

__all__ = ["SlackHandlers"]

log = logging.getLogger(__name__)

# Errors that mean "the bot cannot post in this conversation".
NOT_IN_CHANNEL_ERRORS = frozenset(
    {"not_in_channel", "channel_not_found", "invalid_channel", "no_permission"}
)
_SEEN_EVENTS = 10_000
CLOSE_GRACE_S = 10.0
_MEMBERSHIP_TTL_S = 300.0


class SlackHandlers:
    """Registers the listeners on a Bolt app and runs the work they start."""

    def __init__(
        self,
        *,
        service: ImageService,
        admin: QuotaAdmin,
        client: AsyncWebClient,
        session: aiohttp.ClientSession,
        admin_user_ids: frozenset[str] = frozenset(),
    ) -> None:
        self.service = service
        self.admin = admin
        self.client = client
        self.session = session
        self.admin_user_ids = admin_user_ids
        self.bot_user_id = ""
        self.team_id = ""  # the workspace the bot token belongs to (auth.test)
        self._tasks: set[asyncio.Task[None]] = set()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._members: dict[str, float] = {}
        # Refusals' "Ask an admin", review posts, Approve / Deny, moderation admin commands.
        moderation = service.moderation
        self.moderation = None if moderation is None else SlackModeration(self, moderation)
        # Queued jobs' notes (position, ETA, Cancel) and the Cancel click.
        self.notes = QueueNotes(
            service=service, client=client, session=session, is_admin=self.is_admin, tell=self.tell
        )

    # -- wiring ------------------------------------------------------------------------------

    def register(self, app: AsyncApp) -> None:
        app.command(re.compile(r"^/imagine"))(self.on_command)
        app.event("app_mention")(self.on_mention)
        app.action(REROLL_ACTION_ID)(self.on_reroll)
        app.action(RETRY_ACTION_ID)(self.on_retry)
        app.action(CANCEL_ACTION_ID)(self.on_cancel)
        if self.moderation is not None:
            self.moderation.register(app)  # before the catch-all below
        # Buttons this version does not know (an older or newer release's) are acked, so
        # Slack does not show an error or redeliver them.
        app.action(re.compile(r".*"))(self.on_unknown_action)
        app.error(self.on_error)

    async def tell_interrupted(self, notice: Interrupted) -> bool:
        """A member whose job a restart interrupted (``adapters.notice``)."""
        return await tell_interrupted(self.client, self.session, notice)

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

    # -- listeners: ack first, then work -------------------------------------------------------

    async def on_command(
        self, ack: Callable[[], Awaitable[None]], body: dict[str, Any], context: Any
    ) -> None:
        await ack()
        self._note_bot_user(context)
        origin = from_slash_command(body)
        # A slash command has no event id; its trigger_id is unique per invocation and is
        # the same in a redelivered envelope.
        event_id = _event_id(body.get("trigger_id"))
        if not self.first_time(event_id):
            log.info("ignoring a redelivered slash command (%s)", event_id)
            return
        text = str(body.get("text") or "")
        self.spawn(origin, self._command(text, origin, event_id), name=f"slack-{event_id}")

    async def on_mention(
        self, ack: Callable[[], Awaitable[None]], body: dict[str, Any], context: Any
    ) -> None:
        await ack()
        self._note_bot_user(context)
        event_id = _event_id(body.get("event_id"))
        if not self.first_time(event_id):
            log.info("ignoring a redelivered app_mention (%s)", event_id)
            return
        origin = from_mention(body)
        raw = str((body.get("event") or {}).get("text") or "")
        text = strip_bot_mention(raw, self.bot_user_id)
        self.spawn(origin, self._command(text, origin, event_id), name=f"slack-{event_id}")

    async def on_reroll(
        self, ack: Callable[[], Awaitable[None]], body: dict[str, Any], context: Any
    ) -> None:
        click = await self._job_button(ack, body, context)
        if click is not None:
            job_id, origin, event_id = click
            self.spawn(origin, self._reroll(job_id, origin, event_id), name=f"slack-{event_id}")

    async def on_retry(
        self, ack: Callable[[], Awaitable[None]], body: dict[str, Any], context: Any
    ) -> None:
        click = await self._job_button(ack, body, context)
        if click is not None:
            job_id, origin, event_id = click
            self.spawn(
                origin, self._reroll(job_id, origin, event_id, again=True), name=f"slack-{event_id}"
            )

    async def on_cancel(
        self, ack: Callable[[], Awaitable[None]], body: dict[str, Any], context: Any
    ) -> None:
        click = await self._job_button(ack, body, context)
        if click is not None:
            job_id, origin, event_id = click
            self.spawn(origin, self.notes.cancel(job_id, origin), name=f"slack-{event_id}")

    async def _job_button(
        self, ack: Callable[[], Awaitable[None]], body: dict[str, Any], context: Any
    ) -> tuple[str, Origin, str | None] | None:
        """Ack a click on a button whose value is a job id; ``None`` for a redelivery."""
        await ack()
        self._note_bot_user(context)
        event_id = _event_id(body.get("trigger_id"))
        if not self.first_time(event_id):
            return None
        actions = body.get("actions") or [{}]
        return str(actions[0].get("value") or ""), from_action(body), event_id

    async def on_unknown_action(
        self, ack: Callable[[], Awaitable[None]], body: dict[str, Any]
    ) -> None:
        await ack()
        actions = body.get("actions") or [{}]
        log.info("ignoring an unknown Slack action %r", actions[0].get("action_id"))

    async def on_error(self, error: Exception, body: Any) -> None:
        log.error("Slack listener failed: %s", error, exc_info=error)

    def _not_in_channel(self) -> str:
        mention = f"<@{self.bot_user_id}>" if self.bot_user_id else "@imagine-bot"
        return not_in_channel_text(mention)

    def _note_bot_user(self, context: Any) -> None:
        bot_user_id = getattr(context, "bot_user_id", None)
        if bot_user_id:
            self.bot_user_id = str(bot_user_id)

    # -- the work ---------------------------------------------------------------------------------

    async def _command(self, text: str, origin: Origin, event_id: str | None) -> None:
        """``text`` as Slack sent it (mentions still escaped as ``<@U…|name>``)."""
        try:
            command = cmd.parse_command(text)
        except BotError as err:
            await self.tell(origin, admin_usage_error(err))
            return
        if isinstance(command, cmd.Generate):
            await self._imagine(plain_text(command.text), origin, event_id)
        elif isinstance(command, cmd.Help):
            await self.tell(origin, _code(help_text(self.service.catalog)))
        elif isinstance(command, cmd.Models):
            catalog = self.service.catalog
            await self.tell(origin, _code(models_table(catalog, default=catalog.default)))
        elif isinstance(command, cmd.Quota):
            allowance = await self.service.allowance(origin.requester())
            await self.tell(origin, allowance_text(allowance))
        else:
            await self._admin(command, origin)

    async def _imagine(self, text: str, origin: Origin, event_id: str | None) -> None:
        try:
            request = self.service.parse(text)
        except BotError as err:
            await self.tell(origin, describe(err))
            return
        if not await self.can_post(origin):
            await self.tell(origin, self._not_in_channel(), markup=True)
            return
        note = self.notes.note(origin, running_text=self._generating(request))
        requester = origin.requester()
        await self._run(
            origin,
            self.service.generate(
                request,
                requester,
                event_id=event_id,
                deliver=self._deliverer(origin, note),
                progress=note.feed,
                reach=reach(origin),
            ),
            note,
        )

    async def _reroll(
        self, job_id: str, origin: Origin, event_id: str | None, *, again: bool = False
    ) -> None:
        """Reroll (a new seed), or with ``again`` Try again (the interrupted job as it was)."""
        action = "retry" if again else "reroll"
        try:
            record = await self.service.job(job_id)
            first = await self.service.first_click(origin.requester(), action, job_id)
        except BotError as err:
            await self._failed(origin, err)
            return
        if not first:
            log.info("job %s: repeated %s click by %s ignored", job_id, action, origin.user_id)
            await self.tell(origin, ALREADY_WORKING)
            return
        if not await self.can_post(origin):
            await self.tell(origin, self._not_in_channel(), markup=True)
            return
        note = self.notes.note(origin, running_text=self._generating(record.request))
        start = self.service.retry if again else self.service.reroll
        await self._run(
            origin,
            start(
                job_id,
                origin.requester(),
                event_id=event_id,
                deliver=self._deliverer(origin, note),
                progress=note.feed,
                reach=reach(origin),
            ),
            note,
        )

    def _deliverer(self, origin: Origin, note: QueueNote | None = None) -> Deliver:
        async def deliver(result: GenerationResult) -> None:
            if note is not None:
                await note.close(flush=True)  # the note comes before the images
            await self.deliver(result, origin)

        return deliver

    async def _run(
        self, origin: Origin, job: Awaitable[GenerationResult], note: QueueNote | None = None
    ) -> None:
        """Await a job whose upload is part of it (the service charges only after it), then
        post the Reroll button: its appearance means the job is complete and charged.
        ``note`` shows the job's progress until then."""
        try:
            try:
                result = await job
            finally:
                if note is not None:
                    await note.close(flush=True)
        except JobCancelledError as err:
            if note is None or not note.cancel_claimed:  # else the Cancel click answered
                await self._failed(origin, err, note)
            return
        except DuplicateRequestError as dup:
            log.info("event already handled by job %s; nothing more to do", dup.job_id)
            return
        except DeliveryError as err:
            if not err.notified:
                await self.tell(origin, describe(err))
            return
        except BotError as err:
            await self._failed(origin, err, note)
            return
        except Exception as exc:
            log.exception("Slack job failed unexpectedly")
            await self._failed(origin, exc, note)
            return
        await self._post_reroll_button(result, origin)

    def _generating(self, request: GenerationRequest) -> str:
        spec = self.service.catalog.get(request.model)
        return progress_text(request, spec.label)

    async def _failed(
        self, origin: Origin, err: BaseException, note: QueueNote | None = None
    ) -> None:
        if isinstance(err, ProviderAuthError):
            log.error("image provider rejected our credentials: %s", err)
        elif is_operator_fault(err):
            log.warning("job for %s failed: %s: %s", origin.user_id, type(err).__name__, err)
        else:
            log.info("request from %s refused: %s", origin.user_id, type(err).__name__)
        if isinstance(err, PromptRefusedError | ChannelNotAllowedError) and self.moderation:
            await self.moderation.refused(origin, err)  # with "Ask an admin", or the channels
            return
        # A note still offering Cancel is replaced by the outcome.
        if note is None or not await note.settle(describe(err)):
            await self.tell(origin, describe(err))

    # -- delivery ---------------------------------------------------------------------------------

    async def deliver(self, result: GenerationResult, origin: Origin) -> None:
        """Upload the images into the channel (or thread) with the details as the initial
        comment. A failed upload tells the user and raises ``DeliveryError``, so the service
        refunds the job."""
        try:
            await self.client.files_upload_v2(
                file_uploads=file_uploads(result),
                channel=origin.channel_id,
                initial_comment=initial_comment(result, user_id=origin.user_id),
                thread_ts=origin.thread_ts,
            )
        except SlackApiError as exc:
            error = error_code(exc)
            if error in NOT_IN_CHANNEL_ERRORS:
                self._members.pop(origin.channel_id, None)
                log.warning(
                    "job %s: cannot post in %s (%s)", result.job_id, origin.channel_id, error
                )
                await self.tell(origin, self._not_in_channel(), markup=True)
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

    async def _post_reroll_button(self, result: GenerationResult, origin: Origin) -> None:
        """A message of its own, since an upload cannot carry blocks."""
        try:
            await self.client.chat_postMessage(
                channel=origin.channel_id,
                thread_ts=origin.thread_ts,
                text=REROLL_HINT,
                blocks=reroll_blocks(result.job_id),
            )
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            # The images are delivered; only the button is missing.
            log.warning("job %s: could not post the Reroll button: %s", result.job_id, exc)

    async def can_post(self, origin: Origin) -> bool:
        """Whether the bot is a member of the conversation, so the upload will work. A mention
        proves membership; otherwise ``conversations.info`` says (cached a few minutes).
        When Slack cannot tell (e.g. a missing ``*:read`` scope) we try anyway."""
        channel = origin.channel_id
        if origin.bot_is_member:
            return True
        if self._members.get(channel, 0.0) > time.monotonic():
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
            self._members[channel] = time.monotonic() + _MEMBERSHIP_TTL_S
        return member

    async def tell(
        self,
        origin: Origin,
        text: str,
        *,
        markup: bool = False,
        blocks: list[dict[str, Any]] | None = None,
        replace: bool = False,
    ) -> None:
        """An ephemeral message to the requester: through the command's or button's
        ``response_url`` when there is one (it works even where the bot is not a member),
        else ``chat.postEphemeral`` (in the thread, when the thread exists). Plain ``text``
        is escaped (it may quote what the user typed); ``markup`` sends it as Slack mrkdwn
        (mentions we built). ``replace`` swaps the message whose button was clicked."""
        if not markup:
            text = escape(text)
        if (
            origin.response_url
            and origin.note_thread_ts is None
            and await respond(
                self.session,
                origin.response_url,
                text,
                blocks=blocks,
                replace_original=replace if origin.interactive else None,
            )
        ):
            return
        try:
            await self.client.chat_postEphemeral(
                channel=origin.channel_id,
                user=origin.user_id,
                text=text,
                blocks=blocks,
                thread_ts=origin.note_thread_ts,
            )
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not tell %s: %s", origin.user_id, exc)

    # -- admin ------------------------------------------------------------------------------------

    async def is_admin(self, origin: Origin) -> bool:
        """An admin of the workspace the request came from: listed in ``SLACK_ADMIN_USER_IDS``
        for it, or an admin/owner there according to ``users.info``. The bot's token answers
        for its own workspace only, so ``users.info`` counts only in that one."""
        user_id = origin.user_id
        if listed_admin(
            self.admin_user_ids,
            workspace_id=origin.team_id,
            home_workspace=self.team_id,
            user_id=user_id,
        ):
            return True
        if not self.team_id or origin.team_id != self.team_id:
            log.info("admin check for %s in workspace %s: not this bot's", user_id, origin.team_id)
            return False
        try:
            response = await self.client.users_info(user=user_id)
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("users.info for %s failed (%s): treating as not an admin", user_id, exc)
            return False
        user = response.get("user") or {}
        return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))

    async def _admin(self, request: cmd.Command, origin: Origin) -> None:
        if not isinstance(request, cmd.Admin):
            await self.tell(origin, _code(SLACK_ADMIN_HELP))
            return
        # Checked here on the server side, before the arguments are even read, and again by
        # QuotaAdmin and the moderation service (actor.is_admin).
        actor = origin.requester(is_admin=await self.is_admin(origin))
        if not actor.is_admin:
            await self._failed(origin, PermissionDeniedError(ADMIN_COMMANDS_ACTION))
            return
        try:
            command = request.parse()
        except BotError as err:
            await self.tell(origin, admin_usage_error(err))
            return
        try:
            if isinstance(command, cmd.SetQuota):
                text = await self._set_quota(actor, command)
            elif isinstance(command, cmd.ClearQuota):
                scope = _scope(actor, command.user_id)
                await self.admin.clear_quota(actor, scope)
                text = quota_cleared_text(_who(command.user_id))
            elif isinstance(command, cmd.SpendCap):
                await self.admin.set_spend_cap(actor, command.usd_micros)
                text = spend_cap_text(command.usd_micros)
            elif isinstance(command, cmd.Usage):
                text = await self._usage(actor, command.days, origin)
            elif self.moderation is not None and is_moderation_command(command):
                text = await self.moderation.admin_command(actor, command)
            else:
                raise AssertionError(f"unhandled command {command!r}")
        except BotError as err:
            await self._failed(origin, err)
            return
        await self.tell(origin, text, markup=True)

    async def _set_quota(self, actor: Requester, command: cmd.SetQuota) -> str:
        """Only the limits named change; ``none`` unsets one (the next scope's value applies)."""
        scope = _scope(actor, command.user_id)
        current = await self.admin.quota(actor, scope)
        changes: dict[str, int | None] = {name: None for name in command.unset}
        for name in ("images_per_day", "images_per_month", "usd_micros_per_month"):
            value = getattr(command, name)
            if value is not None:
                changes[name] = value
        limits = replace(current, **changes)
        await self.admin.set_quota(actor, scope, limits)
        return quota_set_text(_who(command.user_id), limits)

    async def _usage(self, actor: Requester, days: int, origin: Origin) -> str:
        """The summary as the reply; the CSV as a file in the admin's DM with the bot."""
        report = await self.admin.usage_report(actor, days)
        summary = usage_summary(report, user_label=lambda user_id: f"<@{user_id}>")
        try:
            opened = await self.client.conversations_open(users=origin.user_id)
            dm = str((opened.get("channel") or {}).get("id") or "")
            filename = f"imagine-usage-{report.since:%Y%m%d}-{report.until:%Y%m%d}.csv"
            await self.client.files_upload_v2(
                channel=dm,
                content=to_csv(report).encode(),
                filename=filename,
                title=filename,
                initial_comment=summary,
            )
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not send the usage CSV to %s: %s", origin.user_id, exc)
            return f"{summary}\n{USAGE_CSV_FAILED}"
        return f"{summary}\n{USAGE_CSV_SENT}"


def _scope(actor: Requester, user_id: str | None) -> Scope:
    """A user's own limits, or (``None``) the workspace default, in the actor's workspace."""
    return scope_in(actor, user_id=user_id)


def _who(user_id: str | None) -> str:
    return f"<@{user_id}>" if user_id else WORKSPACE_DEFAULT


def _event_id(platform_id: object) -> str | None:
    """The ledger's idempotency key for a Slack id (unique across platforms)."""
    return f"slack:{platform_id}" if platform_id else None


def _code(text: str) -> str:
    return f"```{text}```"
