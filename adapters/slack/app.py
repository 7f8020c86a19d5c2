"""The Slack plumbing: the Web API client, the Bolt app, and the two ways Slack reaches us:
Socket Mode (a websocket we open) or HTTP mode (``POST /slack/events`` on ``HTTP_PORT``).

Both run until cancelled and then close what they opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.notice import relay_notices
from adapters.ops import OpsServer
from adapters.runtime import Runtime
from adapters.slack.api_error import error_code
from adapters.slack.config import SlackSettings
from adapters.slack.notice import tell_interrupted
from adapters.slack.render import PLATFORM
from adapters.slack.wiring import wire
from bot.errors import ConfigError
from bot.health import CONNECTED, DISCONNECTED, Health
from bot.store.ledger import Interrupted

__all__ = [
    "EVENTS_PATH",
    "build_app",
    "build_web_client",
    "check_bot_token",
    "run_http_mode",
    "run_slack",
    "run_socket_mode",
]

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
_TIMESTAMP = re.compile(r"\d{1,12}", re.ASCII)
HTTP_TIMEOUT_S = 30
RATE_LIMIT_RETRIES = 3
CONNECTION_RETRIES = 2
DRAIN_ACK_WAIT_S = 3.0  # at most this long for the acks of envelopes already received


async def run_slack(
    runtime: Runtime, settings: SlackSettings, *, http: OpsServer | None = None
) -> None:
    """The adapter: one HTTP session and Web API client, the Bolt app and its listeners, then
    Socket Mode or HTTP mode (on ``http``, the process's HTTP server) until cancelled."""
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = build_web_client(settings, session)
        app = build_app(client, settings)
        chat = wire(
            app,
            service=runtime.service,
            admin=runtime.quota_admin,
            moderation_admin=runtime.moderation_admin,
            client=client,
            session=session,
            admin_user_ids=settings.admin_user_ids,
        )

        async def identify() -> None:
            auth = await check_bot_token(client)
            chat.bot_user_id = str(auth.get("user_id") or "")
            chat.team_id = str(auth.get("team_id") or "")

        async def serving() -> None:
            # HTTP mode is up once /slack/events is mounted; a rejected token stops the bot.
            runtime.health.set("slack", CONNECTED)
            await identify()

        async def tell(notice: Interrupted) -> bool:
            return await tell_interrupted(client, session, notice)

        notices = asyncio.create_task(
            relay_notices(runtime.service, PLATFORM, tell),
            name="slack-notices",
        )
        try:
            if settings.mode == "socket":
                await identify()
                await run_socket_mode(app, client, settings, health=runtime.health)
            else:
                async with contextlib.AsyncExitStack() as stack:
                    if http is None:
                        port = settings.http_port
                        assert port is not None
                        http = await stack.enter_async_context(OpsServer(runtime, port=port))
                    await run_http_mode(
                        app,
                        http,
                        after_start=serving,
                        draining=lambda: runtime.health.draining,
                    )
        finally:
            runtime.health.set("slack", DISCONNECTED)
            notices.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await notices
            await chat.close()


def build_web_client(settings: SlackSettings, session: aiohttp.ClientSession) -> AsyncWebClient:
    """The one Web API client: ``SLACK_API_BASE_URL``, a shared session, and retries for
    connection errors and Slack's 429 (``Retry-After``), which the SDK does not retry by
    default."""
    token = settings.slack_bot_token
    assert token is not None
    return AsyncWebClient(
        token=token.get_secret_value(),
        base_url=settings.api_base_url,
        session=session,
        timeout=HTTP_TIMEOUT_S,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=CONNECTION_RETRIES),
            AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
        ],
        logger=logging.getLogger("adapters.slack.web"),
    )


def build_app(client: AsyncWebClient, settings: SlackSettings) -> AsyncApp:
    secret = settings.slack_signing_secret
    bolt_log = logging.getLogger("adapters.slack.bolt")
    # Bolt also reads SLACK_BOT_TOKEN from the environment and warns that it goes unused
    # because a client is given; it is the same token, so that warning would only confuse.
    level = bolt_log.level
    bolt_log.setLevel(logging.ERROR)
    try:
        return AsyncApp(
            client=client,
            # Socket Mode requests are not signed; Bolt skips verification for them.
            signing_secret=secret.get_secret_value() if secret is not None else "",
            logger=bolt_log,
            name="imagine-bot",
        )
    finally:
        bolt_log.setLevel(level)


