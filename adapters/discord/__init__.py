"""The Discord adapter: slash commands and buttons on discord.py 2.7.

``serve`` is what ``imagine-bot run`` starts when ``DISCORD_TOKEN`` is set. discord.py is only
imported when it runs, so ``adapters.discord.config`` stays cheap to import.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.discord.config import DiscordSettings
    from adapters.runtime import Runtime

__all__ = ["serve"]

log = logging.getLogger(__name__)


async def serve(runtime: Runtime, settings: DiscordSettings) -> None:
    """Run the bot until cancelled, then close the connection cleanly."""
    from adapters.discord.client import run_client

    await run_client(runtime, settings)
