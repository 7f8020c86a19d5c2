"""Delivering a job that another process accepted.

On PostgreSQL several bot processes share one job queue, and a job may run in a process other
than the one that received the member's command: the accepting process stopped (a graceful
stop hands its queued jobs over) or died (``kill -9``; its jobs are taken over once its lease
runs out). That process cannot answer through the platform event it never saw, so each adapter
registers a ``Courier`` with the service (``ImageService.add_courier``): it answers from what
the accepting adapter stored in the job's ``reach`` (Discord: the interaction's webhook token
with its expiry, the message and the channel; Slack: the channel, the thread and the
``response_url``), through the platform's REST API with the bot's own token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from bot.errors import BotError
from bot.models import GenerationResult, JobRecord

__all__ = ["Courier"]


class Courier(Protocol):
    """One platform's way to answer a member about a job this process did not accept."""

    async def deliver(
        self, record: JobRecord, reach: Mapping[str, str], result: GenerationResult
    ) -> None:
        """Post ``result`` where the member asked (replacing the "Queued" message where the
        platform allows); raise ``DeliveryError`` (or let the platform's error through) when it
        cannot be posted, and the job is refunded."""
        ...

    async def fail(self, record: JobRecord, reach: Mapping[str, str], error: BotError) -> None:
        """Tell the member that the job failed (``bot.messages.describe(error)``), ephemeral
        where the platform allows; nothing was charged."""
        ...
