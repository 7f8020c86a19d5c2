"""The quota and usage ledger: the ``Ledger`` interface and ``SqliteLedger``.

Every job is one row: ``held`` when accepted, then exactly one of ``charged`` (the images
actually delivered, at their price) or ``refunded``. Money is integer micro-dollars.

Limits and precedence
    Three limits, each optional: ``images_per_day``, ``images_per_month`` and
    ``usd_micros_per_month``, over calendar windows in UTC (a day starts at 00:00 UTC, a month
    on its first day). They are resolved **field by field**: for each limit the first scope
    that sets it wins, in the order user override > the most generous of the user's roles (the
    largest value among the roles that set it) > the workspace default > the global default
    (``defaults``, from the environment). A ``None`` field means "not set here" and falls
    through to the next scope; a limit is unlimited only when no scope sets it. ``0`` blocks.
    A workspace-wide monthly spend cap (``set_spend_cap``) applies on top, to the sum over all
    of the workspace's users.

Holds
    A hold counts held + charged usage against every applicable limit and is written by one
    conditional ``INSERT ... SELECT ... WHERE <fits>`` statement: the check and the write are
    one SQLite statement, so neither other coroutines on this connection (aiosqlite runs the
    statements one at a time on its thread) nor other connections or processes (SQLite takes
    the write lock before the statement reads) can slip in between. Usage counters per user
    and day/month and per workspace and month are kept in step by triggers in that same
    statement. When nothing was inserted the ledger looks at why (a known event id, or the
    first limit that does not fit, in the order images/day, images/month, USD/month, server
    cap) and raises ``QuotaExceededError`` with the window's reset time.

Settling
    ``charge`` and ``refund`` only move a ``held`` job. A job is settled once: a later charge
    or refund of a settled job is ignored and logged (that is what happens when the orphan
    sweep has already refunded a job whose provider call then finished).

Owners and deadlines
    Each job is held by this process's boot and is due by ``created_at + job_timeout``.
    ``refund_orphans`` (at start-up and periodically) refunds the jobs whose owner stopped or
    lost its lease, or whose deadline passed, with a pending notice for the member when the
    adapter left a way to reach them (``bot.store.lease``). Charging more images
    or money than was held is a ``ValueError`` and leaves the job held.

Idempotency
    ``event_id`` is unique across the whole ledger (adapters pass the platform's own id, e.g.
    a Discord interaction id or a Slack event id); a second hold with it, even a concurrent
    one, returns ``Hold(first_job_id, duplicate=True)`` and reserves nothing.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import json
import logging
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, astuple, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from bot.errors import ConfigError, JobNotFoundError, QuotaExceededError
from bot.limit import LimitName, Window
from bot.models import (
    Allowance,
    GenerationRequest,
    Hold,
    JobRecord,
    JobState,
    Limits,
    LimitUsage,
    Requester,
    Scope,
    ScopeKind,
    UsageReport,
    UsageRow,
)
from bot.store.closing import Closing
from bot.store.lease import INTERRUPTED, LEASE, ProcessIdentity, this_process
from bot.store.row import (
    JOB_COLUMNS,
    job_record,
    limits_from_row,
    parse_stamp,
    role_ids_text,
    stamp,
)
from bot.store.schema import migrate

__all__ = [
    "DEFAULT_JOB_TIMEOUT",
    "AuditEntry",
    "Clock",
    "Interrupted",
    "JobStats",
    "Ledger",
    "SqliteLedger",
    "month_start",
    "next_day",
    "next_month",
]

log = logging.getLogger(__name__)

# JOB_TIMEOUT's default: a job held longer than this is overdue, whoever holds it.
DEFAULT_JOB_TIMEOUT = timedelta(minutes=15)

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class JobStats:
    """Totals over every job, for ``/metrics``: ``by_state`` counts jobs per state (every
    state present); ``charged`` maps a model to (images, micro-dollars) charged for it."""

    by_state: dict[str, int]
    charged: dict[str, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Interrupted:
    """A job refunded because the process running it stopped, and what its adapter stored to
    reach the member (``reach``)."""

    record: JobRecord
    reach: dict[str, str]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin change. ``old``/``new`` map limit names to values (``None``: not set);
    ``old`` is ``None`` when the scope had no row before."""

    at: datetime
    actor: str
    action: str
    scope: Scope
    old: dict[str, int | None] | None
    new: dict[str, int | None] | None


class Ledger(Protocol):
    """Quotas, holds, charges, refunds, usage and the admin audit (the module docstring has
    the rules). Every operation a caller uses is named here, so a second backend needs
    nothing else; ``tests/test_ledger.py`` is the contract every implementation passes.
    Opened by ``bot.store.database.open_store``."""

    async def hold(
        self,
        *,
        requester: Requester,
        request: GenerationRequest,
        cost_micros: int,
        event_id: str | None = None,
        reach: Mapping[str, str] | None = None,
    ) -> Hold:
        """Reserve ``request.n`` images and ``cost_micros`` against every applicable limit in
        one atomic step, and record the job, owned by this process; ``reach`` is how to tell
        the member if the job is interrupted (the adapter's own keys and values). Raises
        ``QuotaExceededError`` (nothing reserved). A second hold with the same ``event_id``
        returns ``Hold(first_job_id, duplicate=True)``."""
        ...

    async def charge(self, job_id: str, *, images: int, cost_micros: int) -> None:
        """held -> charged, for the images actually delivered (at most what was held)."""
        ...

    async def refund(self, job_id: str, *, reason: str) -> None:
        """held -> refunded; a job already charged or refunded is left alone."""
        ...

    async def job(self, job_id: str) -> JobRecord:
        """The job's record; ``JobNotFoundError`` if there is none."""
        ...

    async def allowance(self, requester: Requester) -> Allowance: ...

    async def limits(self, scope: Scope) -> Limits: ...

    async def set_limits(self, scope: Scope, limits: Limits, *, actor: str) -> None: ...

    async def change_limits(
        self, scope: Scope, changes: Mapping[LimitName, int | None], *, actor: str
    ) -> Limits:
        """Set only the limits in ``changes`` at ``scope`` (``None``: unset one), the others
        kept as they are, in one statement (two admins changing different limits at once both
        count); returns what is set there now."""
        ...

    async def clear_limits(self, scope: Scope, *, actor: str) -> None: ...

    async def spend_cap(self, *, platform: str, workspace_id: str) -> int | None:
        """The workspace's monthly spend cap in micro-dollars, ``None`` when unset."""
        ...

    async def set_spend_cap(
        self, *, platform: str, workspace_id: str, usd_micros: int | None, actor: str
    ) -> None: ...

    async def usage(
        self,
        *,
        since: datetime,
        until: datetime | None = None,
        platform: str | None = None,
        workspace_id: str | None = None,
    ) -> UsageReport: ...

    async def audit_log(
        self,
        *,
        platform: str | None = None,
        workspace_id: str | None = None,
        limit: int = 50,
    ) -> tuple[AuditEntry, ...]:
        """The latest admin changes, newest first."""
        ...

    async def refund_orphans(self) -> int:
        """Refund the holds whose owner stopped or lost its lease, or whose deadline passed;
        returns how many."""
        ...

    async def refund_orphan(self, job_id: str) -> bool:
        """Refund ``job_id`` if no process runs it any more; whether it did."""
        ...

    async def renew_lease(self) -> bool:
        """Keep this process's jobs its own; ``False`` once another process took them."""
        ...

    async def claim_notices(self, platform: str, *, limit: int = 50) -> list[Interrupted]:
        """Interrupted jobs whose member is still to be told, claimed by this process."""
        ...

    async def notice_sent(self, job_id: str) -> None: ...

    async def first_click(self, key: str, *, window: timedelta) -> bool:
        """``False`` for a repeat of the same click within ``window``."""
        ...

    def now(self) -> datetime:
        """The ledger's clock, as an aware UTC datetime (what it stamps jobs and changes with,
        so callers asking "which month is it" agree with the ledger)."""
        ...

    @property
    def location(self) -> str:
        """Where the data lives, for operators' messages (a path, or a URL without its
        password); never a secret."""
        ...

    async def ping(self) -> None:
        """A trivial query: raises when the database does not answer (``/healthz``)."""
        ...

    async def job_stats(self) -> JobStats:
        """Jobs per state, and images and spend charged per model (``/metrics``)."""
        ...

    async def backup(self, target: str | os.PathLike[str]) -> None:
        """A consistent copy of the live data at ``target`` (a new file), taken while the bot
        runs."""
        ...

    async def close(self) -> None: ...


