"""``imagine-bot``: the operator's command line, and the process entry point.

``run`` starts every chat adapter whose tokens are set, sharing one runtime; ``shell`` is the
local chat REPL; ``generate`` is a one-off; ``models``, ``quota``, ``usage``, ``db`` and
``healthcheck`` are for operators. Mistakes an operator can fix print one line to stderr and
exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.error import URLError

from adapters.discord.config import DiscordSettings
from adapters.runtime import Runtime, open_runtime, retry_policy
from adapters.shell import admin as admin_commands
from adapters.shell.output import check_out_dir, save_images
from adapters.shell.repl import run_shell
from adapters.slack.config import SlackSettings
from bot.allocator import fix_mmap_threshold
from bot.catalog import load_catalog
from bot.config import Settings, load_settings
from bot.errors import BotError, ConfigError
from bot.logcontext import log_handler
from bot.messages import (
    HEALTHCHECK_NO_PORT,
    NO_ADAPTERS,
    NO_ADAPTERS_WAITING,
    healthcheck_unreachable_text,
    models_table,
    operator_text,
    save_failed_text,
)
from bot.models import Requester
from bot.parsing import RequestOptions

if TYPE_CHECKING:
    from adapters.ops import OpsServer

__all__ = ["main", "version_text"]

log = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace, Runtime], Awaitable[int]]
# Commands that need no runtime, or open it their own way (the shell).
Direct = Callable[[argparse.Namespace, Settings], int]

# `imagine-bot models | head -2`: the reader left. Exit as a program killed by SIGPIPE would.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE

GENERATE_EPILOG = """examples:
  imagine-bot generate "a red fox in snow" --n 2
  imagine-bot generate "a lighthouse at dusk" --ar 16:9 --model sdxl --out ~/pictures
  imagine-bot generate "a koi pond" --seed 42 --no "text, watermark"
  imagine-bot generate "a red fox --ar 9:16"       (the chat grammar works inside the prompt)"""


def version_text() -> str:
    try:
        version = metadata.version("imagine-bot")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = "unknown"
    return f"imagine-bot {version} (Python {platform.python_version()})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagine-bot", description="Image generation for Discord and Slack."
    )
    parser.add_argument("--version", action="version", version=version_text())
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="one-off commands log at INFO too (or at LOG_LEVEL=DEBUG); they print warnings "
        "only otherwise",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="start the Discord and/or Slack adapters that are configured")
    run.add_argument(
        "--wait-for-config",
        action="store_true",
        help="with no chat platform configured, log why and wait for a stop signal instead of "
        "exiting (for a container under a restart policy)",
    )
    run.set_defaults(handler=_run, long_running=True)

    shell = sub.add_parser("shell", help="local chat REPL, same grammar as Slack")
    shell.add_argument(
        "--out", type=Path, default=Path("out"), metavar="DIR", help="where images are saved"
    )
    shell.set_defaults(direct=_shell)

    generate = sub.add_parser(
        "generate",
        help="generate images once and save them",
        description="Generate images once, save them under --out and print their paths.\n"
        "The job counts against your local user's quota like any other.",
        epilog=GENERATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generate.add_argument("prompt", help='what to draw, e.g. "a red fox in snow"')
    generate.add_argument(
        "--model", help="a model id or alias, e.g. flux, sdxl (imagine-bot models lists them)"
    )
    size = generate.add_mutually_exclusive_group()
    size.add_argument("--size", metavar="WxH", help="one of the model's sizes, e.g. 1792x1024")
    size.add_argument(
        "--ar", metavar="W:H", help="aspect ratio: the model's nearest size, e.g. 16:9 or 9:16"
    )
    generate.add_argument("--n", type=int, metavar="N", help="how many images, e.g. 2 (1-4)")
    generate.add_argument(
        "--seed", type=int, metavar="S", help="repeat an image exactly, e.g. 42 (default: random)"
    )
    generate.add_argument(
        "--no",
        dest="negative",
        metavar="NEGATIVE",
        help='what to leave out (a negative prompt), e.g. "text, watermark"',
    )
    generate.add_argument(
        "--out", type=Path, default=Path("out"), metavar="DIR", help="directory (default ./out)"
    )
    # Before the database is opened or anything drawn and charged: the images need a place.
    generate.set_defaults(handler=_generate, before=lambda args: check_out_dir(args.out))

    models = sub.add_parser("models", help="list the models with their prices")
    models.set_defaults(direct=_models)

    health = sub.add_parser(
        "healthcheck",
        help="ask the running bot's /healthz on HTTP_PORT; exit 0 when healthy (the image's "
        "HEALTHCHECK)",
    )
    health.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="default 5")
    health.set_defaults(direct=_healthcheck)

    admin_commands.add_parsers(sub)
    return parser


# --- one-off commands ----------------------------------------------------------------------


async def _generate(args: argparse.Namespace, runtime: Runtime) -> int:
    options = RequestOptions(
        model=args.model, size=args.size, n=args.n, seed=args.seed, negative=args.negative
    )
    text = args.prompt
    if args.ar is not None:  # the grammar's own --ar: one rule for W:H everywhere
        text = f'{text} --ar "{args.ar.replace(chr(34), "")}"'
    request = runtime.service.parse(text, options)
    result = await runtime.service.generate(request, _local_requester())
    try:
        paths = await asyncio.to_thread(save_images, result, args.out)
    except OSError as err:
        raise ConfigError(save_failed_text(str(args.out), err)) from None
    for path in paths:
        print(path)
    return 0


def _shell(args: argparse.Namespace, settings: Settings) -> int:
    return run_shell(
        lambda: open_runtime(settings, generates=True),
        requester=_local_requester(),
        out_dir=args.out,
    )


def _models(args: argparse.Namespace, settings: Settings) -> int:
    catalog = load_catalog(settings.models_file, default=settings.default_model)
    print(models_table(catalog, default=catalog.default))
    return 0


def _healthcheck(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.ops import fetch_health

    if settings.http_port is None:
        raise ConfigError(HEALTHCHECK_NO_PORT)
    url = f"http://127.0.0.1:{settings.http_port}/healthz"
    try:
        status, body = fetch_health(url, timeout=args.timeout)
    except OSError as err:
        cause = err.reason if isinstance(err, URLError) else err
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else cause
        raise ConfigError(healthcheck_unreachable_text(url, str(reason))) from None
    # Docker keeps this output in `docker inspect`; the body says which part is down.
    print(f"{status} {body}")
    return 0 if status == 200 else 1


# --- run -----------------------------------------------------------------------------------


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


async def _wait_for_config() -> int:
    """No platform, in a container: say why in the log and wait to be stopped, since an
    exit would only be restarted, again and again, by the restart policy."""
    # Said once the signal handlers are in place, so a stop right after it is a clean one.
    asyncio.get_running_loop().call_soon(log.warning, NO_ADAPTERS_WAITING)
    return await _serve_until_stopped([])


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


# --- the process ---------------------------------------------------------------------------


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
    generates = args.handler in (_run, _generate)
    long_running = getattr(args, "long_running", False)
    # A long-running bot puts a rate-limited job back in the queue; a one-off command
    # reports the 429 at once (``bot.retry``).
    retry = retry_policy(settings) if long_running else retry_policy(settings).one_off()
    async with open_runtime(
        settings, retry=retry, orphan_sweep=long_running, generates=generates
    ) as runtime:
        return await handler(args, runtime)


def _log_level(args: argparse.Namespace, settings: Settings) -> int:
    """``run`` logs at ``LOG_LEVEL``. One-off commands print their result, which routine INFO
    lines would bury (a copied .env.example sets LOG_LEVEL=INFO): they log warnings, or
    less when LOG_LEVEL says so, and INFO (or DEBUG) only with --verbose."""
    level = logging.getLevelNamesMapping()[settings.log_level]
    if getattr(args, "long_running", False):
        return level
    if args.verbose:
        return min(level, logging.INFO)
    return max(level, logging.WARNING)


def _dispatch(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    # LOG_FORMAT: text lines or one JSON object per line, each with the job it is about.
    logging.basicConfig(
        level=_log_level(args, settings), handlers=[log_handler(settings.log_format, sys.stderr)]
    )
    fix_mmap_threshold()  # before any image is allocated: see bot.allocator
    mistake = admin_commands.check_args(args)
    if mistake is not None:
        print(f"imagine-bot: {mistake}", file=sys.stderr)
        return 2
    before: Callable[[argparse.Namespace], None] | None = getattr(args, "before", None)
    if before is not None:
        before(args)
    direct: Direct | None = getattr(args, "direct", None)
    if direct is not None:
        return direct(args, settings)
    if args.command == "run" and not any(s.enabled for s in _platform_settings()):
        if args.wait_for_config:
            return asyncio.run(_wait_for_config())
        print(NO_ADAPTERS, file=sys.stderr)
        return 2
    return asyncio.run(_main(args, settings))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _dispatch(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Nothing more can be written: point stdout at /dev/null so the final flush at exit
        # does not complain either, and stop quietly, as `cat` does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except BotError as err:
        print(f"imagine-bot: {operator_text(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
