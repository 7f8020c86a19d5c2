"""The Slack adapter: ``/imagine``, ``@imagine-bot`` mentions and the Reroll button, in Socket
Mode (``SLACK_APP_TOKEN``) or HTTP mode (``SLACK_SIGNING_SECRET`` on ``HTTP_PORT``).

``serve`` is what ``imagine-bot run`` starts when Slack is configured. slack-bolt and slack-sdk
are imported only when it runs, so ``adapters.slack.config`` stays cheap to import.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.ops import OpsServer
    from adapters.runtime import Runtime
    from adapters.slack.config import SlackSettings

__all__ = ["serve"]

log = logging.getLogger(__name__)


async def serve(
    runtime: Runtime, settings: SlackSettings, *, http: OpsServer | None = None
) -> None:
    """Run the Slack adapter until cancelled, then close the websocket or web server, the
    work in flight and the HTTP session. HTTP mode mounts ``/slack/events`` on ``http``, the
    process's HTTP server (one of its own on ``HTTP_PORT`` when none is given)."""
    from adapters.slack.app import run_slack

    await run_slack(runtime, settings, http=http)
