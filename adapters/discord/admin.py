"""``/imagine-admin``: quotas, the server's spend cap and usage reports.

Discord hides the group from members without Manage Server (``default_member_permissions``),
but server admins can change who sees it, so ``QuotaAdmin`` checks ``Requester.is_admin``
(Administrator or Manage Server in this channel) again. Every answer is ephemeral.
Built at start-up; see commands.py for why there is no ``from __future__ import annotations``.
"""

import io
import logging

import discord
from discord import app_commands

from adapters.discord.context import DiscordContext
from adapters.discord.reply import answer_admin
from bot.admin import csv_name, scope_in, to_csv
from bot.amount import MAX_IMAGES, MAX_USD, usd_option
from bot.errors import InvalidRequestError
from bot.limit import LimitName
from bot.messages import (
    ADMIN_USER_AND_ROLE,
    SERVER_DEFAULT,
    quota_cleared_text,
    quota_set_text,
    server_spend_cap_text,
    usage_summary,
)
from bot.models import Requester

__all__ = ["build_admin_group"]

log = logging.getLogger(__name__)


def _target(
    user: discord.abc.User | None, role: discord.Role | None
) -> tuple[str | None, str | None, str]:
    if user is not None and role is not None:
        raise InvalidRequestError(ADMIN_USER_AND_ROLE)
    if user is not None:
        return str(user.id), None, user.mention
    if role is not None:
        return None, str(role.id), role.mention
    return None, None, SERVER_DEFAULT


def build_admin_group(context: DiscordContext) -> app_commands.Group:
    """The group with the quota commands; the moderation ones join it (moderation_admin.py)."""
    admin = context.runtime.quota_admin
    group = app_commands.Group(
        name="imagine-admin",
        description="Image quotas, spend cap and usage for this server",
        default_permissions=discord.Permissions(manage_guild=True),
        guild_only=True,
    )

    @group.command(name="set-quota", description="Set limits for a member, a role or the server")
    @app_commands.describe(
        user="The member (leave out user and role for the server default)",
        role="A role: its members get the most generous of their roles' limits",
        images_per_day="Images per UTC day",
        images_per_month="Images per calendar month",
        usd_per_month="Spending per calendar month, in USD",
    )
    async def set_quota(
        interaction: discord.Interaction,
        user: discord.Member | None = None,
        role: discord.Role | None = None,
        images_per_day: app_commands.Range[int, 0, MAX_IMAGES] | None = None,
        images_per_month: app_commands.Range[int, 0, MAX_IMAGES] | None = None,
        usd_per_month: app_commands.Range[float, 0.0, float(MAX_USD)] | None = None,
    ) -> None:
        async def action(actor: Requester) -> tuple[str, discord.File | None]:
            user_id, role_id, who = _target(user, role)
            changes: dict[LimitName, int | None] = {}
            if images_per_day is not None:
                changes[LimitName.IMAGES_PER_DAY] = images_per_day
            if images_per_month is not None:
                changes[LimitName.IMAGES_PER_MONTH] = images_per_month
            if usd_per_month is not None:
                changes[LimitName.USD_MICROS_PER_MONTH] = usd_option(
                    usd_per_month, name="usd_per_month"
                )
            scope = scope_in(actor, user_id=user_id, role_id=role_id)
            limits = await admin.change_quota(actor, scope, changes)
            return quota_set_text(who, limits), None

        await answer_admin(interaction, action)

    @group.command(
        name="clear-quota", description="Remove the limits set for a member, role or server"
    )
    @app_commands.describe(
        user="The member (leave out user and role for the server default)", role="A role"
    )
    async def clear_quota(
        interaction: discord.Interaction,
        user: discord.Member | None = None,
        role: discord.Role | None = None,
    ) -> None:
        async def action(actor: Requester) -> tuple[str, discord.File | None]:
            user_id, role_id, who = _target(user, role)
            await admin.clear_quota(actor, scope_in(actor, user_id=user_id, role_id=role_id))
            return quota_cleared_text(who), None

        await answer_admin(interaction, action)

    @group.command(name="spend-cap", description="A monthly spending cap for the whole server")
    @app_commands.describe(usd_per_month="USD per calendar month; leave out to remove the cap")
    async def spend_cap(
        interaction: discord.Interaction,
        usd_per_month: app_commands.Range[float, 0.0, float(MAX_USD)] | None = None,
    ) -> None:
        async def action(actor: Requester) -> tuple[str, discord.File | None]:
            micros = (
                None if usd_per_month is None else usd_option(usd_per_month, name="usd_per_month")
            )
            await admin.set_spend_cap(actor, micros)
            return server_spend_cap_text(micros), None

        await answer_admin(interaction, action)

    @group.command(name="usage", description="Usage by member and model, with a CSV file")
    @app_commands.describe(days="How many days back, today included (default 30)")
    async def usage(
        interaction: discord.Interaction, days: app_commands.Range[int, 1, 366] = 30
    ) -> None:
        async def action(actor: Requester) -> tuple[str, discord.File | None]:
            report = await admin.usage_report(actor, days)
            csv = to_csv(report)
            text = usage_summary(report, user_label=lambda user_id: f"<@{user_id}>")
            return text, discord.File(io.BytesIO(csv.encode()), filename=csv_name(report))

        await answer_admin(interaction, action)

    del set_quota, clear_quota, spend_cap, usage  # registered on the group
    return group
