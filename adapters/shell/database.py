"""``imagine-bot db migrate`` and ``db copy``, on SQLite and PostgreSQL (``db backup`` is in
``adapters.shell.admin``).

Examples::

    imagine-bot db migrate                          (the database at DATABASE_URL)
    imagine-bot db migrate --url postgresql://bot@db.internal/imagine
    imagine-bot db copy --from sqlite:///data/imagine.db --to postgresql://bot@db.internal/imagine

Neither opens the bot's runtime: they record no boot and refund no orphan, so the source of a
copy is exactly what the stopped install left. The work is ``bot.store.copy``'s; this module
parses, runs and prints.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from bot.config import Settings
from bot.messages import copied_text, migrated_text
from bot.store import copy as database_copy

__all__ = ["add_actions"]

Direct = Callable[[argparse.Namespace, Settings], int]


def add_actions(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``migrate`` and ``copy`` to ``imagine-bot db`` (``adapters.shell.admin`` adds
    ``backup``, which runs on the bot's runtime)."""
    migrate = actions.add_parser(
        "migrate",
        help="bring the database to the current schema; prints the versions found and reached",
    )
    migrate.add_argument("--url", metavar="URL", help="a DATABASE_URL (default: DATABASE_URL)")
    migrate.set_defaults(direct=_direct(_migrate))

    copy = actions.add_parser(
        "copy",
        help="copy every row of one database into a new, empty one (e.g. SQLite to PostgreSQL)",
        description="Copy jobs, usage, limits, spend caps, the audit log and moderation from "
        "--from into --to, which is migrated first and must hold no jobs. Stop the bot "
        "first: a copy is a snapshot, and later jobs would stay behind.",
    )
    copy.add_argument("--from", dest="source", required=True, metavar="URL", help="source")
    copy.add_argument("--to", dest="target", required=True, metavar="URL", help="target")
    copy.set_defaults(direct=_direct(_copy))


def _direct(handler: Direct) -> Direct:
    """A mistake an operator can fix is one line on stderr: ``ConfigError`` (exit 1) by
    ``adapters.cli.main``, a file that cannot be read or written here (exit 2)."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return handler(args, settings)
        except (ValueError, OSError) as err:
            print(f"imagine-bot: {err}", file=sys.stderr)
            return 2

    return run


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    done = asyncio.run(database_copy.migrate(args.url or settings.database_url))
    print(migrated_text(done.location, done.found, done.reached))
    return 0


def _copy(args: argparse.Namespace, settings: Settings) -> int:
    done = asyncio.run(database_copy.copy(args.source, args.target))
    width = max(len(name) for name, _ in done.rows)
    print(f"{'table'.ljust(width)}  rows")
    for name, count in done.rows:
        print(f"{name.ljust(width)}  {count}")
    print(copied_text(done.source, done.target, done.total))
    return 0
