"""Moderation in the core on a real store: server rules and their audit rows, the moderation
log, the review state machine (across a restart), and the service: a refused prompt never
holds quota nor reaches the provider; an approved one runs for the user.

The behavioural tests run once per store kind (``tests.ledger_support.STORE_KINDS``), through
the store's protocols only; the last ones are about SQLite files (restart, migration)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.catalog import load_catalog
from bot.errors import (
    ChannelNotAllowedError,
    DeliveryError,
    InvalidRequestError,
    PermissionDeniedError,
    PromptRefusedError,
    ReviewNotYoursError,
)
from bot.event_key import review_run
from bot.messages import (
    NO_REVIEW_CHANNEL,
    REVIEW_ALREADY_REQUESTED,
    REVIEW_NOT_FOUND,
    describe,
    review_job_failed_text,
)
from bot.models import (
    GenerationRequest,
    GenerationResult,
    JobState,
    Limits,
    Requester,
    Review,
    ReviewState,
)
from bot.moderation.admin import BlockChange, ModerationAdmin, split_block_term
from bot.moderation.approval import ApprovedRun, run_approved
from bot.moderation.screening import Moderation, ReviewPost
from bot.service import Deliver, ImageService
from bot.store.database import Store
from bot.store.ledger import Ledger, SqliteLedger
from bot.store.moderation import SqliteModerationStore
from bot.store.schema import MIGRATIONS, SCHEMA_VERSION
from tests.fakes.clock import FakeClock
from tests.fakes.provider import ScriptedProvider
from tests.ledger_support import STORE_KINDS, open_store_of

ALICE = Requester(
    platform="discord",
    workspace_id="G1",
    channel_id="C1",
    user_id="alice",
    role_ids=("R1",),
    display_name="Alice",
)
BOB = Requester(platform="discord", workspace_id="G1", channel_id="C1", user_id="bob")
ADMIN = Requester(
    platform="discord", workspace_id="G1", channel_id="C9", user_id="boss", is_admin=True
)
OTHER_ADMIN = Requester(
    platform="discord", workspace_id="G2", channel_id="C1", user_id="boss2", is_admin=True
)
SLACK_ADMIN = Requester(
    platform="slack", workspace_id="G1", channel_id="C1", user_id="boss", is_admin=True
)
FLUX = "black-forest-labs/flux-1-schnell"


def req(prompt: str, negative: str | None = None, n: int = 1) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt, model=FLUX, size="1024x1024", n=n, negative_prompt=negative
    )


@pytest.fixture(params=STORE_KINDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    async with await open_store_of(
        request.param, tmp_path, defaults=Limits(images_per_day=10), clock=clock
    ) as store:
        yield store


@pytest.fixture
def ledger(store: Store) -> Ledger:
    return store.ledger


@pytest.fixture
def moderation(store: Store) -> Moderation:
    return Moderation.open(store.moderation)


@pytest.fixture
def admin(moderation: Moderation) -> ModerationAdmin:
    return ModerationAdmin(moderation)


@pytest.fixture
def provider() -> ScriptedProvider:
    return ScriptedProvider()


@pytest.fixture
def service(ledger: Ledger, provider: ScriptedProvider, moderation: Moderation) -> ImageService:
    return ImageService(
        catalog=load_catalog(), provider=provider, ledger=ledger, moderation=moderation
    )


async def refuse(moderation: Moderation, prompt: str = "nsfw art") -> str:
    with pytest.raises(PromptRefusedError) as caught:
        await moderation.screen(req(prompt), ALICE)
    assert caught.value.review_id is not None
    return caught.value.review_id


# --- rules and the admin API -------------------------------------------------------------


async def test_admins_edit_the_server_list_and_every_change_is_audited(
    admin: ModerationAdmin, moderation: Moderation, ledger: Ledger
) -> None:
    assert await admin.block_add(ADMIN, "  Dragon  ") is True
    assert await admin.block_add(ADMIN, "dragon") is False  # already there: no audit row
    assert await admin.block_add_pattern(ADMIN, r"blood\s*bath") is True
    rules = await admin.block_list(ADMIN)
    assert rules.blocked_terms == ("dragon",)
    assert rules.blocked_patterns == (r"blood\s*bath",)

    with pytest.raises(PromptRefusedError) as caught:
        await moderation.screen(req("a DR4GON"), ALICE)
    assert (caught.value.source, caught.value.rule) == ("filter", "term:dragon")
    with pytest.raises(PromptRefusedError):
        await moderation.screen(req("a bloodbath"), ALICE)
    # Other servers are not affected.
    await moderation.screen(req("a dragon"), Requester("discord", "G2", "C1", "carol"))

    assert await admin.block_remove(ADMIN, "DRAGON") is True
    assert await admin.block_remove(ADMIN, "/blood\\s*bath/") is True
    assert await admin.block_remove(ADMIN, "dragon") is False
    await moderation.screen(req("a dragon in a bloodbath"), ALICE)
    assert await admin.block_add(ADMIN, "dragon") is True  # re-added after removal

    audit = await ledger.audit_log(platform="discord", workspace_id="G1")
    assert [(a.action, a.scope.subject_id) for a in reversed(audit)] == [
        ("block_term", "dragon"),
        ("block_pattern", r"blood\s*bath"),
        ("unblock_term", "dragon"),
        ("unblock_pattern", r"blood\s*bath"),
        ("block_term", "dragon"),
    ]
    assert {a.actor for a in audit} == {"discord:boss"}


async def test_invalid_or_risky_patterns_are_refused_and_not_stored(
    admin: ModerationAdmin,
) -> None:
    for pattern, problem in [
        ("(?<!good )dragon", "look ahead or behind"),
        ("a++", "possessive"),
        ("(unclosed", "not a valid"),
        (".*", "matches every prompt"),
    ]:
        with pytest.raises(InvalidRequestError, match=problem):
            await admin.block_add_pattern(ADMIN, pattern)
    assert (await admin.block_list(ADMIN)).blocked_patterns == ()


async def test_non_admins_are_refused_every_admin_action(admin: ModerationAdmin) -> None:
    calls = [
        admin.block_add(ALICE, "x"),
        admin.block_add_pattern(ALICE, "x+"),
        admin.block_remove(ALICE, "x"),
        admin.block_list(ALICE),
        admin.set_review_channel(ALICE, "C9"),
        admin.allow_channel(ALICE, "C1"),
        admin.disallow_channel(ALICE, "C1"),
        admin.set_spoilers(ALICE, True),
        admin.log(ALICE, 7),
    ]
    for call in calls:
        with pytest.raises(PermissionDeniedError) as caught:
            await call
        assert describe(caught.value).startswith("Only admins can")


async def test_admins_act_only_on_their_own_server(
    admin: ModerationAdmin, moderation: Moderation
) -> None:
    await admin.block_add(OTHER_ADMIN, "dragon")
    await admin.allow_channel(SLACK_ADMIN, "C7")  # same workspace id, other platform
    await moderation.screen(req("a dragon"), ALICE)
    assert (await admin.block_list(ADMIN)).blocked_terms == ()
    assert (await moderation.rules("discord", "G1")).allowed_channel_ids == ()


async def test_spoilers_apply_in_the_servers_ordinary_channels_only(
    admin: ModerationAdmin, moderation: Moderation
) -> None:
    assert not await moderation.spoilers("discord", "G1", age_restricted=False)
    await admin.set_spoilers(ADMIN, True)
    assert await moderation.spoilers("discord", "G1", age_restricted=False)
    assert not await moderation.spoilers("discord", "G1", age_restricted=True)
    assert not await moderation.spoilers("discord", "", age_restricted=False)  # a DM
    assert not await moderation.spoilers("discord", "G2", age_restricted=False)


async def test_settings_channels_and_spoilers_are_stored_and_audited(
    admin: ModerationAdmin, moderation: Moderation, ledger: Ledger
) -> None:
    await admin.set_review_channel(ADMIN, "C9")
    await admin.set_review_channel(ADMIN, "C9")  # unchanged: no audit row
    await admin.set_spoilers(ADMIN, True)
    await admin.allow_channel(ADMIN, "C1")
    await admin.allow_channel(ADMIN, "C2")
    assert await admin.disallow_channel(ADMIN, "C2") is True
    await admin.set_review_channel(ADMIN, None)

    rules = await moderation.rules("discord", "G1")
    assert rules.review_channel_id is None
    assert rules.spoilers is True
    assert rules.allowed_channel_ids == ("C1",)
    actions = [a.action for a in reversed(await ledger.audit_log(workspace_id="G1"))]
    assert actions == [
        "set_review_channel",
        "set_spoilers",
        "allow_channel",
        "allow_channel",
        "disallow_channel",
        "set_review_channel",
    ]


async def test_the_channel_allow_list_refuses_other_channels_before_anything_else(
    admin: ModerationAdmin, service: ImageService, provider: ScriptedProvider
) -> None:
    await admin.allow_channel(ADMIN, "C5")
    elsewhere = Requester("discord", "G1", "C1", "alice")
    with pytest.raises(ChannelNotAllowedError) as caught:
        await service.generate(req("nsfw"), elsewhere)  # the channel, not the word
    assert caught.value.allowed_channel_ids == ("C5",)
    assert "<#C5>" in describe(caught.value, channel_label=lambda c: f"<#{c}>")
    assert provider.calls == []
    result = await service.generate(req("a fox"), Requester("discord", "G1", "C5", "alice"))
    assert len(result.images) == 1


# --- the log and the service --------------------------------------------------------------


async def test_a_refused_prompt_costs_nothing_and_never_reaches_the_provider(
    service: ImageService, provider: ScriptedProvider, ledger: Ledger, admin: ModerationAdmin
) -> None:
    with pytest.raises(PromptRefusedError) as caught:
        await service.generate(req("a lovely p0rn still", n=3), ALICE, event_id="ev-1")
    assert describe(caught.value) == (
        "This prompt was refused by this server's rules. Nothing was charged."
    )
    assert "p0rn" not in describe(caught.value) and "porn" not in describe(caught.value)
    with pytest.raises(PromptRefusedError):
        await service.generate(req("a castle", negative="n.u.d.e"), ALICE)

    assert provider.calls == []
    allowance = await ledger.allowance(ALICE)
    usage = allowance.get("images_per_day")
    assert usage is not None and usage.used == 0
    report = await ledger.usage(since=ledger.now().replace(year=2000))
    assert report.rows == ()

    entries = await admin.log(ADMIN, 7)
    assert [(e.prompt, e.negative_prompt, e.source) for e in entries] == [
        ("a castle", "n.u.d.e", "filter"),
        ("a lovely p0rn still", None, "filter"),
    ]
    assert entries[0].rule == "builtin:nude (negative prompt)"
    assert entries[1].rule == "builtin:porn"
    assert (entries[1].user_id, entries[1].channel_id, entries[1].workspace_id) == (
        "alice",
        "C1",
        "G1",
    )
    assert entries[1].review_id == caught.value.review_id
    # The same event id can still run once the prompt is fixed: the refusal held nothing.
    result = await service.generate(req("a castle"), ALICE, event_id="ev-1")
    assert result.images


async def test_the_log_covers_the_asked_days_only(
    moderation: Moderation, admin: ModerationAdmin, clock: FakeClock
) -> None:
    await refuse(moderation, "old nsfw")
    clock.advance(days=10)
    await refuse(moderation, "new nsfw")
    assert [e.prompt for e in await admin.log(ADMIN, 7)] == ["new nsfw"]
    assert [e.prompt for e in await admin.log(ADMIN, 30)] == ["new nsfw", "old nsfw"]
    assert await admin.log(OTHER_ADMIN, 30) == ()
    with pytest.raises(InvalidRequestError):
        await admin.log(ADMIN, 0)


# --- reviews ------------------------------------------------------------------------------


async def test_review_goes_refused_pending_approved_and_runs_for_the_user(
    moderation: Moderation,
    admin: ModerationAdmin,
    service: ImageService,
    provider: ScriptedProvider,
    ledger: Ledger,
) -> None:
    await admin.set_review_channel(ADMIN, "C9")
    with pytest.raises(PromptRefusedError) as caught:
        await service.generate(req("a nude statue in a museum", n=2), ALICE)
    review_id = caught.value.review_id
    assert review_id is not None
    review = await moderation.review(review_id)
    assert review.state is ReviewState.REFUSED
    assert review.requester.user_id == "alice" and review.requester.role_ids == ("R1",)

    with pytest.raises(ReviewNotYoursError) as not_yours:
        await moderation.ask(review_id, BOB)
    assert "Only the person whose prompt was refused" in describe(not_yours.value)
    with pytest.raises(PermissionDeniedError):
        await moderation.ask(review_id, ADMIN)  # not even an admin
    with pytest.raises(InvalidRequestError, match="nobody has asked"):
        await moderation.decide(review_id, ADMIN, True)

    post = await moderation.ask(review_id, ALICE)
    assert post.review.state is ReviewState.PENDING and post.channel_id == "C9"
    with pytest.raises(InvalidRequestError, match="already asked"):
        await moderation.ask(review_id, ALICE)

    with pytest.raises(PermissionDeniedError):
        await moderation.decide(review_id, BOB, True)
    with pytest.raises(PermissionDeniedError):
        await moderation.decide(review_id, OTHER_ADMIN, True)
    approved = await moderation.decide(review_id, ADMIN, True)
    assert approved.state is ReviewState.APPROVED
    assert approved.decided_by == "boss" and approved.decided_at == ledger.now()
    with pytest.raises(InvalidRequestError, match="already decided"):
        await moderation.decide(review_id, ADMIN, False)

    # The approved job runs without screening, charged to the original user.
    run = await run_approved(service, approved, deliver=delivered([]))
    assert run.to_user is None and run.to_admin is None
    result = run.result
    assert result is not None and len(result.images) == 2
    assert provider.calls[0].prompt == "a nude statue in a museum"
    record = await ledger.job(result.job_id)
    assert record.state is JobState.CHARGED
    assert record.requester.user_id == "alice"
    assert record.event_id == f"review:{review_id}"
    audit = await ledger.audit_log(workspace_id="G1")
    assert (audit[0].action, audit[0].actor, audit[0].scope.subject_id) == (
        "approve_review",
        "discord:boss",
        "alice",
    )


async def test_a_denied_review_stays_denied(moderation: Moderation, admin: ModerationAdmin) -> None:
    await admin.set_review_channel(ADMIN, "C9")
    review_id = await refuse(moderation)
    await moderation.ask(review_id, ALICE)
    denied = await moderation.decide(review_id, ADMIN, False)
    assert denied.state is ReviewState.DENIED
    with pytest.raises(InvalidRequestError):
        await moderation.decide(review_id, ADMIN, True)
    assert (await moderation.review(review_id)).state is ReviewState.DENIED


async def test_a_request_that_never_reached_the_admins_can_be_made_again(
    moderation: Moderation, admin: ModerationAdmin
) -> None:
    await admin.set_review_channel(ADMIN, "C9")
    review_id = await refuse(moderation)
    await moderation.ask(review_id, ALICE)
    # The adapter could not post in the review channel.
    await moderation.withdraw(review_id)
    assert (await moderation.review(review_id)).state is ReviewState.REFUSED
    again = await moderation.ask(review_id, ALICE)
    assert again.review.state is ReviewState.PENDING
    # A decided review is never reopened.
    await moderation.decide(review_id, ADMIN, False)
    await moderation.withdraw(review_id)
    assert (await moderation.review(review_id)).state is ReviewState.DENIED


async def test_asking_needs_a_review_channel(moderation: Moderation) -> None:
    review_id = await refuse(moderation)
    with pytest.raises(InvalidRequestError) as caught:
        await moderation.ask(review_id, ALICE)
    assert caught.value.reason == NO_REVIEW_CHANNEL
    assert "ask an admin" in describe(caught.value)
    with pytest.raises(InvalidRequestError):
        await moderation.review("no-such-review")


async def test_reviews_survive_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "imagine.db"
    async with await SqliteLedger.open(path, clock=clock.utc) as ledger:
        moderation = Moderation.open(SqliteModerationStore.on(ledger))
        await ModerationAdmin(moderation).set_review_channel(ADMIN, "C9")
        review_id = await refuse(moderation, "x.x.x art")
        await moderation.ask(review_id, ALICE)

    async with await SqliteLedger.open(path, clock=clock.utc) as ledger:
        moderation = Moderation.open(SqliteModerationStore.on(ledger))
        decided = await moderation.decide(review_id, ADMIN, True)
        assert decided.state is ReviewState.APPROVED
        assert decided.request.prompt == "x.x.x art"
        assert decided.requester.display_name == "Alice"
        assert (await moderation.rules("discord", "G1")).review_channel_id == "C9"


async def test_concurrent_decisions_have_one_winner(
    moderation: Moderation, admin: ModerationAdmin
) -> None:
    await admin.set_review_channel(ADMIN, "C9")
    review_id = await refuse(moderation)
    await moderation.ask(review_id, ALICE)
    second = Requester("discord", "G1", "C9", "boss-two", is_admin=True)
    results = await asyncio.gather(
        moderation.decide(review_id, ADMIN, True),
        moderation.decide(review_id, second, False),
        return_exceptions=True,
    )
    assert sum(isinstance(r, InvalidRequestError) for r in results) == 1


# --- "Ask an admin" and the approved job: the core operations every platform calls ---------


def delivered(into: list[GenerationResult], error: BaseException | None = None) -> Deliver:
    """A platform's delivery: keeps what it was given, then fails with ``error`` if any."""

    async def deliver(result: GenerationResult) -> None:
        into.append(result)
        if error is not None:
            raise error

    return deliver