# --- calendar windows (UTC) ----------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("times must be aware datetimes (UTC)")
    return moment.astimezone(UTC)


def next_day(moment: datetime) -> datetime:
    """00:00 UTC after ``moment``: when a daily limit resets."""
    moment = _utc(moment)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return start + timedelta(days=1)


def month_start(moment: datetime) -> datetime:
    moment = _utc(moment)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(moment: datetime) -> datetime:
    """The first of the next month, 00:00 UTC: when monthly limits reset."""
    start = month_start(moment)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def _system_clock() -> datetime:
    return datetime.now(UTC)


# --- SQL -----------------------------------------------------------------------------------

_FITS = """
    (s.images_per_day IS NULL OR s.day_images + :n <= s.images_per_day)
    AND (s.images_per_month IS NULL OR s.month_images + :n <= s.images_per_month)
    AND (:cost = 0 OR s.usd_micros_per_month IS NULL
         OR s.month_micros + :cost <= s.usd_micros_per_month)
    AND (:cost = 0 OR s.server_cap IS NULL OR s.server_micros + :cost <= s.server_cap)
"""

# A held job no process will settle: no owner (held before leases), past its own deadline, or
# owned by a boot that stopped or whose lease ran out (never the sweeping process's own).
_ORPHAN = """
    state = 'held' AND (
        owner IS NULL
        OR deadline < :now
        OR owner IN (
            SELECT boot_id FROM boots
            WHERE (stopped_at IS NOT NULL OR expires_at < :now) AND boot_id <> :boot
        )
    )
"""

_IN_WORKSPACE = "platform = :platform AND workspace_id = :workspace"


def _effective(field: str, role_count: int) -> str:
    """SQL for one field's effective limit: user > most generous role > workspace > global."""
    tiers = [
        f"(SELECT {field} FROM limits WHERE {_IN_WORKSPACE}"
        " AND kind = 'user' AND subject_id = :user)"
    ]
    if role_count:
        roles = ", ".join(f":role{i}" for i in range(role_count))
        tiers.append(
            f"(SELECT max({field}) FROM limits WHERE {_IN_WORKSPACE} AND kind = 'role'"
            f" AND subject_id IN ({roles}))"
        )
    tiers.append(
        f"(SELECT {field} FROM limits WHERE {_IN_WORKSPACE}"
        " AND kind = 'workspace' AND subject_id = '')"
    )
    tiers.append(f":default_{field}")
    return f"coalesce({', '.join(tiers)}) AS {field}"


@functools.lru_cache(maxsize=64)
def _state_sql(role_count: int) -> str:
    """One row: the requester's effective limits, the server cap, and current usage."""
    counter = (
        "coalesce((SELECT {column} FROM usage_counters WHERE "
        + _IN_WORKSPACE
        + " AND user_id = :user AND period = :{period}), 0)"
    )
    return f"""
        SELECT
            {_effective("images_per_day", role_count)},
            {_effective("images_per_month", role_count)},
            {_effective("usd_micros_per_month", role_count)},
            (SELECT usd_micros_per_month FROM spend_caps WHERE {_IN_WORKSPACE}) AS server_cap,
            {counter.format(column="images", period="day_key")} AS day_images,
            {counter.format(column="images", period="month_key")} AS month_images,
            {counter.format(column="micros", period="month_key")} AS month_micros,
            coalesce((SELECT micros FROM workspace_counters WHERE {_IN_WORKSPACE}
                      AND period = :month_key), 0) AS server_micros
    """


@functools.lru_cache(maxsize=64)
def _hold_sql(role_count: int) -> str:
    return f"""
        INSERT INTO jobs (
            job_id, event_id, platform, workspace_id, channel_id, user_id, role_ids,
            display_name, prompt, model, size, n, seed, negative_prompt,
            held_images, held_micros, day, month, created_at, owner, deadline, reach
        )
        SELECT
            :job_id, :event_id, :platform, :workspace, :channel, :user, :role_ids,
            :display_name, :prompt, :model, :size, :n, :seed, :negative_prompt,
            :n, :cost, :day, :month, :created_at, :owner, :deadline, :reach
        FROM ({_state_sql(role_count)}) AS s
        WHERE {_FITS}
        ON CONFLICT (event_id) DO NOTHING
        RETURNING job_id
    """


