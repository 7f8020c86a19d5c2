"""Delivering on Slack a job that another bot process accepted (``SlackCourier``).

The real slack-sdk Web API client against the fake Slack. Each job's ``reach`` is what the
adapter stores for it: the fake's own slash-command or mention payload, read by the adapter's
converters (``from_slash_command``, ``from_mention``) and ``reach()``. The job runs through
the real service and ledger, charged only once the courier has delivered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.chat import SlackChat
from adapters.slack.courier import SlackCourier
from adapters.slack.notice import reach
from adapters.slack.render import (
    REROLL_ACTION_ID,
    Origin,
    escape,
    from_mention,
    from_slash_command,
    initial_comment,
)
from adapters.slack.wiring import wire
from bot.admin import QuotaAdmin
from bot.catalog import load_catalog
from bot.errors import DeliveryError, JobTimeoutError
from bot.messages import describe
from bot.models import GenerationResult, JobRecord, JobState
from bot.moderation.admin import ModerationAdmin
from bot.moderation.screening import Moderation
from bot.provider.preview import PreviewProvider
from bot.service import ImageService
from bot.store.database import Store
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.ledger_support import open_store_of

pytestmark = pytest.mark.e2e

PROMPT = "a red fox in the snow"


@dataclass
class World:
    slack: FakeSlack
    store: Store
    service: ImageService
    chat: SlackChat
    courier: SlackCourier
    clock: FakeClock

    def command(self, *, user: str = "U1", channel: str = "C1") -> tuple[Origin, str]:
        """A slash command's origin and the key of its response_url."""
        payload = self.slack.slash_payload(PROMPT, user=user, channel=channel)
        return from_slash_command(payload), str(payload["response_url"]).rsplit("/", 1)[-1]

    async def run(self, origin: Origin) -> tuple[GenerationResult, JobRecord]:
        """The job drawn here and delivered by the courier, as a handed-over job is."""
        found = reach(origin)

        async def deliver(result: GenerationResult) -> None:
            await self.courier.deliver(await self.service.job(result.job_id), found, result)

        result = await self.service.generate(
            self.service.parse(PROMPT), origin.requester(), reach=found, deliver=deliver
        )
        return result, await self.service.job(result.job_id)

    async def record_of(self, origin: Origin) -> tuple[JobRecord, Mapping[str, str]]:
        """A job accepted for ``origin`` (drawn and settled here; the courier only answers)."""
        found = reach(origin)
        result = await self.service.generate(
            self.service.parse(PROMPT), origin.requester(), reach=found
        )
        return await self.service.job(result.job_id), found

    def responses(self, key: str) -> list[Mapping[str, Any]]:
        return [r.body for r in self.slack.responses if r.key == key]


@pytest.fixture
async def world(tmp_path: Path, clock: FakeClock) -> AsyncIterator[World]:
    clock.set(datetime.now(UTC))  # jobs are accepted now, as the courier's wall clock reads
    async with FakeSlack() as slack, aiohttp.ClientSession() as session:
        slack.add_user("U1", "ann")
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.base_url, session=session)
        store = await open_store_of("sqlite-file", tmp_path, clock=clock)
        try:
            catalog = load_catalog()
            service = ImageService(catalog=catalog, provider=PreviewProvider(), ledger=store.ledger)
            chat = SlackChat(service=service, client=client, session=session)
            yield World(slack, store, service, chat, SlackCourier(chat), clock)
        finally:
            await store.close()


async def test_wiring_registers_the_courier(world: World) -> None:
    moderation = Moderation.open(world.store.moderation)
    app = AsyncApp(client=world.chat.client, signing_secret="unused", name="imagine-bot")
    wire(
        app,
        service=world.service,
        admin=QuotaAdmin(world.store.ledger),
        moderation_admin=ModerationAdmin(moderation),
        client=world.chat.client,
        session=world.chat.session,
    )
    assert "slack" in world.service.platforms


async def test_a_slash_commands_result_is_uploaded_and_its_queue_note_removed(
    world: World,
) -> None:
    origin, key = world.command()

    result, record = await world.run(origin)

    [upload] = world.slack.uploads_in("C1")
    assert upload.thread_ts is None
    assert upload.initial_comment == initial_comment(result, user_id="U1")
    assert upload.initial_comment.startswith(f"<@U1>: {PROMPT}")
    assert upload.data is not None and upload.data.startswith(b"\x89PNG")
    [upload_call] = world.slack.calls("files.completeUploadExternal")
    assert upload_call.token == world.slack.bot_token
    assert world.responses(key) == [
        {"text": "", "delete_original": True, "response_type": "ephemeral"}
    ]
    [reroll] = world.slack.posted("C1")
    [button] = reroll.buttons()
    assert button["action_id"] == REROLL_ACTION_ID and button["value"] == result.job_id
    assert record.state is JobState.CHARGED


async def test_a_mention_in_a_thread_is_answered_in_that_thread(world: World) -> None:
    origin = from_mention(world.slack.mention_payload(PROMPT, thread_ts="1700000000.000001"))

    result, _ = await world.run(origin)

    [upload] = world.slack.uploads_in("C1")
    assert upload.thread_ts == "1700000000.000001"
    assert upload.initial_comment == initial_comment(result, user_id="U1")
    [reroll] = world.slack.posted("C1")
    assert reroll.thread_ts == "1700000000.000001"
    assert world.slack.responses == []


async def test_a_top_level_mention_is_answered_in_the_mentions_own_thread(world: World) -> None:
    payload = world.slack.mention_payload(PROMPT)
    origin = from_mention(payload)

    await world.run(origin)

    [upload] = world.slack.uploads_in("C1")
    assert upload.thread_ts == payload["event"]["ts"]


async def test_a_response_url_past_its_30_minutes_is_left_alone(world: World) -> None:
    world.clock.set(datetime.now(UTC) - timedelta(minutes=31))  # the command came long ago
    origin, key = world.command()

    await world.run(origin)

    assert len(world.slack.uploads_in("C1")) == 1
    assert world.responses(key) == []


async def test_an_upload_slack_refuses_is_refunded_and_the_member_told(world: World) -> None:
    origin, key = world.command(channel="C2")  # the bot is not a member of C2

    with pytest.raises(DeliveryError) as raised:
        await world.run(origin)

    assert world.slack.uploads_in("C2") == []
    [told] = world.responses(key)
    assert "/invite" in told["text"]
    assert raised.value.job_id is not None
    record = await world.service.job(raised.value.job_id)
    assert record.state is JobState.REFUNDED


async def test_fail_is_an_ephemeral_to_the_member_in_the_channel(world: World) -> None:
    origin, key = world.command()
    record, found = await world.record_of(origin)
    error = JobTimeoutError(record.job_id, 60.0)

    await world.courier.fail(record, found, error)

    [ephemeral] = world.slack.calls("chat.postEphemeral")
    assert ephemeral.args["user"] == "U1" and ephemeral.args["channel"] == "C1"
    assert world.slack.ephemeral_to("U1") == [escape(describe(error))]
    assert world.responses(key) == []
    assert world.slack.uploads_in("C1") == []
