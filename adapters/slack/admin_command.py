"""``/imagine admin ...``: who may run it, then the quota commands here and the moderation
ones in ``moderation_admin.py``."""

from __future__ import annotations

import logging

from adapters.slack import grammar as cmd
from adapters.slack.chat import SlackChat
from adapters.slack.failure import tell_failure
from adapters.slack.help import ADMIN_HELP, ADMIN_HELP_HINT
from adapters.slack.moderation_admin import ModerationCommands
from adapters.slack.moderation_grammar import is_moderation_command
from adapters.slack.render import Origin, code
from adapters.slack.upload import upload_usage_csv
from bot.admin import QuotaAdmin, scope_in
from bot.errors import BotError, PermissionDeniedError
from bot.limit import LimitName
from bot.messages import (
    ADMIN_COMMANDS_ACTION,
    USAGE_CSV_FAILED,
    USAGE_CSV_SENT,
    WORKSPACE_DEFAULT,
    admin_usage_error,
    quota_cleared_text,
    quota_set_text,
    spend_cap_text,
    usage_summary,
)
from bot.models import Requester, Scope

__all__ = ["AdminCommands"]

log = logging.getLogger(__name__)


class AdminCommands:
    """``moderation`` is ``None`` when the bot runs without moderation."""

    def __init__(
        self, chat: SlackChat, admin: QuotaAdmin, moderation: ModerationCommands | None
    ) -> None:
        self.chat = chat
        self.admin = admin
        self.moderation = moderation

    async def run(self, request: cmd.Command, origin: Origin) -> None:
        chat = self.chat
        if not isinstance(request, cmd.Admin):
            await chat.tell(origin, code(ADMIN_HELP))
            return
        # Checked here on the server side, before the arguments are even read, and again by
        # QuotaAdmin and the moderation service (actor.is_admin).
        actor = origin.requester(is_admin=await chat.is_admin(origin))
        if not actor.is_admin:
            await tell_failure(chat, origin, PermissionDeniedError(ADMIN_COMMANDS_ACTION))
            return
        try:
            command = request.parse()
        except BotError as err:
            await chat.tell(origin, admin_usage_error(err, hint=ADMIN_HELP_HINT))
            return
        try:
            text = await self._answer(actor, command, origin)
        except BotError as err:
            await tell_failure(chat, origin, err)
            return
        await chat.tell(origin, text, markup=True)

    async def _answer(self, actor: Requester, command: cmd.AdminCommand, origin: Origin) -> str:
        if isinstance(command, cmd.SetQuota):
            return await self._set_quota(actor, command)
        if isinstance(command, cmd.ClearQuota):
            await self.admin.clear_quota(actor, _scope(actor, command.user_id))
            return quota_cleared_text(_who(command.user_id))
        if isinstance(command, cmd.SpendCap):
            await self.admin.set_spend_cap(actor, command.usd_micros)
            return spend_cap_text(command.usd_micros)
        if isinstance(command, cmd.Usage):
            return await self._usage(actor, command.days, origin)
        if self.moderation is not None and is_moderation_command(command):
            return await self.moderation.run(actor, command)
        raise AssertionError(f"unhandled command {command!r}")

    async def _set_quota(self, actor: Requester, command: cmd.SetQuota) -> str:
        """Only the limits named change; ``none`` unsets one (the next scope's value applies)."""
        scope = _scope(actor, command.user_id)
        changes: dict[LimitName, int | None] = {LimitName(name): None for name in command.unset}
        for name in LimitName.settable():
            value = getattr(command, name)
            if value is not None:
                changes[name] = value
        limits = await self.admin.change_quota(actor, scope, changes)
        return quota_set_text(_who(command.user_id), limits)

    async def _usage(self, actor: Requester, days: int, origin: Origin) -> str:
        """The summary as the reply; the CSV as a file in the admin's DM with the bot."""
        report = await self.admin.usage_report(actor, days)
        summary = usage_summary(report, user_label=lambda user_id: f"<@{user_id}>")
        sent = await upload_usage_csv(self.chat.client, origin.user_id, report, comment=summary)
        return f"{summary}\n{USAGE_CSV_SENT if sent else USAGE_CSV_FAILED}"


def _scope(actor: Requester, user_id: str | None) -> Scope:
    """A user's own limits, or (``None``) the workspace default, in the actor's workspace."""
    return scope_in(actor, user_id=user_id)


def _who(user_id: str | None) -> str:
    return f"<@{user_id}>" if user_id else WORKSPACE_DEFAULT