@dataclass(frozen=True, slots=True)
class _State:
    limits: Limits
    server_cap: int | None
    day_images: int
    month_images: int
    month_micros: int
    server_micros: int

    @classmethod
    def of(cls, row: Sequence[Any]) -> _State:
        """A state query's row, its columns in this class's order (a hold's may follow)."""
        day, month, usd, server_cap, day_images, month_images, month_micros, server_micros = row[:8]
        return cls(
            limits=Limits(images_per_day=day, images_per_month=month, usd_micros_per_month=usd),
            server_cap=server_cap,
            day_images=day_images,
            month_images=month_images,
            month_micros=month_micros,
            server_micros=server_micros,
        )

    def allowance(self, now: datetime) -> Allowance:
        return Allowance(
            tuple(
                LimitUsage(name=name, allowed=allowed, used=used, resets_at=resets_at)
                for name, allowed, used, resets_at in self.usages(now)
            )
        )

    def usages(self, now: datetime) -> list[tuple[LimitName, int, int, datetime]]:
        """(name, allowed, used, resets_at) for each limit that is set, in the order a refusal
        reports them."""
        resets = {Window.DAY: next_day(now), Window.MONTH: next_month(now)}
        candidates = (
            (LimitName.IMAGES_PER_DAY, self.limits.images_per_day, self.day_images),
            (LimitName.IMAGES_PER_MONTH, self.limits.images_per_month, self.month_images),
            (LimitName.USD_MICROS_PER_MONTH, self.limits.usd_micros_per_month, self.month_micros),
            (LimitName.SERVER_USD_MICROS_PER_MONTH, self.server_cap, self.server_micros),
        )
        return [
            (name, allowed, used, resets[name.window])
            for name, allowed, used in candidates
            if allowed is not None
        ]


def _check_limits(limits: Limits) -> None:
    for name in LimitName.settable():
        _check_amount(getattr(limits, name), name)


def _refusal(
    state: _State, request: GenerationRequest, cost_micros: int, now: datetime
) -> QuotaExceededError:
    """The limit a hold that inserted nothing would break, read in the same transaction."""
    for name, allowed, used, resets_at in state.usages(now):
        requested = cost_micros if name.is_money else request.n
        if requested and used + requested > allowed:
            return QuotaExceededError(
                limit=name,
                allowed=allowed,
                used=used,
                requested=requested,
                resets_at=resets_at,
                scope=name.scope,
            )
    raise AssertionError("a hold that fits every limit inserted nothing")


async def _use_wal(db: aiosqlite.Connection, busy_timeout: float) -> None:
    """WAL mode, set once per database file. Asking for it again while other processes use
    the file can fail at once with "database is locked" (SQLite does not wait on the busy
    handler for a journal-mode change), so it is asked only when not set yet, and retried
    within the busy timeout when another process is setting it at the same moment."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + busy_timeout
    delay = 0.01
    while True:
        (mode,) = next(iter(await db.execute_fetchall("PRAGMA journal_mode")))
        if str(mode).lower() == "wal":
            return
        try:
            await db.execute_fetchall("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


def _check_amount(value: object, name: str) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0 or None, not {value!r}")


def _limits_json(text: str | None) -> dict[str, int | None] | None:
    if text is None:
        return None
    loaded: dict[str, int | None] = json.loads(text)
    return loaded


# --- what both backends share around their SQL ---------------------------------------------


@dataclass(frozen=True, slots=True)
class _NewJob:
    """The columns a hold writes besides its state query's keys, in the order both backends'
    ``INSERT INTO jobs`` names them (SQLite binds them by these names)."""

    job_id: str
    event_id: str | None
    channel: str
    role_ids: str
    display_name: str
    prompt: str
    model: str
    size: str
    n: int
    seed: int | None
    negative_prompt: str | None
    cost: int
    day: str
    month: str
    created_at: str
    owner: str
    deadline: str
    reach: str | None

    @classmethod
    def of(
        cls,
        requester: Requester,
        request: GenerationRequest,
        cost_micros: int,
        event_id: str | None,
        reach: Mapping[str, str] | None,
        *,
        now: datetime,
        owner: str,
        job_timeout: timedelta,
    ) -> _NewJob:
        return cls(
            job_id=uuid.uuid4().hex,
            event_id=event_id,
            channel=requester.channel_id,
            role_ids=role_ids_text(_unique(requester.role_ids)),
            display_name=requester.display_name,
            prompt=request.prompt,
            model=request.model,
            size=request.size,
            n=request.n,
            seed=request.seed,
            negative_prompt=request.negative_prompt,
            cost=cost_micros,
            day=now.strftime("%Y-%m-%d"),
            month=now.strftime("%Y-%m"),
            created_at=stamp(now),
            owner=owner,
            deadline=stamp(now + job_timeout),
            reach=None if reach is None else json.dumps(dict(reach)),
        )

    def values(self) -> tuple[Any, ...]:
        return astuple(self)

    def params(self) -> dict[str, Any]:
        return asdict(self)


def _periods(now: datetime) -> tuple[str, str]:
    """The usage counters' keys of ``now``'s day and month."""
    return "D" + now.strftime("%Y-%m-%d"), "M" + now.strftime("%Y-%m")


def _check_hold(request: GenerationRequest, cost_micros: int) -> None:
    if request.n < 1:
        raise ValueError("a job needs at least one image")
    _check_amount(cost_micros, "cost_micros")


def _check_charge(images: int, cost_micros: int) -> None:
    _check_amount(images, "images")
    _check_amount(cost_micros, "cost_micros")


def _check_changes(scope: Scope, changes: Mapping[LimitName, int | None]) -> None:
    """``change_limits``'s arguments: a scope admins set, and only limits set per scope."""
    _check_scope(scope)
    settable = LimitName.settable()
    unknown = [name for name in changes if name not in settable]
    if unknown:
        raise ValueError(f"not a limit set per scope: {', '.join(unknown)}")
    _check_limits(Limits(**{str(name): value for name, value in changes.items()}))


def _held(job_id: str, requester: Requester, request: GenerationRequest, cost_micros: int) -> Hold:
    log.debug(
        "hold %s: %d image(s), %d micro-USD for %s:%s/%s",
        job_id,
        request.n,
        cost_micros,
        requester.platform,
        requester.workspace_id,
        requester.user_id,
        extra={"job_id": job_id},  # logged before the service binds the job
    )
    return Hold(job_id)


def _duplicate(event_id: str | None, job_id: object) -> Hold:
    """The answer to a hold whose event already made ``job_id``."""
    log.info("event %s already has job %s", event_id, job_id)
    return Hold(str(job_id), duplicate=True)


def _not_charged(job_id: str, images: int, cost_micros: int, found: Sequence[Any] | None) -> None:
    """Why a charge moved nothing, from the job's ``state, held_images, held_micros``
    (``None``: no such job): too much for what was held is an error, a settled job is left
    alone."""
    if found is None:
        raise JobNotFoundError(job_id)
    state, held_images, held_micros = found
    if state == JobState.HELD:
        raise ValueError(
            f"job {job_id}: cannot charge {images} image(s) / {cost_micros} micro-USD; "
            f"only {held_images} / {held_micros} were held"
        )
    log.warning("job %s is already %s; charge of %d image(s) ignored", job_id, state, images)


def _refunded(job_id: str, reason: str) -> None:
    log.debug("job %s refunded (%s)", job_id, reason)


