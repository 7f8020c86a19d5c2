"""Operator commands: ``imagine-bot quota ...``, ``imagine-bot usage ...``, ``imagine-bot db ...``.

The operator is trusted (they own the database), so these call the ledger directly; every change
is audited with the actor ``cli:<os user>``. ``adapters.cli`` adds the parsers with
``add_parsers(subparsers)`` and runs ``await args.handler(args, runtime)``.

Examples::

    imagine-bot quota show --platform discord --server 123 --user 456 --role 789
    imagine-bot quota set --platform discord --server 123 --images-per-day 20
    imagine-bot quota set --platform discord --server 123 --role 789 --usd-per-month 5
    imagine-bot quota set --platform discord --server 123 --user 456 --images-per-day none
    imagine-bot quota clear --platform discord --server 123 --user 456
    imagine-bot quota cap --platform discord --server 123 50        (or: none)
    imagine-bot quota audit --platform discord --server 123
    imagine-bot usage --platform discord --server 123 --since 2026-06-01 --csv usage.csv
    imagine-bot db backup backups/imagine-2026-06-16.db
    imagine-bot db migrate | db copy --from URL --to URL       (adapters.shell.database)

``quota set`` changes only the limits it is given (``none`` unsets one, so it is inherited
again); ``quota clear`` unsets all of them at that scope.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.runtime import Runtime
from adapters.shell import database
from bot.admin import to_csv
from bot.amount import parse_count, parse_usd
from bot.errors import BotError, InvalidRequestError
from bot.limit import LimitName
from bot.messages import (
    backed_up_text,
    format_reset,
    limit_label,
    limit_value_text,
    server_required_text,
)
from bot.models import Limits, Requester, Scope, ScopeKind
from bot.money import format_usd
from bot.store.ledger import month_start

__all__ = ["add_parsers", "check_args", "table"]

log = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace, Runtime], Awaitable[int]]

PLATFORMS = ("discord", "slack", "shell")
_KEEP = object()  # "not given on the command line"
# (the flag's attribute, the limit, the column's heading)
_FIELDS = (
    ("images_per_day", LimitName.IMAGES_PER_DAY, "images/day"),
    ("images_per_month", LimitName.IMAGES_PER_MONTH, "images/month"),
    ("usd_per_month", LimitName.USD_MICROS_PER_MONTH, "USD/month"),
)


# --- argument types ------------------------------------------------------------------------


def _count(text: str) -> int | None:
    if text.strip().lower() in ("none", "unset", "-"):
        return None
    try:
        return parse_count(text, name="the limit")
    except InvalidRequestError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


def _usd(text: str) -> int | None:
    if text.strip().lower() in ("none", "unset", "-"):
        return None
    try:
        return parse_usd(text, name="the amount")
    except InvalidRequestError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


def _date(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-06-01") from None


# --- parsers -------------------------------------------------------------------------------


def _where(parser: argparse.ArgumentParser, *, required_platform: bool = True) -> None:
    parser.add_argument(
        "--platform", choices=PLATFORMS, required=required_platform, help="chat platform"
    )
    parser.add_argument(
        "--server",
        default="" if required_platform else None,
        metavar="ID",
        help="Discord server (guild) id or Slack workspace (team) id; required for those "
        "platforms"
        + ("" if required_platform else " (default: every server)")
        + ", left out for the shell",
    )
    # Quotas are per server: without one, Discord and Slack limits would apply to no server.
    parser.set_defaults(needs_server=required_platform)


def _subject(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--user", metavar="ID", help="a user override")
    who.add_argument("--role", metavar="ID", help="a role's limits (Discord)")


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``quota``, ``usage`` and ``db`` to the ``imagine-bot`` command line."""
    quota = subparsers.add_parser("quota", help="show, set or clear quotas and spend caps")
    actions = quota.add_subparsers(dest="quota_action", required=True, metavar="ACTION")

    show = actions.add_parser(
        "show", help="the limits at each scope; with --user, the member's allowance"
    )
    _where(show)
    show.add_argument("--user", metavar="ID", help="also show this member's allowance")
    show.add_argument(
        "--role", metavar="ID", action="append", default=[], help="a role (repeat for several)"
    )
    show.set_defaults(handler=_handle(_quota_show))

    set_ = actions.add_parser(
        "set",
        help="set limits for a user, a role or (with neither) the server default",
        description="Change the limits given; the others stay as they are. 'none' unsets a "
        "limit so that it is inherited (user > most generous role > server > global).",
    )
    _where(set_)
    _subject(set_)
    set_.add_argument("--images-per-day", type=_count, default=_KEEP, metavar="N|none")
    set_.add_argument("--images-per-month", type=_count, default=_KEEP, metavar="N|none")
    set_.add_argument("--usd-per-month", type=_usd, default=_KEEP, metavar="USD|none")
    set_.set_defaults(handler=_handle(_quota_set))

    clear = actions.add_parser("clear", help="unset every limit at a scope")
    _where(clear)
    _subject(clear)
    clear.set_defaults(handler=_handle(_quota_clear))

    cap = actions.add_parser("cap", help="set or remove a server's monthly spend cap")
    _where(cap)
    cap.add_argument("usd", type=_usd, metavar="USD|none", help="e.g. 50 or 12.5, or none")
    cap.set_defaults(handler=_handle(_quota_cap))

    audit = actions.add_parser("audit", help="the latest quota changes, newest first")
    _where(audit, required_platform=False)
    audit.add_argument("--limit", type=int, default=20, metavar="N")
    audit.set_defaults(handler=_handle(_quota_audit))

    usage = subparsers.add_parser("usage", help="charged usage by day, user and model")
    _where(usage, required_platform=False)
    usage.add_argument(
        "--since", type=_date, metavar="YYYY-MM-DD", help="first day (default: 1st of the month)"
    )
    usage.add_argument("--until", type=_date, metavar="YYYY-MM-DD", help="day after the last")
    usage.add_argument("--csv", metavar="FILE", help="also write the rows as CSV ('-': stdout)")
    usage.set_defaults(handler=_handle(_usage))

    db = subparsers.add_parser("db", help="database maintenance")
    db_actions = db.add_subparsers(dest="db_action", required=True, metavar="ACTION")
    backup = db_actions.add_parser(
        "backup",
        help="a consistent copy of the live database in a new SQLite file (SQLite: its online "
        "backup; PostgreSQL: a snapshot copied table by table)",
    )
    backup.add_argument("file", type=Path, help="where to write the copy (must not exist)")
    backup.set_defaults(handler=_handle(_db_backup))
    database.add_actions(db_actions)


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line beyond what argparse checks, before the database
    is opened; ``None`` when nothing is."""
    platform = str(getattr(args, "platform", None))
    needs_server = getattr(args, "needs_server", False) and platform in ("discord", "slack")
    if needs_server and not args.server.strip():
        return server_required_text(platform)
    return None


def _handle(
    handler: Callable[[argparse.Namespace, Runtime], Awaitable[int]],
) -> Handler:
    """Errors an operator can fix print one line on stderr and exit 2; no traceback."""

    @functools.wraps(handler)
    async def run(args: argparse.Namespace, runtime: Runtime) -> int:
        try:
            return await handler(args, runtime)
        except (ValueError, OSError, BotError) as err:
            print(f"imagine-bot: {err}", file=sys.stderr)
            return 2

    return run


# --- output --------------------------------------------------------------------------------


def table(rows: Sequence[Sequence[str]]) -> str:
    """Plain aligned columns (the last column is not padded)."""
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _value(name: str, value: int | None) -> str:
    if value is None:
        return "-"
    return limit_value_text(name, value)


def _limits_row(label: str, limits: Limits) -> tuple[str, ...]:
    return (label, *(_value(field, getattr(limits, field)) for _, field, _ in _FIELDS))


def _scope_label(scope: Scope) -> str:
    if scope.kind is ScopeKind.GLOBAL:
        return "global (environment)"
    where = f"{scope.platform}:{scope.workspace_id or '-'}"
    if scope.kind is ScopeKind.WORKSPACE:
        return f"server default {where}"
    return f"{scope.kind} {scope.subject_id} in {where}"


def _scope(args: argparse.Namespace) -> Scope:
    if args.user:
        return Scope(ScopeKind.USER, args.platform, args.server, args.user)
    if args.role:
        return Scope(ScopeKind.ROLE, args.platform, args.server, args.role)
    return Scope(ScopeKind.WORKSPACE, args.platform, args.server)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment (e.g. a bare container)
        return "cli:unknown"


_AUDIT_UNITS: dict[str, str] = {
    LimitName.IMAGES_PER_DAY: "images/day",
    LimitName.IMAGES_PER_MONTH: "images/month",
    LimitName.USD_MICROS_PER_MONTH: "/month",
}


def _audit_item(name: str, value: int | None) -> str | None:
    """One stored value in words; ``None`` for a limit that is not set."""
    if name in _AUDIT_UNITS:
        if value is None:
            return None
        gap = "" if LimitName(name).is_money else " "
        return f"{limit_value_text(name, value)}{gap}{_AUDIT_UNITS[name]}"
    if name == "active":
        return "active" if value else "removed"
    if name == "spoilers":
        return "spoilers on" if value else "spoilers off"
    if name == "review_channel_id":
        return f"review channel {value}" if value else "no review channel"
    return f"{name.replace('_', ' ')} {'-' if value is None else value}"


def _audit_value(values: dict[str, int | None] | None) -> str:
    if values is None:
        return "(none)"
    words = [_audit_item(name, value) for name, value in values.items()]
    return ", ".join(w for w in words if w is not None) or "nothing set"


# --- handlers ------------------------------------------------------------------------------


async def _quota_show(args: argparse.Namespace, runtime: Runtime) -> int:
    ledger = runtime.ledger
    scopes = [Scope(ScopeKind.GLOBAL), Scope(ScopeKind.WORKSPACE, args.platform, args.server)]
    scopes += [Scope(ScopeKind.ROLE, args.platform, args.server, r) for r in args.role]
    if args.user:
        scopes.append(Scope(ScopeKind.USER, args.platform, args.server, args.user))
    rows: list[tuple[str, ...]] = [("scope", *(label for _, _, label in _FIELDS))]
    for scope in scopes:
        rows.append(_limits_row(_scope_label(scope), await ledger.limits(scope)))
    print(table(rows))
    cap = await ledger.spend_cap(platform=args.platform, workspace_id=args.server)
    print(f"server spend cap: {'none' if cap is None else format_usd(cap) + ' per month'}")
    if args.user:
        member = Requester(
            platform=args.platform,
            workspace_id=args.server,
            channel_id="",
            user_id=args.user,
            role_ids=tuple(args.role),
        )
        allowance = await ledger.allowance(member)
        print()
        if not allowance.limits:
            print(f"user {args.user}: no limits apply")
            return 0
        now = ledger.now()
        rows = [("limit", "allowed", "used", "left", "resets")]
        for usage in allowance.limits:
            rows.append(
                (
                    limit_label(usage.name),
                    _value(usage.name, usage.allowed),
                    _value(usage.name, usage.used),
                    _value(usage.name, usage.remaining),
                    format_reset(usage.resets_at, now),
                )
            )
        print(f"user {args.user} now:")
        print(table(rows))
    return 0


async def _quota_set(args: argparse.Namespace, runtime: Runtime) -> int:
    given: dict[str, Any] = {
        field: getattr(args, dest) for dest, field, _ in _FIELDS if getattr(args, dest) is not _KEEP
    }
    if not given:
        raise ValueError(
            "nothing to set: give --images-per-day, --images-per-month and/or --usd-per-month"
        )
    scope = _scope(args)
    before = await runtime.ledger.limits(scope)  # shown beside what it becomes
    changes = {LimitName(name): value for name, value in given.items()}
    after = await runtime.ledger.change_limits(scope, changes, actor=_actor())
    print(
        table(
            [
                ("scope", *(label for _, _, label in _FIELDS)),
                _limits_row("before", before),
                _limits_row("now", after),
            ]
        )
    )
    print(f"({_scope_label(scope)}; '-' means inherited)")
    return 0


async def _quota_clear(args: argparse.Namespace, runtime: Runtime) -> int:
    scope = _scope(args)
    before = await runtime.ledger.limits(scope)
    await runtime.ledger.clear_limits(scope, actor=_actor())
    if before.empty:
        print(f"nothing was set for {_scope_label(scope)}")
    else:
        print(f"cleared {_scope_label(scope)}; it inherits every limit now")
    return 0


async def _quota_cap(args: argparse.Namespace, runtime: Runtime) -> int:
    before = await runtime.ledger.spend_cap(platform=args.platform, workspace_id=args.server)
    await runtime.ledger.set_spend_cap(
        platform=args.platform, workspace_id=args.server, usd_micros=args.usd, actor=_actor()
    )
    old = "none" if before is None else format_usd(before)
    new = "none" if args.usd is None else format_usd(args.usd)
    print(f"server spend cap for {args.platform}:{args.server or '-'}: {old} -> {new} per month")
    return 0


async def _quota_audit(args: argparse.Namespace, runtime: Runtime) -> int:
    entries = await runtime.ledger.audit_log(
        platform=args.platform, workspace_id=args.server, limit=args.limit
    )
    if not entries:
        print("no quota changes recorded")
        return 0
    rows = [("when (UTC)", "actor", "action", "scope", "old", "new")]
    for entry in entries:
        rows.append(
            (
                entry.at.strftime("%Y-%m-%d %H:%M:%S"),
                entry.actor,
                entry.action.replace("_", " "),
                (
                    f"server {entry.scope.platform}:{entry.scope.workspace_id or '-'}"
                    if "spend_cap" in entry.action
                    else _scope_label(entry.scope)
                ),
                _audit_value(entry.old),
                _audit_value(entry.new),
            )
        )
    print(table(rows))
    return 0


async def _usage(args: argparse.Namespace, runtime: Runtime) -> int:
    ledger = runtime.ledger
    since = args.since or month_start(ledger.now())
    report = await ledger.usage(
        since=since, until=args.until, platform=args.platform, workspace_id=args.server
    )
    if args.csv == "-":
        sys.stdout.write(to_csv(report))
        return 0
    period = f"{report.since:%Y-%m-%d} to {report.until:%Y-%m-%d %H:%M} UTC"
    if report.rows:
        rows = [("day", "platform", "server", "user", "model", "images", "USD")]
        for row in report.rows:
            rows.append(
                (
                    row.day,
                    row.platform,
                    row.workspace_id or "-",
                    row.user_id,
                    row.model,
                    str(row.images),
                    format_usd(row.usd_micros),
                )
            )
        rows.append(
            ("total", "", "", "", "", str(report.total_images), format_usd(report.total_micros))
        )
        print(table(rows))
    else:
        print("no charged usage")
    print(f"({period})")
    if args.csv:
        _write(Path(args.csv), to_csv(report))
        print(f"wrote {len(report.rows)} row(s) to {args.csv}")
    return 0


async def _db_backup(args: argparse.Namespace, runtime: Runtime) -> int:
    target: Path = args.file
    _check_new_file(target)
    await runtime.ledger.backup(target)
    print(backed_up_text(runtime.ledger.location, str(target), _size(target)))
    return 0


# Small blocking file operations, kept out of the async handlers' bodies.


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _check_new_file(target: Path) -> None:
    if target.exists():
        raise ValueError(f"{target} already exists; choose a new file name")
    if not target.parent.is_dir():
        raise ValueError(f"{target.parent} is not a directory")


def _size(path: Path) -> int:
    return path.stat().st_size