async def test_ask_refuses_before_it_changes_anything(
    moderation: Moderation, admin: ModerationAdmin
) -> None:
    review_id = await refuse(moderation)
    # Someone else's review: refused before the server's settings are even looked at (there
    # is no review channel yet, and Bob is not told so).
    with pytest.raises(ReviewNotYoursError):
        await moderation.ask(review_id, BOB)
    with pytest.raises(InvalidRequestError) as caught:
        await moderation.ask(review_id, ALICE)
    assert caught.value.reason == NO_REVIEW_CHANNEL
    with pytest.raises(InvalidRequestError) as missing:
        await moderation.ask("no-such-review", ALICE)
    assert missing.value.reason == REVIEW_NOT_FOUND
    review = await moderation.review(review_id)
    assert review.state is ReviewState.REFUSED

    # Once there is a channel, the same click goes through, to that channel.
    await admin.set_review_channel(ADMIN, "C9")
    post = await moderation.ask(review_id, ALICE)
    assert (post.review.review_id, post.review.state, post.channel_id) == (
        review_id,
        ReviewState.PENDING,
        "C9",
    )
    assert post.review.request.prompt == "nsfw art"


async def test_a_second_ask_is_told_it_was_asked_whatever_the_server_now_says(
    moderation: Moderation, admin: ModerationAdmin
) -> None:
    await admin.set_review_channel(ADMIN, "C9")
    review_id = await refuse(moderation)
    await moderation.ask(review_id, ALICE)
    await admin.set_review_channel(ADMIN, None)
    with pytest.raises(InvalidRequestError) as caught:
        await moderation.ask(review_id, ALICE)
    assert caught.value.reason == REVIEW_ALREADY_REQUESTED
    assert (await moderation.review(review_id)).state is ReviewState.PENDING
    # A post that failed is withdrawn; asking again goes to the channel set by then.
    await admin.set_review_channel(ADMIN, "C7")
    await moderation.withdraw(review_id)
    assert (await moderation.ask(review_id, ALICE)).channel_id == "C7"
    # A decided review is never asked about again.
    await moderation.decide(review_id, ADMIN, True)
    with pytest.raises(InvalidRequestError) as decided:
        await moderation.ask(review_id, ALICE)
    assert decided.value.reason == REVIEW_ALREADY_REQUESTED