def _not_refunded(job_id: str, reason: str, state: object | None) -> None:
    """Why a refund moved nothing (``state``: the job's, ``None`` when there is no such job)."""
    if state is None:
        raise JobNotFoundError(job_id)
    log.info("job %s is already %s; refund (%s) ignored", job_id, state, reason)


def _log_orphans(job_ids: Sequence[str]) -> None:
    if job_ids:
        log.info("refunded %d orphaned hold(s): %s", len(job_ids), ", ".join(job_ids[:20]))


# The columns ``audit_log`` reads, in ``_audit_entry``'s order.
_AUDIT_COLUMNS = "at, actor, action, scope_kind, platform, workspace_id, subject_id, old, new"


def _audit_entry(row: Sequence[Any]) -> AuditEntry:
    at, actor, action, kind, platform, workspace_id, subject_id, old, new = row
    return AuditEntry(
        at=parse_stamp(at),
        actor=actor,
        action=action,
        scope=Scope(
            kind=ScopeKind(kind),
            platform=platform,
            workspace_id=workspace_id,
            subject_id=subject_id,
        ),
        old=_limits_json(old),
        new=_limits_json(new),
    )


def _job_stats(states: Iterable[Sequence[Any]], charged: Iterable[Sequence[Any]]) -> JobStats:
    """From rows of ``state, count`` and of ``model, images, micros``."""
    by_state = dict.fromkeys(("held", "charged", "refunded"), 0)
    by_state.update({str(state): int(count) for state, count in states})
    return JobStats(
        by_state=by_state,
        charged={str(m): (int(images), int(micros)) for m, images, micros in charged},
    )


def _interrupted(row: Sequence[Any]) -> Interrupted:
    """A row of ``JOB_COLUMNS`` and then ``reach``."""
    *job, reach = row
    return Interrupted(job_record(job), json.loads(reach))


