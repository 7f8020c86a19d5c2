"""Builds the Slack parts around one ``SlackChat`` and registers their listeners on the Bolt
app; the only module that knows them all."""

from __future__ import annotations

import re

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.admin_command import AdminCommands
from adapters.slack.chat import SlackChat
from adapters.slack.courier import SlackCourier
from adapters.slack.job import JobRunner
from adapters.slack.listener import RequestListener, on_error, on_unknown_action
from adapters.slack.moderation_admin import ModerationCommands
from adapters.slack.progress import QueueNotes
from adapters.slack.render import PLATFORM
from adapters.slack.review import ReviewListener
from bot.admin import QuotaAdmin
from bot.moderation.admin import ModerationAdmin
from bot.service import ImageService

__all__ = ["wire"]


def wire(
    app: AsyncApp,
    *,
    service: ImageService,
    admin: QuotaAdmin,
    moderation_admin: ModerationAdmin,
    client: AsyncWebClient,
    session: aiohttp.ClientSession,
    admin_user_ids: frozenset[str] = frozenset(),
) -> SlackChat:
    """The chat object, for the caller to identify the bot on and close at the end."""
    chat = SlackChat(service=service, client=client, session=session, admin_user_ids=admin_user_ids)
    service.add_courier(PLATFORM, SlackCourier(chat))  # jobs another process accepted
    # Queued jobs' notes (position, ETA, Cancel) and the Cancel click.
    notes = QueueNotes(chat)
    moderation = service.moderation
    commands = None if moderation is None else ModerationCommands(moderation_admin)
    RequestListener(
        chat, JobRunner(chat, notes), notes, AdminCommands(chat, admin, commands)
    ).register(app)
    if moderation is not None:
        ReviewListener(chat, moderation).register(app)  # before the catch-all below
    app.action(re.compile(r".*"))(on_unknown_action)
    app.error(on_error)
    return chat
