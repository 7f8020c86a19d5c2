"""The process's one HTTP server, on ``HTTP_PORT``: ``GET /healthz`` and ``GET /metrics`` for
operators, and whatever adapters mount on it (Slack HTTP mode adds ``POST /slack/events``).

Adapters start after the server listens, and aiohttp freezes its router once a server runs,
so routes live in a table of our own that one catch-all aiohttp route dispatches to; adapters
may add and remove theirs at any time.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from types import TracebackType

from aiohttp import web

from adapters.runtime import Runtime
from bot.errors import ConfigError
from bot.health import check
from bot.provider.metrics import CONTENT_TYPE, QueueGauges, render

__all__ = ["HEALTH_PATH", "METRICS_PATH", "Handler", "OpsServer", "fetch_health"]

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class OpsServer:
    """``async with OpsServer(runtime, port=8080) as server: ...``; ``port=0`` picks a free
    port (read it back from ``server.port``). It listens on ``HTTP_HOST`` unless ``host`` is
    given."""

    def __init__(self, runtime: Runtime, *, port: int, host: str | None = None) -> None:
        self.runtime = runtime
        self.host = host or runtime.settings.http_host
        self._port = port
        self._routes: dict[str, dict[str, Handler]] = {}
        self._runner: web.AppRunner | None = None
        self.add_route("GET", HEALTH_PATH, self._healthz)
        self.add_route("GET", METRICS_PATH, self._metrics)

    @property
    def port(self) -> int:
        return self._port

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        methods = self._routes.setdefault(path, {})
        if method.upper() in methods:
            raise ValueError(f"{method.upper()} {path} is already served")
        methods[method.upper()] = handler

    def remove_route(self, method: str, path: str) -> None:
        methods = self._routes.get(path, {})
        methods.pop(method.upper(), None)
        if not methods:
            self._routes.pop(path, None)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"cannot listen on HTTP_HOST {self.host} port {self._port}: {exc.strerror}"
            ) from None
        self._runner = runner
        if runner.addresses:  # the port actually bound, when 0 was asked for
            self._port = int(runner.addresses[0][1])
        log.info(
            "HTTP server listening on %s:%d (%s, %s)",
            self.host,
            self._port,
            HEALTH_PATH,
            METRICS_PATH,
        )

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> OpsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        methods = self._routes.get(request.path)
        if methods is None:
            raise web.HTTPNotFound()
        handler = methods.get(request.method)
        if handler is None and request.method == "HEAD":
            handler = methods.get("GET")
        if handler is None:
            raise web.HTTPMethodNotAllowed(request.method, sorted(methods))
        return await handler(request)

    async def _healthz(self, request: web.Request) -> web.Response:
        report = await check(self.runtime.health, self.runtime.ledger)
        return web.Response(
            status=200 if report.ok else 503,
            body=json.dumps(report.as_json()).encode(),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            stats = await self.runtime.ledger.job_stats()
        except Exception as exc:
            log.warning("metrics: the ledger did not answer (%s)", type(exc).__name__)
            stats = None
        queue: QueueGauges | None = self.runtime.service.scheduler
        text = render(self.runtime.metrics, stats=stats, queue=queue)
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


def fetch_health(url: str, *, timeout: float) -> tuple[int, str]:
    """``GET url`` (a ``/healthz``) from a one-off process such as ``imagine-bot healthcheck``:
    the status and the body. Raises ``OSError`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read(4096).decode(errors="replace")
    except urllib.error.HTTPError as exc:  # 503 and friends are answers too
        with exc:
            return exc.code, exc.read(4096).decode(errors="replace")