async def test_two_concurrent_asks_post_once(
    moderation: Moderation, admin: ModerationAdmin
) -> None:
    await admin.set_review_channel(ADMIN, "C9")
    review_id = await refuse(moderation)
    results = await asyncio.gather(
        moderation.ask(review_id, ALICE), moderation.ask(review_id, ALICE), return_exceptions=True
    )
    [post] = [r for r in results if isinstance(r, ReviewPost)]
    [lost] = [r for r in results if isinstance(r, InvalidRequestError)]
    assert post.review.state is ReviewState.PENDING
    assert lost.reason == REVIEW_ALREADY_REQUESTED


async def approved_review(
    moderation: Moderation, admin: ModerationAdmin, prompt: str = "a nude statue"
) -> Review:
    await admin.set_review_channel(ADMIN, "C9")
    review_id = await refuse(moderation, prompt)
    await moderation.ask(review_id, ALICE)
    return await moderation.decide(review_id, ADMIN, True)


async def test_an_approved_review_runs_once_unscreened_for_its_user_under_its_key(
    moderation: Moderation,
    admin: ModerationAdmin,
    service: ImageService,
    provider: ScriptedProvider,
    ledger: Ledger,
) -> None:
    review = await approved_review(moderation, admin)
    given: list[GenerationResult] = []
    run = await run_approved(service, review, deliver=delivered(given))
    assert run.result is not None and given == [run.result]
    assert (run.to_user, run.to_admin) == (None, None)
    # The refused prompt itself ran (the screen would refuse it), for Alice, under the key.
    assert [call.prompt for call in provider.calls] == ["a nude statue"]
    record = await ledger.job(run.result.job_id)
    assert record.state is JobState.CHARGED
    assert record.requester == review.requester
    assert record.event_id == review_run(review.review_id)
    assert len(await admin.log(ADMIN, 7)) == 1  # unscreened: no second refusal logged
    # A second run of the same approval (a redelivered click) does nothing and says nothing.
    again = await run_approved(service, review, deliver=delivered(given))
    assert again == ApprovedRun()
    assert len(provider.calls) == 1 and len(given) == 1


