"""The listeners for a member's requests: ``/imagine``, an ``@mention``, and the Reroll,
Try again and Cancel clicks. Each acknowledges at once, drops a redelivered envelope, and
hands the work to ``SlackChat.spawn``."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from slack_bolt.async_app import AsyncApp

from adapters.slack import grammar as cmd
from adapters.slack.admin_command import AdminCommands
from adapters.slack.chat import SlackChat
from adapters.slack.help import ADMIN_HELP_HINT
from adapters.slack.job import JobRunner
from adapters.slack.notice import RETRY_ACTION_ID
from adapters.slack.progress import CANCEL_ACTION_ID, QueueNotes
from adapters.slack.render import (
    REROLL_ACTION_ID,
    Origin,
    code,
    event_id,
    from_action,
    from_mention,
    from_slash_command,
    plain_text,
    strip_bot_mention,
)
from bot.errors import BotError
from bot.messages import admin_usage_error, allowance_text, help_text, models_table

__all__ = ["RequestListener", "on_error", "on_unknown_action"]

log = logging.getLogger(__name__)

Ack = Callable[[], Awaitable[None]]
# What a job button starts: (job id, origin, event key).
Start = Callable[[str, Origin, str | None], Coroutine[Any, Any, None]]


class RequestListener:
    """Turns a member's request into a job, an answer or an admin command."""

    def __init__(
        self, chat: SlackChat, jobs: JobRunner, notes: QueueNotes, admin: AdminCommands
    ) -> None:
        self.chat = chat
        self.jobs = jobs
        self.notes = notes
        self.admin = admin

    def register(self, app: AsyncApp) -> None:
        app.command(re.compile(r"^/imagine"))(self.on_command)
        app.event("app_mention")(self.on_mention)
        app.action(REROLL_ACTION_ID)(self._job_button(self.jobs.reroll))
        app.action(RETRY_ACTION_ID)(self._job_button(self._retry))
        app.action(CANCEL_ACTION_ID)(self._job_button(self._cancel))

    async def on_command(self, ack: Ack, body: dict[str, Any], context: Any) -> None:
        await ack()
        self.chat.note_bot_user(context)
        origin = from_slash_command(body)
        # A slash command has no event id; its trigger_id is unique per invocation and is
        # the same in a redelivered envelope.
        key = event_id(body.get("trigger_id"))
        if not self.chat.first_time(key):
            log.info("ignoring a redelivered slash command (%s)", key)
            return
        text = str(body.get("text") or "")
        self.chat.spawn(origin, self._command(text, origin, key), name=f"slack-{key}")

    async def on_mention(self, ack: Ack, body: dict[str, Any], context: Any) -> None:
        await ack()
        self.chat.note_bot_user(context)
        key = event_id(body.get("event_id"))
        if not self.chat.first_time(key):
            log.info("ignoring a redelivered app_mention (%s)", key)
            return
        origin = from_mention(body)
        raw = str((body.get("event") or {}).get("text") or "")
        text = strip_bot_mention(raw, self.chat.bot_user_id)
        self.chat.spawn(origin, self._command(text, origin, key), name=f"slack-{key}")

    def _job_button(self, start: Start) -> Callable[[Ack, dict[str, Any], Any], Awaitable[None]]:
        """A listener for a button whose value is a job id: ack, drop a redelivery, then
        ``start`` the work."""

        async def on_click(ack: Ack, body: dict[str, Any], context: Any) -> None:
            await ack()
            self.chat.note_bot_user(context)
            key = event_id(body.get("trigger_id"))
            if not self.chat.first_time(key):
                return
            actions = body.get("actions") or [{}]
            job_id, origin = str(actions[0].get("value") or ""), from_action(body)
            self.chat.spawn(origin, start(job_id, origin, key), name=f"slack-{key}")

        return on_click

    async def _retry(self, job_id: str, origin: Origin, key: str | None) -> None:
        await self.jobs.reroll(job_id, origin, key, again=True)

    async def _cancel(self, job_id: str, origin: Origin, key: str | None) -> None:
        await self.notes.cancel(job_id, origin)

    async def _command(self, text: str, origin: Origin, key: str | None) -> None:
        """``text`` as Slack sent it (mentions still escaped as ``<@U…|name>``)."""
        chat = self.chat
        try:
            command = cmd.parse_command(text)
        except BotError as err:
            await chat.tell(origin, admin_usage_error(err, hint=ADMIN_HELP_HINT))
            return
        catalog = chat.service.catalog
        if isinstance(command, cmd.Generate):
            await self.jobs.imagine(plain_text(command.text), origin, key)
        elif isinstance(command, cmd.Help):
            await chat.tell(origin, code(help_text(catalog)))
        elif isinstance(command, cmd.Models):
            await chat.tell(origin, code(models_table(catalog, default=catalog.default)))
        elif isinstance(command, cmd.Quota):
            allowance = await chat.service.allowance(origin.requester())
            await chat.tell(origin, allowance_text(allowance))
        else:
            await self.admin.run(command, origin)


async def on_unknown_action(ack: Ack, body: dict[str, Any]) -> None:
    """A button this version does not know (an older or newer release's) is acked, so Slack
    does not show an error or redeliver it."""
    await ack()
    actions = body.get("actions") or [{}]
    log.info("ignoring an unknown Slack action %r", actions[0].get("action_id"))


async def on_error(error: Exception, body: Any) -> None:
    log.error("Slack listener failed: %s", error, exc_info=error)
