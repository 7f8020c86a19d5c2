"""Random sequences of holds, charges, refunds, limit changes, clock moves and orphan sweeps,
checked against a plain Python model of the rules.

After every step: the ledger agreed with the model on every hold (accepted exactly when every
applicable limit had room, refused naming the first one that did not), nothing ever went over
a limit when it was accepted, and for every job and in total
``charged + refunded + held == asked``, in images and in micro-dollars.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
)

from bot.errors import QuotaExceededError
from bot.models import JobState, Limits, Scope, ScopeKind
from bot.store.ledger import SqliteLedger
from tests.fakes.clock import FakeClock
from tests.ledger_support import request, requester

T = TypeVar("T")

FIELDS = ("images_per_day", "images_per_month", "usd_micros_per_month")
USERS = {"alice": ("R1",), "bob": ("R1", "R2"), "carol": ()}
WORKSPACES = ("G1", "G2")
PRICES = (0, 1_000, 2_500)
TIMEOUT = timedelta(hours=24)  # each job's deadline: held this long, it is an orphan

small = st.integers(min_value=0, max_value=12)
limit_values = st.one_of(st.none(), small)
micro_limits = st.one_of(st.none(), st.integers(min_value=0, max_value=12).map(lambda x: x * 1_000))
limits_strategy = st.builds(
    Limits,
    images_per_day=limit_values,
    images_per_month=limit_values,
    usd_micros_per_month=micro_limits,
)


@dataclass
class ModelJob:
    job_id: str
    user: str
    workspace: str
    n: int
    price: int  # per image
    created: datetime
    state: JobState = JobState.HELD
    charged_images: int = 0
    charged_micros: int = 0

    @property
    def asked_micros(self) -> int:
        return self.n * self.price

    def counted(self) -> tuple[int, int]:
        """(images, micros) this job counts against limits now."""
        if self.state is JobState.HELD:
            return self.n, self.asked_micros
        if self.state is JobState.CHARGED:
            return self.charged_images, self.charged_micros
        return 0, 0


class LedgerMachine(RuleBasedStateMachine):
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.ledger: SqliteLedger | None = None
        self.model: dict[str, ModelJob] = {}
        self.limits: dict[Scope, Limits] = {}
        self.caps: dict[str, int | None] = {}
        self.defaults = Limits()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        if self.ledger is not None:
            self.run(self.ledger.close())
        self.loop.close()

    @property
    def db(self) -> SqliteLedger:
        assert self.ledger is not None
        return self.ledger

    @initialize(
        defaults=st.builds(
            Limits,
            images_per_day=st.integers(min_value=0, max_value=12),
            images_per_month=st.integers(min_value=0, max_value=30),
            usd_micros_per_month=st.integers(min_value=0, max_value=30).map(lambda x: x * 1_000),
        )
    )
    def open_ledger(self, defaults: Limits) -> None:
        # Every default is set, so allowance() always reports all three user limits.
        self.defaults = defaults
        self.ledger = self.run(
            SqliteLedger.open(
                ":memory:", defaults=defaults, clock=self.clock.utc, job_timeout=TIMEOUT
            )
        )

    # --- the model's rules -----------------------------------------------------------------

    def effective(self, user: str, workspace: str) -> Limits:
        def at(kind: ScopeKind, subject: str, name: str) -> int | None:
            limits = self.limits.get(Scope(kind, "discord", workspace, subject))
            return None if limits is None else getattr(limits, name)

        values: dict[str, int | None] = {}
        for name in FIELDS:
            value = at(ScopeKind.USER, user, name)
            if value is None:
                roles = [v for r in USERS[user] if (v := at(ScopeKind.ROLE, r, name)) is not None]
                value = max(roles) if roles else None
            if value is None:
                value = at(ScopeKind.WORKSPACE, "", name)
            if value is None:
                value = getattr(self.defaults, name)
            values[name] = value
        return Limits(**values)

    def usage(self, user: str | None, workspace: str) -> tuple[int, int, int]:
        """(images today, images this month, micros this month) for a user, or with
        ``user=None`` for the whole workspace."""
        now = self.clock.utc()
        day = month_images = month_micros = 0
        for job in self.model.values():
            if job.workspace != workspace or (user is not None and job.user != user):
                continue
            images, micros = job.counted()
            if (job.created.year, job.created.month) == (now.year, now.month):
                month_images += images
                month_micros += micros
                if job.created.date() == now.date():
                    day += images
        return day, month_images, month_micros

    def first_broken(self, user: str, workspace: str, n: int, cost: int) -> str | None:
        limits = self.effective(user, workspace)
        day, month_images, month_micros = self.usage(user, workspace)
        checks = [
            ("images_per_day", limits.images_per_day, day, n),
            ("images_per_month", limits.images_per_month, month_images, n),
            ("usd_micros_per_month", limits.usd_micros_per_month, month_micros, cost),
            (
                "server_usd_micros_per_month",
                self.caps.get(workspace),
                self.usage(None, workspace)[2],
                cost,
            ),
        ]
        for name, allowed, used, requested in checks:
            if allowed is not None and requested and used + requested > allowed:
                return name
        return None

    # --- rules -----------------------------------------------------------------------------

    @rule(
        target=jobs,
        user=st.sampled_from(sorted(USERS)),
        workspace=st.sampled_from(WORKSPACES),
        n=st.integers(min_value=1, max_value=4),
        price=st.sampled_from(PRICES),
    )
    def hold(self, user: str, workspace: str, n: int, price: int) -> str:
        who = requester(user, workspace=workspace, roles=USERS[user])
        expected = self.first_broken(user, workspace, n, n * price)
        try:
            hold = self.run(self.db.hold(requester=who, request=request(n), cost_micros=n * price))
        except QuotaExceededError as err:
            assert expected == err.limit, (expected, err.limit)
            return multiple()  # type: ignore[return-value]
        assert expected is None, f"accepted although {expected} had no room"
        self.model[hold.job_id] = ModelJob(hold.job_id, user, workspace, n, price, self.clock.utc())
        # Nothing is over a limit that this hold added to.
        limits = self.effective(user, workspace)
        day, month_images, month_micros = self.usage(user, workspace)
        assert limits.images_per_day is None or day <= limits.images_per_day
        assert limits.images_per_month is None or month_images <= limits.images_per_month
        if price:
            assert (
                limits.usd_micros_per_month is None or month_micros <= limits.usd_micros_per_month
            )
            cap = self.caps.get(workspace)
            assert cap is None or self.usage(None, workspace)[2] <= cap
        return hold.job_id

    @rule(job_id=jobs, delivered=st.integers(min_value=0, max_value=4), over=st.booleans())
    def charge(self, job_id: str, delivered: int, over: bool) -> None:
        job = self.model[job_id]
        images = min(delivered, job.n)
        micros = images * job.price + (1 if over else 0)
        too_much = job.state is JobState.HELD and micros > job.asked_micros
        try:
            self.run(self.db.charge(job_id, images=images, cost_micros=micros))
        except ValueError:
            assert too_much
            return
        assert not too_much
        if job.state is JobState.HELD:  # a settled job ignores a second settlement
            job.state = JobState.CHARGED
            job.charged_images, job.charged_micros = images, micros

    @rule(job_id=jobs)
    def refund(self, job_id: str) -> None:
        job = self.model[job_id]
        self.run(self.db.refund(job_id, reason="provider_error"))
        if job.state is JobState.HELD:
            job.state = JobState.REFUNDED

    def _set(self, scope: Scope, limits: Limits) -> None:
        self.run(self.db.set_limits(scope, limits, actor="hypothesis"))
        self.limits[scope] = limits

    @rule(
        user=st.sampled_from(sorted(USERS)),
        workspace=st.sampled_from(WORKSPACES),
        limits=limits_strategy,
    )
    def set_user_limits(self, user: str, workspace: str, limits: Limits) -> None:
        self._set(Scope(ScopeKind.USER, "discord", workspace, user), limits)

    @rule(
        role=st.sampled_from(["R1", "R2"]),
        workspace=st.sampled_from(WORKSPACES),
        limits=limits_strategy,
    )
    def set_role_limits(self, role: str, workspace: str, limits: Limits) -> None:
        self._set(Scope(ScopeKind.ROLE, "discord", workspace, role), limits)

    @rule(workspace=st.sampled_from(WORKSPACES), limits=limits_strategy)
    def set_workspace_limits(self, workspace: str, limits: Limits) -> None:
        self._set(Scope(ScopeKind.WORKSPACE, "discord", workspace), limits)

    @rule(
        kind=st.sampled_from([ScopeKind.USER, ScopeKind.ROLE, ScopeKind.WORKSPACE]),
        subject=st.sampled_from(["alice", "bob", "carol", "R1", "R2"]),
        workspace=st.sampled_from(WORKSPACES),
    )
    def clear_limits(self, kind: ScopeKind, subject: str, workspace: str) -> None:
        scope = Scope(kind, "discord", workspace, "" if kind is ScopeKind.WORKSPACE else subject)
        self.run(self.db.clear_limits(scope, actor="hypothesis"))
        self.limits.pop(scope, None)

    @rule(workspace=st.sampled_from(WORKSPACES), cap=micro_limits)
    def set_spend_cap(self, workspace: str, cap: int | None) -> None:
        self.run(
            self.db.set_spend_cap(
                platform="discord", workspace_id=workspace, usd_micros=cap, actor="hypothesis"
            )
        )
        self.caps[workspace] = cap

    @rule(hours=st.integers(min_value=1, max_value=24 * 20))
    def advance_clock(self, hours: int) -> None:
        self.clock.advance(hours=hours)

    @rule()
    def refund_orphans(self) -> None:
        # This process is alive: only the jobs past their own deadline are orphans.
        cutoff = self.clock.utc() - TIMEOUT
        stale = [j for j in self.model.values() if j.state is JobState.HELD and j.created < cutoff]
        assert self.run(self.db.refund_orphans()) == len(stale)
        for job in stale:
            job.state = JobState.REFUNDED

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def every_job_adds_up(self) -> None:
        if self.ledger is None:
            return
        totals = {"asked": [0, 0], "charged": [0, 0], "refunded": [0, 0], "held": [0, 0]}
        for job in self.model.values():
            record = self.run(self.db.job(job.job_id))
            assert record.state is job.state
            assert (record.held_images, record.held_micros) == (job.n, job.asked_micros)
            held = (job.n, job.asked_micros) if record.state is JobState.HELD else (0, 0)
            charged = (record.charged_images, record.charged_micros)
            assert charged == (job.charged_images, job.charged_micros)
            refunded = (
                (job.n - charged[0], job.asked_micros - charged[1])
                if record.state is not JobState.HELD
                else (0, 0)
            )
            for i in (0, 1):
                assert charged[i] + refunded[i] + held[i] == (job.n, job.asked_micros)[i]
                assert charged[i] >= 0 and refunded[i] >= 0
                totals["asked"][i] += (job.n, job.asked_micros)[i]
                totals["charged"][i] += charged[i]
                totals["refunded"][i] += refunded[i]
                totals["held"][i] += held[i]
        for i in (0, 1):
            assert (
                totals["charged"][i] + totals["refunded"][i] + totals["held"][i]
                == totals["asked"][i]
            )
        report = self.run(self.db.usage(since=datetime(2000, 1, 1, tzinfo=self.clock.utc().tzinfo)))
        assert (report.total_images, report.total_micros) == tuple(totals["charged"])

    @invariant()
    def allowances_match_the_model(self) -> None:
        if self.ledger is None:
            return
        for workspace in WORKSPACES:
            for user, roles in USERS.items():
                allowance = self.run(
                    self.db.allowance(requester(user, workspace=workspace, roles=roles))
                )
                seen = {u.name: (u.allowed, u.used) for u in allowance.limits}
                limits = self.effective(user, workspace)
                day, month_images, month_micros = self.usage(user, workspace)
                expected = {
                    "images_per_day": (limits.images_per_day, day),
                    "images_per_month": (limits.images_per_month, month_images),
                    "usd_micros_per_month": (limits.usd_micros_per_month, month_micros),
                }
                cap = self.caps.get(workspace)
                if cap is not None:
                    expected["server_usd_micros_per_month"] = (
                        cap,
                        self.usage(None, workspace)[2],
                    )
                assert seen == expected


LedgerMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None, database=None
)
TestLedgerStateMachine = LedgerMachine.TestCase