async def test_a_failed_approved_job_is_refunded_and_the_user_and_admin_are_told(
    moderation: Moderation,
    admin: ModerationAdmin,
    service: ImageService,
    ledger: Ledger,
) -> None:
    review = await approved_review(moderation, admin)
    given: list[GenerationResult] = []
    failure = DeliveryError("the platform refused the upload")
    run = await run_approved(service, review, deliver=delivered(given, failure))
    assert run.result is None
    assert run.to_user == describe(failure)
    assert run.to_admin == review_job_failed_text(describe(failure))
    [result] = given
    assert (await ledger.job(result.job_id)).state is JobState.REFUNDED
    usage = (await ledger.allowance(ALICE)).get("images_per_day")
    assert usage is not None and usage.used == 0


async def test_a_user_the_delivery_already_told_is_not_told_twice(
    moderation: Moderation, admin: ModerationAdmin, service: ImageService
) -> None:
    review = await approved_review(moderation, admin)
    failure = DeliveryError("not in the channel", notified=True)
    run = await run_approved(service, review, deliver=delivered([], failure))
    assert run.to_user is None
    assert run.to_admin == review_job_failed_text(describe(failure))


async def test_only_an_approved_review_runs(
    moderation: Moderation,
    admin: ModerationAdmin,
    service: ImageService,
    provider: ScriptedProvider,
) -> None:
    await admin.set_review_channel(ADMIN, "C9")
    review_id = await refuse(moderation)
    refused = await moderation.review(review_id)
    pending = (await moderation.ask(review_id, ALICE)).review
    denied = await moderation.decide(review_id, ADMIN, False)
    for review in (refused, pending, denied):
        with pytest.raises(ValueError, match=f"is {review.state}, not approved"):
            await run_approved(service, review, deliver=delivered([]))
    assert provider.calls == []