async def check_bot_token(client: AsyncWebClient) -> dict[str, Any]:
    """``auth.test`` once at start-up: a bad token stops the bot with a clear message instead
    of failing on the first command. Returns the answer (``user_id`` is the bot's user)."""
    try:
        response = await client.auth_test()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ConfigError(
            f"cannot reach the Slack API at {client.base_url} ({type(exc).__name__}); check "
            "SLACK_API_BASE_URL and the network"
        ) from None
    except SlackApiError as exc:
        raise ConfigError(
            f"Slack rejected SLACK_BOT_TOKEN ({error_code(exc)}); copy the "
            "Bot User OAuth Token (xoxb-...) from the app's OAuth & Permissions page"
        ) from None
    data = dict(response.data) if isinstance(response.data, dict) else {}
    log.info(
        "Slack: connected to workspace %s (%s) as bot user %s",
        data.get("team"),
        data.get("team_id"),
        data.get("user_id"),
    )
    return data


async def run_socket_mode(
    app: AsyncApp,
    client: AsyncWebClient,
    settings: SlackSettings,
    *,
    health: Health | None = None,
) -> None:
    """Open the Socket Mode websocket and serve until cancelled. Once connected, ``health``
    asks the SDK (which reconnects on its own) whether it still is."""
    app_token = settings.slack_app_token
    assert app_token is not None
    token = app_token.get_secret_value()
    # Ask for the first websocket URL ourselves: a bad app token then stops the bot with a
    # clear message, where the SDK's connect loop would retry it forever.
    try:
        opened = await client.apps_connections_open(app_token=token)
    except SlackApiError as exc:
        raise ConfigError(
            f"Slack rejected SLACK_APP_TOKEN ({error_code(exc)}); create an app-level token "
            "with the connections:write scope under Basic Information > App-Level Tokens, and "
            "turn on Socket Mode"
        ) from None
    handler = AsyncSocketModeHandler(app, token, web_client=client)
    in_flight = _InFlight()
    # Around Bolt's own listener: an envelope counts from its arrival until its ack is sent.
    handler.client.message_listeners.insert(0, in_flight.arrived)
    handler.client.socket_mode_request_listeners.append(in_flight.acked)
    closed = False
    try:
        handler.client.wss_uri = str(opened["url"])
        await handler.connect_async()  # type: ignore[no-untyped-call]
        log.info("Slack: Socket Mode connected")
        if health is None:
            await asyncio.Event().wait()
            return
        health.set("slack", CONNECTED)
        health.probe("slack", handler.client.is_connected)
        await health.drained()
        # Stopping: leave the socket, so Slack sends new envelopes to another connection;
        # the jobs already accepted go on over the Web API.
        await in_flight.settled(DRAIN_ACK_WAIT_S)
        health.probe("slack", None)
        closed = True
        # Shielded: the SDK's close swallows a cancellation, which would leave this task
        # waiting below for ever.
        await asyncio.shield(handler.close_async())  # type: ignore[no-untyped-call]
        log.info("Slack: Socket Mode closed; finishing accepted jobs")
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError  # the stop came while we were closing
        await asyncio.Event().wait()
    finally:
        if health is not None:
            health.probe("slack", None)
        if not closed:
            if health is not None and health.draining:
                await in_flight.settled(DRAIN_ACK_WAIT_S)  # stopped before the drain got here
            await handler.close_async()  # type: ignore[no-untyped-call]
            log.info("Slack: Socket Mode closed")


class _InFlight:
    """Envelopes received whose ack has not been written yet."""

    def __init__(self) -> None:
        self._open: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def arrived(self, _client: object, message: dict[str, Any], _raw: object) -> None:
        envelope = message.get("envelope_id")
        if envelope:
            self._open.add(str(envelope))
            self._idle.clear()

    async def acked(self, _client: object, request: Any) -> None:
        self._open.discard(str(getattr(request, "envelope_id", "")))
        if not self._open:
            self._idle.set()

    async def settled(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()


async def run_http_mode(
    app: AsyncApp,
    server: OpsServer,
    *,
    after_start: Callable[[], Awaitable[object]] | None = None,
    draining: Callable[[], bool] | None = None,
) -> None:
    """Serve ``POST /slack/events`` (signatures verified by Bolt) on ``server``, the
    process's HTTP server on ``HTTP_PORT``, until cancelled. ``after_start`` runs once the
    route is mounted."""

    async def events(request: web.Request) -> web.Response:
        if draining is not None and draining():
            # Slack retries the request; behind a load balancer, a healthy peer gets it.
            return web.Response(status=503, text="draining")
        stamp = request.headers.get(TIMESTAMP_HEADER)
        if stamp is not None and not _TIMESTAMP.fullmatch(stamp):
            # Bolt would int() it while verifying and answer 500 with a traceback.
            return web.Response(status=400, text=f"malformed {TIMESTAMP_HEADER}")
        bolt_request = await to_bolt_request(request)
        bolt_response = await app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    server.add_route("POST", EVENTS_PATH, events)
    try:
        log.info("Slack: HTTP mode serving %s on port %d", EVENTS_PATH, server.port)
        if after_start is not None:
            await after_start()
        await asyncio.Event().wait()
    finally:
        server.remove_route("POST", EVENTS_PATH)
