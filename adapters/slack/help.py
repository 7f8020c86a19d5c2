"""Slack's own help text: the ``/imagine admin`` syntax, with Slack's mention and channel
markup. The sentences about outcomes stay in ``bot.messages``."""

from __future__ import annotations

__all__ = ["ADMIN_HELP", "ADMIN_HELP_HINT"]

ADMIN_HELP = "\n".join(
    [
        "Admin commands (workspace admins and SLACK_ADMIN_USER_IDS only):",
        "  /imagine admin set-quota <@user|default> images_per_day=N images_per_month=N "
        "usd_per_month=X",
        "      only the limits you name change; =none removes one (the default applies)",
        "  /imagine admin clear-quota <@user|default>   back to the defaults",
        "  /imagine admin spend-cap X | off               workspace-wide monthly cap in USD",
        "  /imagine admin usage [days]                    summary here, CSV in a direct message",
        "Moderation:",
        "  /imagine admin block add WORD | /regex/        refuse prompts with it",
        "  /imagine admin block remove WORD | /regex/     and block list",
        '  /imagine admin review-channel #channel | none  where "Ask an admin" requests go',
        "  /imagine admin channels allow #channel         /imagine only in listed channels",
        "  /imagine admin channels remove #channel        and channels list",
        "  /imagine admin spoilers on | off               Discord only",
        "  /imagine admin moderation-log [days]           refused prompts, newest first",
    ]
)

# Follows a mistyped admin command (``admin_usage_error``).
ADMIN_HELP_HINT = "Type `/imagine admin help`."
