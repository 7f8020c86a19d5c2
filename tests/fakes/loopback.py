"""Starting a fake's aiohttp app on 127.0.0.1 with a port the OS picks."""

from __future__ import annotations

from aiohttp import web

from tests.fakes import e2e

__all__ = ["serve_loopback"]


async def serve_loopback(
    app: web.Application, *, shutdown_timeout: float = 5.0
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on 127.0.0.1:0; returns the runner (``await runner.cleanup()`` stops it)
    and the port. Signals stay with the test process, and no access log is written."""
    e2e.require(f"a fake on a socket ({type(app).__name__})")
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, int(runner.addresses[0][1])