class _LedgerBase(Closing, abc.ABC):
    """What a ledger does around its SQL, on either backend: the clock, this process's boot
    and its lease (``bot.store.lease``), closing once, and the operations whose rules do not
    depend on the dialect. Each backend writes the statements (the abstract methods)."""

    # What ``close`` lets pass while recording the exit: the database may be gone already.
    _EXIT_ERRORS: tuple[type[Exception], ...] = (Exception,)

    def __init__(
        self, *, defaults: Limits, clock: Clock, job_timeout: timedelta, lease: timedelta
    ) -> None:
        self.defaults = defaults
        self._clock = clock
        self.job_timeout = job_timeout
        self.lease = lease
        self.boot_id = uuid.uuid4().hex
        self.process = this_process()
        self._closed = False

    def now(self) -> datetime:
        """The ledger's clock, as an aware UTC datetime."""
        return _utc(self._clock())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            # A clean exit: whatever this process still held is an orphan at once.
            await self._record_exit(stamp(self.now()))
        except self._EXIT_ERRORS as exc:
            log.warning("could not record this process's exit (%s)", self._exit_failure(exc))
        await self._disconnect()

    @staticmethod
    def _exit_failure(exc: Exception) -> str:
        """How ``close``'s warning names the failure: its type (a backend whose errors are
        safe and useful to quote says more)."""
        return type(exc).__name__

    # --- leases (bot.store.lease) ----------------------------------------------------------

    async def _start_boot(self) -> None:
        now = self.now()
        process = self.process
        await self._insert_boot(
            (
                self.boot_id,
                process.host,
                process.pid,
                process.started,
                stamp(now),
                stamp(now + self.lease),
            )
        )

    async def renew_lease(self) -> bool:
        """Push this process's lease forward. ``False`` if another process had already found
        it expired (its jobs until now are orphans): this process then starts a new boot, so
        that the jobs it holds from now on are its own again."""
        if await self._extend_lease(stamp(self.now() + self.lease)):
            return True
        self.boot_id = uuid.uuid4().hex
        await self._start_boot()
        return False

    async def _bury_dead_neighbours(self, now: datetime) -> None:
        """Mark stopped the boots of processes on this machine that no longer run."""
        if not self.process.host:
            return
        dead = [
            str(boot_id)
            for boot_id, pid, started in await self._neighbours()
            if not ProcessIdentity(self.process.host, int(pid), str(started)).alive()
        ]
        if dead:
            await self._mark_stopped(dead, stamp(now))
            log.info("found %d earlier process(es) on this machine gone", len(dead))

    # --- holds ------------------------------------------------------------------------------

    async def hold(
        self,
        *,
        requester: Requester,
        request: GenerationRequest,
        cost_micros: int,
        event_id: str | None = None,
        reach: Mapping[str, str] | None = None,
    ) -> Hold:
        _check_hold(request, cost_micros)
        return await self._hold(requester, request, cost_micros, event_id or None, reach)

    def _new_job(
        self,
        requester: Requester,
        request: GenerationRequest,
        cost_micros: int,
        event_id: str | None,
        reach: Mapping[str, str] | None,
        now: datetime,
    ) -> _NewJob:
        """The row of a job held ``now`` by this process's boot."""
        return _NewJob.of(
            requester,
            request,
            cost_micros,
            event_id,
            reach,
            now=now,
            owner=self.boot_id,
            job_timeout=self.job_timeout,
        )

    # --- reading ---------------------------------------------------------------------------

    async def job(self, job_id: str) -> JobRecord:
        row = await self._job_row(job_id)
        if row is None:
            raise JobNotFoundError(job_id)
        return job_record(row)

    async def allowance(self, requester: Requester) -> Allowance:
        now = self.now()
        return (await self._state(requester, now)).allowance(now)

    async def limits(self, scope: Scope) -> Limits:
        """What is set at exactly this scope (for ``GLOBAL``: the defaults)."""
        if scope.kind is ScopeKind.GLOBAL:
            return self.defaults
        row = await self._limits_row(scope)
        return Limits() if row is None else limits_from_row(row)

    async def usage(
        self,
        *,
        since: datetime,
        until: datetime | None = None,
        platform: str | None = None,
        workspace_id: str | None = None,
    ) -> UsageReport:
        """Charged jobs created in ``[since, until)`` (no upper bound when ``until`` is
        ``None``; the report's ``until`` is then now), summed per UTC day, platform, workspace,
        user and model."""
        since = _utc(since)
        until_stamp = None if until is None else stamp(until)
        until = self.now() if until is None else _utc(until)
        rows = await self._usage_rows(stamp(since), until_stamp, platform, workspace_id)
        return UsageReport(since=since, until=until, rows=tuple(UsageRow(*row) for row in rows))

    # --- admin changes (each writes an audit row, by trigger, in the same statement) ------

    async def set_limits(self, scope: Scope, limits: Limits, *, actor: str) -> None:
        """Replace what is set at ``scope``; ``None`` fields become "not set"."""
        _check_scope(scope)
        _check_limits(limits)
        if limits.empty:
            await self.clear_limits(scope, actor=actor)
            return
        await self._write_limits(scope, limits, stamp(self.now()), actor)
        _log_limits(actor, scope, limits)

    async def change_limits(
        self, scope: Scope, changes: Mapping[LimitName, int | None], *, actor: str
    ) -> Limits:
        _check_changes(scope, changes)
        row = await self._change_limits(scope, changes, stamp(self.now()), actor)
        now = limits_from_row(row)
        _log_limits(actor, scope, now)
        return now

    async def clear_limits(self, scope: Scope, *, actor: str) -> None:
        """Unset everything at ``scope`` (a scope with nothing set is left alone, unaudited)."""
        _check_scope(scope)
        await self._clear_limits(scope, stamp(self.now()), actor)
        log.info(
            "%s cleared limits at %s %s in %s:%s",
            actor,
            scope.kind,
            scope.subject_id or "default",
            scope.platform,
            scope.workspace_id or "-",
        )

    async def set_spend_cap(
        self, *, platform: str, workspace_id: str, usd_micros: int | None, actor: str
    ) -> None:
        """Set (or with ``None`` remove) the workspace-wide monthly spend cap."""
        _check_amount(usd_micros, "usd_micros")
        await self._write_spend_cap(platform, workspace_id, usd_micros, stamp(self.now()), actor)
        log.info("%s set the spend cap of %s:%s to %s", actor, platform, workspace_id, usd_micros)

    async def audit_log(
        self,
        *,
        platform: str | None = None,
        workspace_id: str | None = None,
        limit: int = 50,
    ) -> tuple[AuditEntry, ...]:
        rows = await self._audit_rows(platform, workspace_id, limit)
        return tuple(_audit_entry(row) for row in rows)

    async def job_stats(self) -> JobStats:
        """Jobs per state, and images and spend charged per model, over the whole ledger."""
        states, charged = await self._stats_rows()
        return _job_stats(states, charged)

    # --- the statements, in each backend's dialect -----------------------------------------

    @abc.abstractmethod
    async def _record_exit(self, at: str) -> None:
        """Mark this process's boot stopped at ``at``."""

    @abc.abstractmethod
    async def _disconnect(self) -> None: ...

    @abc.abstractmethod
    async def _insert_boot(self, values: tuple[Any, ...]) -> None:
        """A new ``boots`` row: ``boot_id, host, pid, started, started_at, expires_at``."""

    @abc.abstractmethod
    async def _extend_lease(self, expires: str) -> bool:
        """Move this boot's ``expires_at``; ``False`` when it is stopped (or gone)."""

    @abc.abstractmethod
    async def _neighbours(self) -> Sequence[Sequence[Any]]:
        """``boot_id, pid, started`` of the other running boots on this process's host."""

    @abc.abstractmethod
    async def _mark_stopped(self, boot_ids: list[str], at: str) -> None: ...

    @abc.abstractmethod
    async def _hold(
        self,
        requester: Requester,
        request: GenerationRequest,
        cost_micros: int,
        event_id: str | None,
        reach: Mapping[str, str] | None,
    ) -> Hold:
        """``hold`` once its arguments are checked (``event_id``: ``None`` when empty)."""

    @abc.abstractmethod
    async def _job_row(self, job_id: str) -> Sequence[Any] | None:
        """The job's ``JOB_COLUMNS``."""

    @abc.abstractmethod
    async def _state(self, requester: Requester, now: datetime) -> _State: ...

    @abc.abstractmethod
    async def _limits_row(self, scope: Scope) -> Sequence[Any] | None:
        """``images_per_day, images_per_month, usd_micros_per_month`` set at ``scope``."""

    @abc.abstractmethod
    async def _usage_rows(
        self, since: str, until: str | None, platform: str | None, workspace_id: str | None
    ) -> Sequence[Sequence[Any]]:
        """``UsageRow``'s columns, in its order, grouped and ordered by all but the sums."""

    @abc.abstractmethod
    async def _write_limits(self, scope: Scope, limits: Limits, at: str, actor: str) -> None:
        """Upsert every limit of ``scope`` (audited by trigger)."""

    @abc.abstractmethod
    async def _change_limits(
        self, scope: Scope, changes: Mapping[LimitName, int | None], at: str, actor: str
    ) -> Sequence[Any]:
        """Upsert only the limits in ``changes`` in one statement; the scope's limits after
        it (``limits_from_row``'s columns)."""

    @abc.abstractmethod
    async def _clear_limits(self, scope: Scope, at: str, actor: str) -> None:
        """Unset every limit of ``scope``, unless nothing is set there."""

    @abc.abstractmethod
    async def _write_spend_cap(
        self, platform: str, workspace_id: str, usd_micros: int | None, at: str, actor: str
    ) -> None:
        """Set the cap, or unset it (``None``) where one is set."""

    @abc.abstractmethod
    async def _audit_rows(
        self, platform: str | None, workspace_id: str | None, limit: int
    ) -> Sequence[Sequence[Any]]:
        """The latest ``_AUDIT_COLUMNS`` rows, newest first, of a platform or workspace when
        named."""

    @abc.abstractmethod
    async def _stats_rows(self) -> tuple[Sequence[Sequence[Any]], Sequence[Sequence[Any]]]:
        """``state, count`` per state; ``model, images, micros`` charged per model."""