async def test_the_schema_is_at_the_moderation_version() -> None:
    assert SCHEMA_VERSION >= 2
    async with await SqliteLedger.open(":memory:") as ledger:
        store = SqliteModerationStore.on(ledger)
        assert (await store.rules("discord", "G1")).blocked_terms == ()


def test_admins_type_patterns_between_slashes() -> None:
    assert split_block_term(" /n[a@]ked/ ") == (True, "n[a@]ked")
    assert split_block_term("dragon") == (False, "dragon")
    assert split_block_term("/") == (False, "/")


async def test_what_an_admin_types_is_blocked_and_unblocked_the_same_way_everywhere(
    admin: ModerationAdmin, moderation: Moderation
) -> None:
    assert await admin.block(ADMIN, " /dr[a4]gon/ ") == BlockChange("dr[a4]gon", True, True)
    assert await admin.block(ADMIN, "dr[a4]gon/") == BlockChange("dr[a4]gon/", False, True)
    assert await admin.block(ADMIN, "/dr[a4]gon/") == BlockChange("dr[a4]gon", True, False)
    rules = await moderation.rules("discord", "G1")
    assert rules.blocked_patterns == ("dr[a4]gon",)
    # "/regex/" removes the pattern, not a word spelled like its inside.
    assert await admin.unblock(ADMIN, "/dr[a4]gon/") == BlockChange("dr[a4]gon", True, True)
    rules = await moderation.rules("discord", "G1")
    assert rules.blocked_patterns == () and len(rules.blocked_terms) == 1
    assert await admin.unblock(ADMIN, "/dr[a4]gon/") == BlockChange("dr[a4]gon", True, False)


async def test_a_version_1_database_migrates_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO jobs (job_id, platform, workspace_id, channel_id, user_id, prompt, model,"
        " size, n, held_images, held_micros, day, month, created_at) VALUES ('j1', 'discord',"
        " 'G1', 'C1', 'alice', 'a fox', 'm', '1024x1024', 1, 1, 0, '2026-06-16', '2026-06',"
        " '2026-06-16T09:00:00.000000+00:00')"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    async with await SqliteLedger.open(path) as ledger:
        assert (await ledger.job("j1")).request.prompt == "a fox"
        moderation = Moderation.open(SqliteModerationStore.on(ledger))
        await ModerationAdmin(moderation).block_add(ADMIN, "dragon")
        assert (await moderation.rules("discord", "G1")).blocked_terms == ("dragon",)
