"""The moderation store contract: every ``ModerationStore`` implementation must pass these tests.

They use only the store's protocols (``Store.moderation``, and ``Store.ledger`` for the audit
rows the store's changes write), and run once per kind in ``STORE_KINDS``: today SQLite in
memory and SQLite on a file. The admin rules on top (``ModerationAdmin``) are in
``tests/test_moderation.py``, on every kind too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bot.models import GenerationRequest, Requester, ReviewState, ServerRules
from bot.store.database import Store
from bot.store.moderation import ModerationStore
from tests.fakes.clock import FakeClock
from tests.ledger_support import STORE_KINDS, open_store_of, request, requester

ACTOR = "discord:boss"


@pytest.fixture(params=STORE_KINDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    async with await open_store_of(request.param, tmp_path, clock=clock) as store:
        yield store


@pytest.fixture
def mod(store: Store) -> ModerationStore:
    return store.moderation


async def refusal(
    mod: ModerationStore,
    who: Requester | None = None,
    *,
    ask: GenerationRequest | None = None,
    rule: str = "term:dragon",
) -> str:
    review = await mod.record_refusal(
        ask or request(2), who or requester(), source="filter", rule=rule
    )
    return review.review_id


# --- the clock -------------------------------------------------------------------------------


async def test_the_store_keeps_the_ledgers_time(store: Store, clock: FakeClock) -> None:
    assert store.moderation.now() == clock.utc() == store.ledger.now()
    clock.advance(days=40)
    assert store.moderation.now() == clock.utc()


# --- rules -----------------------------------------------------------------------------------


async def test_a_server_without_rules_has_empty_rules(mod: ModerationStore) -> None:
    assert await mod.rules("discord", "G1") == ServerRules(platform="discord", workspace_id="G1")
    assert await mod.count_rules("discord", "G1", "term") == 0


async def test_rules_are_added_once_removed_once_and_come_back(mod: ModerationStore) -> None:
    assert await mod.add_rule("discord", "G1", "term", "dragon", actor=ACTOR) is True
    assert await mod.add_rule("discord", "G1", "term", "dragon", actor=ACTOR) is False
    assert await mod.add_rule("discord", "G1", "term", "basilisk", actor=ACTOR) is True
    assert await mod.add_rule("discord", "G1", "pattern", r"blood\s*bath", actor=ACTOR) is True
    assert await mod.add_rule("discord", "G1", "channel", "C5", actor=ACTOR) is True
    rules = await mod.rules("discord", "G1")
    assert rules.blocked_terms == ("basilisk", "dragon")  # sorted
    assert rules.blocked_patterns == (r"blood\s*bath",)
    assert rules.allowed_channel_ids == ("C5",)
    assert await mod.count_rules("discord", "G1", "term") == 2
    assert await mod.count_rules("discord", "G1", "pattern") == 1

    assert await mod.remove_rule("discord", "G1", "term", "dragon", actor=ACTOR) is True
    assert await mod.remove_rule("discord", "G1", "term", "dragon", actor=ACTOR) is False
    assert await mod.remove_rule("discord", "G1", "pattern", "dragon", actor=ACTOR) is False
    assert (await mod.rules("discord", "G1")).blocked_terms == ("basilisk",)
    assert await mod.count_rules("discord", "G1", "term") == 1
    assert await mod.add_rule("discord", "G1", "term", "dragon", actor=ACTOR) is True


async def test_rules_belong_to_one_platform_and_server(mod: ModerationStore) -> None:
    await mod.add_rule("discord", "G1", "term", "dragon", actor=ACTOR)
    await mod.set_review_channel("discord", "G1", "C9", actor=ACTOR)
    await mod.set_spoilers("discord", "G1", True, actor=ACTOR)
    for platform, workspace in (("discord", "G2"), ("slack", "G1")):
        assert await mod.rules(platform, workspace) == ServerRules(platform, workspace)
        assert await mod.remove_rule(platform, workspace, "term", "dragon", actor=ACTOR) is False
    assert (await mod.rules("discord", "G1")).blocked_terms == ("dragon",)


async def test_settings_are_stored_and_cleared(mod: ModerationStore) -> None:
    await mod.set_review_channel("discord", "G1", "C9", actor=ACTOR)
    await mod.set_spoilers("discord", "G1", True, actor=ACTOR)
    rules = await mod.rules("discord", "G1")
    assert (rules.review_channel_id, rules.spoilers) == ("C9", True)
    await mod.set_review_channel("discord", "G1", None, actor=ACTOR)
    rules = await mod.rules("discord", "G1")
    assert (rules.review_channel_id, rules.spoilers) == (None, True)
    await mod.set_spoilers("discord", "G1", False, actor=ACTOR)
    assert (await mod.rules("discord", "G1")).spoilers is False


async def test_every_change_is_audited_once_with_its_actor(store: Store) -> None:
    mod = store.moderation
    await mod.add_rule("discord", "G1", "term", "dragon", actor=ACTOR)
    await mod.add_rule("discord", "G1", "term", "dragon", actor=ACTOR)  # no change: no row
    await mod.add_rule("discord", "G1", "pattern", "x+y", actor=ACTOR)
    await mod.remove_rule("discord", "G1", "term", "dragon", actor=ACTOR)
    await mod.remove_rule("discord", "G1", "term", "dragon", actor=ACTOR)  # no change
    await mod.add_rule("discord", "G1", "channel", "C5", actor=ACTOR)
    await mod.remove_rule("discord", "G1", "channel", "C5", actor=ACTOR)
    await mod.set_review_channel("discord", "G1", "C9", actor=ACTOR)
    await mod.set_review_channel("discord", "G1", "C9", actor=ACTOR)  # no change
    await mod.set_spoilers("discord", "G1", True, actor=ACTOR)
    await mod.set_spoilers("discord", "G1", True, actor=ACTOR)  # no change

    audit = await store.ledger.audit_log(platform="discord", workspace_id="G1")
    assert [a.action for a in reversed(audit)] == [
        "block_term",
        "block_pattern",
        "unblock_term",
        "allow_channel",
        "disallow_channel",
        "set_review_channel",
        "set_spoilers",
    ]
    assert {a.actor for a in audit} == {ACTOR}
    assert await store.ledger.audit_log(workspace_id="G2") == ()


# --- reviews ---------------------------------------------------------------------------------


async def test_a_refusal_keeps_everything_needed_to_run_it_later(
    mod: ModerationStore, clock: FakeClock
) -> None:
    who = replace(requester("alice", roles=("R1", "R2")), is_admin=True)
    review = await mod.record_refusal(request(3), who, source="moderation", rule="violence")
    assert review.state is ReviewState.REFUSED
    assert review.requester == replace(who, is_admin=False)  # never acts as an admin later
    assert (review.source, review.rule, review.created_at) == (
        "moderation",
        "violence",
        clock.utc(),
    )
    assert await mod.review(review.review_id) == review
    assert await mod.review("no-such-review") is None


async def test_a_review_moves_refused_pending_decided_once(
    mod: ModerationStore, clock: FakeClock
) -> None:
    review_id = await refusal(mod)
    assert await mod.decide(review_id, approve=True, decided_by="boss") is None  # not asked
    assert await mod.mark_refused(review_id) is False  # not pending

    pending = await mod.mark_pending(review_id)
    assert pending is not None and pending.state is ReviewState.PENDING
    assert await mod.mark_pending(review_id) is None  # asked once
    assert await mod.mark_refused(review_id) is True  # the request never reached the admins
    assert (await mod.review(review_id)).state is ReviewState.REFUSED  # type: ignore[union-attr]
    assert await mod.mark_pending(review_id) is not None  # so it may be asked again

    clock.advance(minutes=5)
    decided = await mod.decide(review_id, approve=False, decided_by="boss")
    assert decided is not None and decided.state is ReviewState.DENIED
    assert (decided.decided_by, decided.decided_at) == ("boss", clock.utc())
    assert await mod.decide(review_id, approve=True, decided_by="boss2") is None
    assert await mod.mark_refused(review_id) is False
    assert await mod.review(review_id) == decided


async def test_concurrent_decisions_have_one_winner(mod: ModerationStore) -> None:
    review_id = await refusal(mod)
    await mod.mark_pending(review_id)
    results = await asyncio.gather(
        *(mod.decide(review_id, approve=i % 2 == 0, decided_by=f"admin{i}") for i in range(8))
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert await mod.review(review_id) == winners[0]


async def test_a_decision_is_audited(store: Store) -> None:
    review_id = await refusal(store.moderation)
    await store.moderation.mark_pending(review_id)
    await store.moderation.decide(review_id, approve=True, decided_by="boss")
    (entry,) = await store.ledger.audit_log(platform="discord", workspace_id="G1")
    assert (entry.actor, entry.action) == ("discord:boss", "approve_review")


# --- the log ---------------------------------------------------------------------------------


async def test_the_log_lists_a_servers_refusals_newest_first(
    mod: ModerationStore, clock: FakeClock
) -> None:
    first = await refusal(mod, ask=request(1, prompt="first dragon"))
    clock.advance(hours=1)
    second = await refusal(mod, ask=request(1, prompt="second dragon"), rule="term:wyrm")
    await refusal(mod, requester("carol", workspace="G2"))
    await refusal(mod, requester("dave", platform="slack"))

    entries = await mod.log("discord", "G1", since=clock.utc().replace(year=2000))
    assert [(e.prompt, e.review_id) for e in entries] == [
        ("second dragon", second),
        ("first dragon", first),
    ]
    newest = entries[0]
    assert (newest.at, newest.user_id, newest.channel_id) == (clock.utc(), "alice", "C1")
    assert (newest.source, newest.rule, newest.negative_prompt) == ("filter", "term:wyrm", "blurry")
    assert [e.review_id for e in await mod.log("discord", "G1", since=clock.utc())] == [second]
    assert len(await mod.log("discord", "G1", since=clock.utc().replace(year=2000), limit=1)) == 1