class SqliteLedger(_LedgerBase):
    """The ``Ledger`` on SQLite through one long-lived aiosqlite connection.

    Create it with ``await SqliteLedger.open(path, defaults=...)``; ``path`` may be
    ``":memory:"``. ``clock`` returns the current aware UTC time (tests inject one to move
    between days and months without waiting).
    """

    _EXIT_ERRORS = (sqlite3.Error,)

    def __init__(
        self,
        db: aiosqlite.Connection,
        *,
        defaults: Limits,
        clock: Clock,
        path: str,
        job_timeout: timedelta = DEFAULT_JOB_TIMEOUT,
        lease: timedelta = LEASE,
    ) -> None:
        super().__init__(defaults=defaults, clock=clock, job_timeout=job_timeout, lease=lease)
        self._db = db
        self.path = path
        self._tx = asyncio.Lock()
        self._tx_task: asyncio.Task[Any] | None = None
        self._settling: set[asyncio.Future[Hold]] = set()

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        defaults: Limits | None = None,
        clock: Clock | None = None,
        busy_timeout: float = 10.0,
        job_timeout: timedelta = DEFAULT_JOB_TIMEOUT,
        lease: timedelta = LEASE,
    ) -> SqliteLedger:
        """Open (creating and migrating as needed) the ledger at ``path``, and record this
        process's boot: its jobs are owned by it, each due within ``job_timeout``."""
        defaults = defaults or Limits()
        _check_limits(defaults)
        location = os.fspath(path)
        db = await aiosqlite.connect(location, isolation_level=None, timeout=busy_timeout)
        try:
            if location != ":memory:" and not location.startswith("file::memory:"):
                await _use_wal(db, busy_timeout)
            await db.execute_fetchall("PRAGMA synchronous = NORMAL")
            await db.execute_fetchall(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            await db.execute_fetchall("PRAGMA foreign_keys = ON")
            try:
                await db.execute_fetchall("SELECT json_object('a', 1)")
            except sqlite3.OperationalError as exc:
                raise ConfigError(
                    f"this SQLite ({sqlite3.sqlite_version}) lacks the JSON functions the "
                    "ledger needs; use SQLite 3.38 or newer"
                ) from exc
            found = await migrate(db)
        except BaseException:
            await db.close()
            raise
        _log_open(location, found)
        ledger = cls(
            db,
            defaults=defaults,
            clock=clock or _system_clock,
            path=location,
            job_timeout=job_timeout,
            lease=lease,
        )
        try:
            await ledger._start_boot()
        except BaseException:
            await db.close()
            raise
        return ledger

    @staticmethod
    def _exit_failure(exc: Exception) -> str:
        return str(exc)  # SQLite's own words ("database is locked") hold nothing secret

    async def _record_exit(self, at: str) -> None:
        await self._db.execute_fetchall(
            "UPDATE boots SET stopped_at = ? WHERE boot_id = ?", (at, self.boot_id)
        )

    async def _disconnect(self) -> None:
        await self._db.close()

    # --- leases (bot.store.lease) --------------------------------------------------------------

    async def _insert_boot(self, values: tuple[Any, ...]) -> None:
        await self._rows(
            """
            INSERT INTO boots (boot_id, host, pid, started, started_at, expires_at)
            VALUES (?, ?, ?, ?, ?, ?)
            """,
            values,
        )

    async def _extend_lease(self, expires: str) -> bool:
        rows = await self._rows(
            """
            UPDATE boots SET expires_at = :expires
            WHERE boot_id = :boot AND stopped_at IS NULL
            RETURNING boot_id
            """,
            {"boot": self.boot_id, "expires": expires},
        )
        return bool(rows)

    async def _neighbours(self) -> list[Any]:
        return await self._rows(
            """
            SELECT boot_id, pid, started FROM boots
            WHERE host = :host AND stopped_at IS NULL AND boot_id <> :boot
            """,
            {"host": self.process.host, "boot": self.boot_id},
        )

    async def _mark_stopped(self, boot_ids: list[str], at: str) -> None:
        for boot_id in boot_ids:
            await self._rows(
                "UPDATE boots SET stopped_at = ? WHERE boot_id = ? AND stopped_at IS NULL",
                (at, boot_id),
            )

    async def refund_orphans(self) -> int:
        """Refund the holds no process will settle: their owner stopped, its lease ran out,
        or their own deadline passed (each job's, never this process's setting). A job with a
        way to reach its member gets a pending notice (``claim_notices``). Returns how many."""
        now = self.now()
        await self._bury_dead_neighbours(now)
        # A lapsed lease is final: its process, should it wake up, starts a new boot.
        await self._rows(
            """
            UPDATE boots SET stopped_at = :now
            WHERE stopped_at IS NULL AND expires_at < :now AND boot_id <> :boot
            """,
            {"now": stamp(now), "boot": self.boot_id},
        )
        rows = await self._rows(
            f"""
            UPDATE jobs SET state = 'refunded', finished_at = :now,
                refund_reason = CASE WHEN deadline < :now THEN 'expired' ELSE :interrupted END,
                notice = CASE WHEN reach IS NOT NULL THEN 'pending' END
            WHERE {_ORPHAN}
            RETURNING job_id
            """,
            {"now": stamp(now), "interrupted": INTERRUPTED, "boot": self.boot_id},
        )
        _log_orphans([str(r[0]) for r in rows])
        return len(rows)

    async def refund_orphan(self, job_id: str) -> bool:
        """Refund ``job_id`` if it is held by a process that no longer runs (or overdue)."""
        now = self.now()
        await self._bury_dead_neighbours(now)
        rows = await self._rows(
            f"""
            UPDATE jobs SET state = 'refunded', finished_at = :now, refund_reason = :interrupted
            WHERE job_id = :job_id AND {_ORPHAN}
            RETURNING job_id
            """,
            {"now": stamp(now), "job_id": job_id, "interrupted": INTERRUPTED, "boot": self.boot_id},
        )
        return bool(rows)

    async def claim_notices(self, platform: str, *, limit: int = 50) -> list[Interrupted]:
        """Interrupted jobs of ``platform`` whose member has not been told yet, claimed by
        this process (another process will not tell them too)."""
        rows = await self._rows(
            f"""
            UPDATE jobs SET notice = :claim
            WHERE job_id IN (
                SELECT job_id FROM jobs
                WHERE notice = 'pending' AND platform = :platform
                LIMIT :limit
            )
            RETURNING {JOB_COLUMNS}, reach
            """,
            {"claim": f"claimed:{self.boot_id}", "platform": platform, "limit": limit},
        )
        return [_interrupted(row) for row in rows]

    async def notice_sent(self, job_id: str) -> None:
        await self._rows("UPDATE jobs SET notice = 'sent' WHERE job_id = ?", (job_id,))

    async def first_click(self, key: str, *, window: timedelta) -> bool:
        """Whether this press of a button (``key``: who pressed what, on which result) is the
        first within ``window``; a repeat inside the window is not, whichever process got
        it."""
        now = self.now()
        rows = await self._rows(
            """
            INSERT INTO clicks (click_key, at) VALUES (:key, :now)
            ON CONFLICT (click_key) DO UPDATE SET at = excluded.at WHERE clicks.at < :since
            RETURNING click_key
            """,
            {"key": key, "now": stamp(now), "since": stamp(now - window)},
        )
        return bool(rows)

    @property
    def location(self) -> str:
        return self.path

    async def execute(self, sql: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> list[Any]:
        """One statement on the shared connection, for the stores that share this database
        (``bot.store.moderation``): they keep to single statements, as the ledger does, and
        wait, as the ledger's own statements do, while another coroutine's transaction is
        open."""
        return await self._rows(sql, params)

    async def _rows(self, sql: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> list[Any]:
        if self._tx.locked() and self._tx_task is not asyncio.current_task():
            # Another coroutine's transaction is open on the shared connection: a statement
            # sent now would run inside it. Statements already sent ran before its BEGIN.
            async with self._tx:
                pass
        return list(await self._db.execute_fetchall(sql, params))

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` on the shared connection; other coroutines'
        statements wait (``_rows``), other processes wait on SQLite's write lock."""
        async with self._tx:
            self._tx_task = asyncio.current_task()
            try:
                await self._db.execute_fetchall("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    await self._db.execute_fetchall("ROLLBACK")
                    raise
                await self._db.execute_fetchall("COMMIT")
            finally:
                self._tx_task = None

    # --- holds and settling ------------------------------------------------------------

    def _state_params(self, requester: Requester, now: datetime) -> dict[str, Any]:
        day_key, month_key = _periods(now)
        params: dict[str, Any] = {
            "platform": requester.platform,
            "workspace": requester.workspace_id,
            "user": requester.user_id,
            "day_key": day_key,
            "month_key": month_key,
            "default_images_per_day": self.defaults.images_per_day,
            "default_images_per_month": self.defaults.images_per_month,
            "default_usd_micros_per_month": self.defaults.usd_micros_per_month,
        }
        for index, role in enumerate(_unique(requester.role_ids)):
            params[f"role{index}"] = role
        return params

    async def _state(self, requester: Requester, now: datetime) -> _State:
        roles = len(_unique(requester.role_ids))
        (row,) = await self._rows(_state_sql(roles), self._state_params(requester, now))
        return _State.of(row)

    async def _hold(
        self,
        requester: Requester,
        request: GenerationRequest,
        cost_micros: int,
        event_id: str | None,
        reach: Mapping[str, str] | None,
    ) -> Hold:
        roles = len(_unique(requester.role_ids))
        now = self.now()
        job, params = self._hold_params(requester, request, cost_micros, event_id, reach, now)
        if await self._rows(_hold_sql(roles), params):
            return _held(job.job_id, requester, request, cost_micros)
        known = await self._known_event(event_id)
        if known is not None:
            return _duplicate(event_id, known)
        # A limit is full, or usage changed between the two statements (a refund, an admin
        # change). Try once more and read the reason in one transaction, so that the answer is
        # decided against one state: no loop of lost races on a busy member. Shielded: a
        # transaction left half-way would hold the shared connection.
        settle = asyncio.ensure_future(
            self._settle(requester, request, cost_micros, event_id, reach)
        )
        self._settling.add(settle)
        settle.add_done_callback(self._settling.discard)
        return await asyncio.shield(settle)

    async def _settle(
        self,
        requester: Requester,
        request: GenerationRequest,
        cost_micros: int,
        event_id: str | None,
        reach: Mapping[str, str] | None,
    ) -> Hold:
        now = self.now()
        job, params = self._hold_params(requester, request, cost_micros, event_id, reach, now)
        async with self._transaction():
            if await self._rows(_hold_sql(len(_unique(requester.role_ids))), params):
                return _held(job.job_id, requester, request, cost_micros)
            known = await self._known_event(event_id)
            state = await self._state(requester, now)
        if known is not None:
            return _duplicate(event_id, known)
        raise _refusal(state, request, cost_micros, now)

    def _hold_params(
        self,
        requester: Requester,
        request: GenerationRequest,
        cost_micros: int,
        event_id: str | None,
        reach: Mapping[str, str] | None,
        now: datetime,
    ) -> tuple[_NewJob, dict[str, Any]]:
        job = self._new_job(requester, request, cost_micros, event_id, reach, now)
        return job, {**self._state_params(requester, now), **job.params()}

    async def _known_event(self, event_id: str | None) -> str | None:
        """The job an event already made, if any."""
        if event_id is None:
            return None
        rows = await self._rows("SELECT job_id FROM jobs WHERE event_id = ?", (event_id,))
        return str(rows[0][0]) if rows else None

    async def charge(self, job_id: str, *, images: int, cost_micros: int) -> None:
        _check_charge(images, cost_micros)
        rows = await self._rows(
            """
            UPDATE jobs SET state = 'charged', charged_images = :images,
                charged_micros = :cost, finished_at = :now
            WHERE job_id = :job_id AND state = 'held'
              AND :images <= held_images AND :cost <= held_micros
            RETURNING job_id
            """,
            {"job_id": job_id, "images": images, "cost": cost_micros, "now": stamp(self.now())},
        )
        if rows:
            return
        found = await self._rows(
            "SELECT state, held_images, held_micros FROM jobs WHERE job_id = ?", (job_id,)
        )
        _not_charged(job_id, images, cost_micros, found[0] if found else None)

    async def refund(self, job_id: str, *, reason: str) -> None:
        rows = await self._rows(
            """
            UPDATE jobs SET state = 'refunded', refund_reason = :reason, finished_at = :now
            WHERE job_id = :job_id AND state = 'held'
            RETURNING job_id
            """,
            {"job_id": job_id, "reason": reason, "now": stamp(self.now())},
        )
        if rows:
            _refunded(job_id, reason)
            return
        found = await self._rows("SELECT state FROM jobs WHERE job_id = ?", (job_id,))
        _not_refunded(job_id, reason, found[0][0] if found else None)

    async def _job_row(self, job_id: str) -> Sequence[Any] | None:
        rows = await self._rows(f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,))
        return rows[0] if rows else None

    # --- reading limits and usage --------------------------------------------------------

    async def _limits_row(self, scope: Scope) -> Sequence[Any] | None:
        rows = await self._rows(
            """
            SELECT images_per_day, images_per_month, usd_micros_per_month FROM limits
            WHERE platform = ? AND workspace_id = ? AND kind = ? AND subject_id = ?
            """,
            (scope.platform, scope.workspace_id, str(scope.kind), scope.subject_id),
        )
        return rows[0] if rows else None

    async def spend_cap(self, *, platform: str, workspace_id: str) -> int | None:
        rows = await self._rows(
            "SELECT usd_micros_per_month FROM spend_caps WHERE platform = ? AND workspace_id = ?",
            (platform, workspace_id),
        )
        return None if not rows else rows[0][0]

    async def _usage_rows(
        self, since: str, until: str | None, platform: str | None, workspace_id: str | None
    ) -> list[Any]:
        return await self._rows(
            """
            SELECT day, platform, workspace_id, user_id, model,
                   sum(charged_images), sum(charged_micros)
            FROM jobs
            WHERE state = 'charged' AND created_at >= :since
              AND (:until IS NULL OR created_at < :until)
              AND (:platform IS NULL OR platform = :platform)
              AND (:workspace IS NULL OR workspace_id = :workspace)
            GROUP BY day, platform, workspace_id, user_id, model
            ORDER BY day, platform, workspace_id, user_id, model
            """,
            {"since": since, "until": until, "platform": platform, "workspace": workspace_id},
        )

    # --- admin changes (each writes an audit row, by trigger, in the same statement) ------

    async def _write_limits(self, scope: Scope, limits: Limits, at: str, actor: str) -> None:
        await self._rows(
            """
            INSERT INTO limits (platform, workspace_id, kind, subject_id, images_per_day,
                                images_per_month, usd_micros_per_month, updated_at, updated_by)
            VALUES (:platform, :workspace, :kind, :subject, :day, :month, :usd, :at, :actor)
            ON CONFLICT DO UPDATE SET
                images_per_day = excluded.images_per_day,
                images_per_month = excluded.images_per_month,
                usd_micros_per_month = excluded.usd_micros_per_month,
                updated_at = excluded.updated_at,
                updated_by = excluded.updated_by
            """,
            {
                **_scope_params(scope),
                "day": limits.images_per_day,
                "month": limits.images_per_month,
                "usd": limits.usd_micros_per_month,
                "at": at,
                "actor": actor,
            },
        )

    async def _change_limits(
        self, scope: Scope, changes: Mapping[LimitName, int | None], at: str, actor: str
    ) -> Sequence[Any]:
        params: dict[str, Any] = {**_scope_params(scope), "at": at, "actor": actor}
        for name in LimitName.settable():
            params[f"set_{name}"] = name in changes
            params[str(name)] = changes.get(name)
        rows = await self._rows(
            """
            INSERT INTO limits (platform, workspace_id, kind, subject_id, images_per_day,
                                images_per_month, usd_micros_per_month, updated_at, updated_by)
            VALUES (:platform, :workspace, :kind, :subject, :images_per_day, :images_per_month,
                    :usd_micros_per_month, :at, :actor)
            ON CONFLICT DO UPDATE SET
                images_per_day = CASE WHEN :set_images_per_day
                    THEN excluded.images_per_day ELSE limits.images_per_day END,
                images_per_month = CASE WHEN :set_images_per_month
                    THEN excluded.images_per_month ELSE limits.images_per_month END,
                usd_micros_per_month = CASE WHEN :set_usd_micros_per_month
                    THEN excluded.usd_micros_per_month ELSE limits.usd_micros_per_month END,
                updated_at = excluded.updated_at,
                updated_by = excluded.updated_by
            RETURNING images_per_day, images_per_month, usd_micros_per_month
            """,
            params,
        )
        changed: Sequence[Any] = rows[0]
        return changed

    async def _clear_limits(self, scope: Scope, at: str, actor: str) -> None:
        await self._rows(
            """
            UPDATE limits SET images_per_day = NULL, images_per_month = NULL,
                usd_micros_per_month = NULL, updated_at = :at, updated_by = :actor
            WHERE platform = :platform AND workspace_id = :workspace AND kind = :kind
              AND subject_id = :subject
              AND NOT (images_per_day IS NULL AND images_per_month IS NULL
                       AND usd_micros_per_month IS NULL)
            """,
            {**_scope_params(scope), "at": at, "actor": actor},
        )

    async def _write_spend_cap(
        self, platform: str, workspace_id: str, usd_micros: int | None, at: str, actor: str
    ) -> None:
        params = {
            "platform": platform,
            "workspace": workspace_id,
            "usd": usd_micros,
            "at": at,
            "actor": actor,
        }
        if usd_micros is None:
            await self._rows(
                """
                UPDATE spend_caps SET usd_micros_per_month = NULL, updated_at = :at,
                    updated_by = :actor
                WHERE platform = :platform AND workspace_id = :workspace
                  AND usd_micros_per_month IS NOT NULL
                """,
                params,
            )
        else:
            await self._rows(
                """
                INSERT INTO spend_caps (platform, workspace_id, usd_micros_per_month,
                                        updated_at, updated_by)
                VALUES (:platform, :workspace, :usd, :at, :actor)
                ON CONFLICT DO UPDATE SET
                    usd_micros_per_month = excluded.usd_micros_per_month,
                    updated_at = excluded.updated_at,
                    updated_by = excluded.updated_by
                """,
                params,
            )

    async def _audit_rows(
        self, platform: str | None, workspace_id: str | None, limit: int
    ) -> list[Any]:
        return await self._rows(
            f"""
            SELECT {_AUDIT_COLUMNS}
            FROM audit
            WHERE (:platform IS NULL OR platform = :platform)
              AND (:workspace IS NULL OR workspace_id = :workspace)
            ORDER BY id DESC LIMIT :limit
            """,
            {"platform": platform, "workspace": workspace_id, "limit": limit},
        )

    # --- operations -----------------------------------------------------------------------

    async def ping(self) -> None:
        """A trivial query on the connection: raises when the database does not answer."""
        await self._rows("SELECT 1")

    async def _stats_rows(self) -> tuple[list[Any], list[Any]]:
        states = await self._rows("SELECT state, count(*) FROM jobs GROUP BY state")
        charged = await self._rows(
            """
            SELECT model, sum(charged_images), sum(charged_micros) FROM jobs
            WHERE state = 'charged' GROUP BY model ORDER BY model
            """
        )
        return states, charged

    async def backup(self, target: str | os.PathLike[str]) -> None:
        """Copy the live database to ``target`` with SQLite's online backup API (consistent
        while the bot runs). Written to a temporary file first, then renamed into place."""
        final = Path(target)
        partial = final.with_name(f".{final.name}.partial")
        partial.unlink(missing_ok=True)
        copy = sqlite3.connect(partial, check_same_thread=False)
        try:
            await self._db.backup(copy)
        except BaseException:
            copy.close()
            partial.unlink(missing_ok=True)
            raise
        copy.close()
        os.replace(partial, final)
        log.info("ledger backed up to %s", final)


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _check_scope(scope: Scope) -> None:
    if scope.kind is ScopeKind.GLOBAL:
        raise ValueError(
            "global defaults come from the environment (DEFAULT_IMAGES_PER_DAY, "
            "DEFAULT_IMAGES_PER_MONTH, DEFAULT_USD_PER_MONTH)"
        )
    if scope.kind is ScopeKind.WORKSPACE and scope.subject_id:
        raise ValueError("a workspace default has no subject id")
    if scope.kind in (ScopeKind.ROLE, ScopeKind.USER) and not scope.subject_id:
        raise ValueError(f"a {scope.kind} scope needs the {scope.kind} id")
    if not scope.platform:
        raise ValueError("a scope needs its platform")


def _log_open(location: str, found: int) -> None:
    log.info("ledger open at %s (schema version %d found)", location, found)


def _log_limits(actor: str, scope: Scope, limits: Limits) -> None:
    log.info(
        "%s set limits at %s %s in %s:%s: images/day %s, images/month %s, micro-USD/month %s",
        actor,
        scope.kind,
        scope.subject_id or "default",
        scope.platform,
        scope.workspace_id or "-",
        *(
            "unset" if value is None else value
            for value in (
                limits.images_per_day,
                limits.images_per_month,
                limits.usd_micros_per_month,
            )
        ),
    )


def _scope_params(scope: Scope) -> dict[str, str]:
    return {
        "platform": scope.platform,
        "workspace": scope.workspace_id,
        "kind": str(scope.kind),
        "subject": scope.subject_id,
    }
