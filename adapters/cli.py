"""``imagine-bot``: the operator's command line, and the process entry point.

``run`` starts every chat adapter whose tokens are set, sharing one runtime; ``shell`` is the
local chat REPL; ``generate`` is a one-off; ``models``, ``quota``, ``usage`` and ``db`` are for
operators. User mistakes and provider faults print one line to stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.discord.config import DiscordSettings
from adapters.runtime import Runtime, open_runtime
from adapters.shell import admin as admin_commands
from adapters.shell.output import save_images
from adapters.shell.repl import run_shell
from adapters.slack.config import SlackSettings
from bot.catalog import load_catalog
from bot.config import Settings, load_settings
from bot.errors import BotError, ProviderError
from bot.logcontext import log_handler
from bot.messages import NO_ADAPTERS, describe, is_operator_fault, models_table
from bot.models import Requester
from bot.parsing import RequestOptions

if TYPE_CHECKING:
    from adapters.ops import OpsServer

__all__ = ["main"]

log = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace, Runtime], Awaitable[int]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagine-bot", description="Image generation for Discord and Slack."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="start the Discord and/or Slack adapters that are configured")
    run.set_defaults(handler=_run, long_running=True)

    shell = sub.add_parser("shell", help="local chat REPL, same grammar as Slack")
    shell.add_argument("--out", type=Path, default=Path("out"), help="where images are saved")
    shell.set_defaults(handler=_shell)

    generate = sub.add_parser("generate", help="generate images once and save them")
    generate.add_argument("prompt", help="the prompt; flags such as --ar 16:9 may be inside it")
    generate.add_argument("--model")
    generate.add_argument("--size")
    generate.add_argument("--n", type=int)
    generate.add_argument("--seed", type=int)
    generate.add_argument("--no", dest="negative", metavar="NEGATIVE")
    generate.add_argument("--out", type=Path, default=Path("out"), help="directory (default ./out)")
    generate.set_defaults(handler=_generate)

    models = sub.add_parser("models", help="list the models with their prices")
    models.set_defaults(handler=None)

    admin_commands.add_parsers(sub)
    return parser


async def _generate(args: argparse.Namespace, runtime: Runtime) -> int:
    options = RequestOptions(
        model=args.model, size=args.size, n=args.n, seed=args.seed, negative=args.negative
    )
    request = runtime.service.parse(args.prompt, options)
    result = await runtime.service.generate(request, _local_requester())
    for path in save_images(result, args.out):
        print(path)
    return 0


async def _shell(args: argparse.Namespace, runtime: Runtime) -> int:
    return await run_shell(runtime.service, requester=_local_requester(), out_dir=args.out)


def _platform_settings() -> tuple[DiscordSettings, SlackSettings]:
    return DiscordSettings(), SlackSettings()


async def _run(args: argparse.Namespace, runtime: Runtime) -> int:
    discord_settings, slack_settings = _platform_settings()
    http = await _start_http(runtime)
    services: list[Coroutine[Any, Any, None]] = []
    # Each SDK is imported only when its platform is configured.
    if discord_settings.enabled:
        from adapters.discord import serve as serve_discord

        runtime.health.expect("discord")
        services.append(serve_discord(runtime, discord_settings))
    if slack_settings.enabled:
        from adapters.slack import serve as serve_slack

        runtime.health.expect("slack")
        services.append(serve_slack(runtime, slack_settings, http=http))

    async def stop() -> None:
        # First no new events (a peer, if any, takes them; /healthz turns 503), then the
        # accepted jobs get SHUTDOWN_GRACE.
        runtime.health.drain()
        await runtime.service.shutdown(runtime.settings.shutdown_grace)

    try:
        return await _serve_until_stopped(services, shutdown=stop)
    finally:
        if http is not None:
            await http.close()


async def _start_http(runtime: Runtime) -> OpsServer | None:
    """With ``HTTP_PORT``: the process's one HTTP server (``/healthz``, ``/metrics``, and
    ``/slack/events`` once Slack HTTP mode mounts it), listening before any adapter starts."""
    port = runtime.settings.http_port
    if port is None:
        return None
    from adapters.ops import OpsServer

    server = OpsServer(runtime, port=port)
    await server.start()
    return server


async def _serve_until_stopped(
    services: Sequence[Coroutine[Any, Any, None]],
    *,
    shutdown: Callable[[], Awaitable[None]] | None = None,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    tasks = [asyncio.create_task(service) for service in services]
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        if stopper in done and shutdown is not None:
            # While the adapters still run: refuse new jobs, refund the queued ones (their
            # users are told), give running ones the grace period.
            log.info("stopping: finishing running jobs")
            await shutdown()
    finally:
        for task in [*tasks, stopper]:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    if stopper in done:
        log.info("stopped by signal")
        return 0
    failed = next(t for t in done if t is not stopper)
    exc = failed.exception()
    if exc is not None:
        raise exc
    return 1


def _local_requester() -> Requester:
    return Requester(platform="shell", workspace_id="", channel_id="local", user_id=_os_user())


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "local"


async def _main(args: argparse.Namespace, settings: Settings) -> int:
    handler: Handler = args.handler
    generates = args.handler in (_run, _shell, _generate)
    long_running = getattr(args, "long_running", False)
    async with open_runtime(settings, sweep=long_running, generates=generates) as runtime:
        return await handler(args, runtime)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        level = settings.log_level.upper()
        if "log_level" not in settings.model_fields_set and not getattr(
            args, "long_running", False
        ):
            # One-off commands print their result; routine INFO lines would only bury it.
            level = "WARNING"
        # LOG_FORMAT: text lines or one JSON object per line, each with the job it is about.
        logging.basicConfig(level=level, handlers=[log_handler(settings.log_format, sys.stderr)])
        if args.command == "run" and not any(s.enabled for s in _platform_settings()):
            print(NO_ADAPTERS, file=sys.stderr)
            return 2
        if args.handler is None:  # `models` needs no database or network
            catalog = load_catalog(settings.models_file, default=settings.default_model)
            print(models_table(catalog, default=catalog.default))
            return 0
        return asyncio.run(_main(args, settings))
    except KeyboardInterrupt:
        return 130
    except BotError as err:
        # The operator is the user here, so a fault shows its (key-free) detail.
        message = describe(err)
        if isinstance(err, ProviderError) and is_operator_fault(err):
            message = f"image API error: {err}"
        elif is_operator_fault(err):
            message = str(err)
        print(f"imagine-bot: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
