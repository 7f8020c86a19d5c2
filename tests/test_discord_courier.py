"""Delivering on Discord a job that another bot process accepted (``DiscordCourier``).

Two real discord.py clients against the fake Discord: the accepting one receives the member's
``/imagine``, defers it as the adapter does (``Reply``) and stores the job's ``reach`` with the
adapter's own ``reach()``; the courier's client (an ``ImagineClient`` that only logged in, as
a process that never saw the interaction) answers from that reach alone. The job runs through
the real service and ledger, charged only once the courier has delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import discord
import pytest

from adapters.discord.client import ImagineClient, apply_endpoints, intents
from adapters.discord.config import DiscordSettings
from adapters.discord.courier import DiscordCourier
from adapters.discord.render import to_requester
from adapters.discord.reply import Reply, reach
from adapters.runtime import Runtime, open_runtime
from bot.config import Settings
from bot.errors import DeliveryError, JobTimeoutError
from bot.messages import DELIVERY_FAILED, describe
from bot.models import GenerationResult, JobRecord, JobState, Requester
from tests.fakes.discord import FakeDiscord, FakeInteraction, FakeMember, FakeMessage

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Accepted:
    """A member's deferred /imagine as the accepting process left it."""

    interaction: FakeInteraction
    reach: Mapping[str, str]
    requester: Requester


class AcceptingClient(discord.Client):
    """The process that received the command: it defers and stores the reach, then stops."""

    def __init__(self) -> None:
        super().__init__(intents=intents())
        self.accepted: asyncio.Queue[tuple[Mapping[str, str], Requester]] = asyncio.Queue()

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        reply = Reply(interaction)
        assert await reply.defer()
        await self.accepted.put((reach(interaction, reply), to_requester(interaction)))


@dataclass
class World:
    discord: FakeDiscord
    runtime: Runtime
    accepting: AcceptingClient
    courier: DiscordCourier

    async def accept(self, member: FakeMember, *, limit: int | None = None) -> Accepted:
        interaction = await self.discord.slash(
            "imagine",
            {"prompt": "a lighthouse at dusk"},
            member=member,
            attachment_size_limit=limit,
        )
        found, requester = await asyncio.wait_for(self.accepting.accepted.get(), 15)
        return Accepted(interaction, found, requester)

    async def run(self, accepted: Accepted, *, n: int = 1) -> tuple[GenerationResult, JobRecord]:
        """The job drawn here and delivered by the courier, as a handed-over job is."""
        service = self.runtime.service
        request = service.parse(f"a lighthouse at dusk --n {n}")

        async def deliver(result: GenerationResult) -> None:
            record = await service.job(result.job_id)
            await self.courier.deliver(record, accepted.reach, result)

        result = await service.generate(
            request, accepted.requester, reach=accepted.reach, deliver=deliver
        )
        return result, await service.job(result.job_id)

    def original(self, accepted: Accepted) -> FakeMessage:
        return self.discord.messages[accepted.interaction.original_id or ""]


@contextlib.asynccontextmanager
async def running_world(tmp_path: Path) -> AsyncIterator[World]:
    async with FakeDiscord() as fake:
        settings = DiscordSettings(
            token=fake.token,
            api_base_url=fake.api_base_url,
            gateway_url=fake.gateway_url,
            guild_ids=(int(fake.guild_id),),
        )
        routes = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        apply_endpoints(settings)  # as run_client does, undone below for the other tests
        try:
            async with open_runtime(
                Settings(database_url=f"sqlite:///{tmp_path / 'bot.db'}", image_api_key=None)
            ) as runtime:
                accepting = AcceptingClient()
                courier_client = ImagineClient(runtime=runtime, settings=settings)
                async with accepting, courier_client:
                    await accepting.login(fake.token)
                    gateway = asyncio.create_task(accepting.connect(reconnect=False))
                    try:
                        await fake.wait_connected()
                        await courier_client.login(fake.token)  # REST only: setup_hook runs
                        world = World(
                            fake, runtime, accepting, DiscordCourier(courier_client, runtime)
                        )
                        yield world
                    finally:
                        await accepting.close()
                        gateway.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await gateway
        finally:
            discord.http.Route.BASE = routes[0]
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = routes[1]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with running_world(tmp_path) as world:
        yield world


def _field(message: FakeMessage, name: str) -> str:
    return next(f["value"] for f in message.embeds[0]["fields"] if f["name"] == name)


async def test_the_client_registers_its_courier(world: World) -> None:
    assert "discord" in world.runtime.service.platforms


async def test_with_a_valid_token_the_members_message_becomes_the_result(world: World) -> None:
    member = world.discord.member("ada")
    accepted = await world.accept(member)
    assert accepted.reach["message"] == accepted.interaction.original_id

    result, record = await world.run(accepted, n=2)

    message = world.original(accepted)
    assert not message.deleted and not message.loading and message.content == ""
    assert message.embeds[0]["description"] == "a lighthouse at dusk"
    assert _field(message, "Seed") == str(result.seed)
    assert "Cost" in {f["name"] for f in message.embeds[0]["fields"]}
    assert [a.image().size for a in message.attachments] == [(1024, 1024)] * 2
    assert message.button("Reroll")["custom_id"] == f"imagine:reroll:{result.job_id}"
    assert message.button("Variations")["custom_id"] == f"imagine:vary:{result.job_id}"
    assert world.discord.channel_messages() == []
    assert record.state is JobState.CHARGED and record.charged_images == 2


async def test_images_are_fitted_to_the_interactions_upload_limit(world: World) -> None:
    accepted = await world.accept(world.discord.member(), limit=40_000)
    assert accepted.reach["limit"] == "40000"

    await world.run(accepted)

    [attachment] = world.original(accepted).attachments
    assert attachment.size <= 40_000
    assert attachment.image().size[0] > 0


async def test_with_an_expired_token_the_result_is_posted_mentioning_only_the_member(
    world: World,
) -> None:
    member = world.discord.member("bob")
    accepted = await world.accept(member)
    world.discord.expire(accepted.interaction)

    result, record = await world.run(accepted)

    [post] = world.discord.channel_messages()
    assert f"<@{member.id}>" in post.content
    assert post.mentioned_user_ids() == {member.id}
    assert post.allowed_mentions is not None
    assert post.allowed_mentions.get("parse", []) == []
    assert post.embeds[0]["description"] == "a lighthouse at dusk"
    assert len(post.attachments) == 1
    assert post.button("Reroll")["custom_id"] == f"imagine:reroll:{result.job_id}"
    assert world.original(accepted).deleted  # the stale "thinking…" message
    assert record.state is JobState.CHARGED


async def test_fail_turns_the_members_message_into_the_error(world: World) -> None:
    accepted = await world.accept(world.discord.member())
    result = await world.runtime.service.generate(
        world.runtime.service.parse("a lighthouse"), accepted.requester, reach=accepted.reach
    )
    record = await world.runtime.service.job(result.job_id)
    error = JobTimeoutError(record.job_id, 60.0)

    await world.courier.fail(record, accepted.reach, error)

    message = world.original(accepted)
    assert message.content == describe(error)
    assert message.embeds == [] and message.attachments == [] and message.buttons() == []
    assert world.discord.channel_messages() == []


async def test_fail_with_an_expired_token_posts_the_error_mentioning_the_member(
    world: World,
) -> None:
    member = world.discord.member()
    accepted = await world.accept(member)
    world.discord.expire(accepted.interaction)
    result = await world.runtime.service.generate(
        world.runtime.service.parse("a lighthouse"), accepted.requester, reach=accepted.reach
    )
    record = await world.runtime.service.job(result.job_id)
    error = JobTimeoutError(record.job_id, 60.0)

    await world.courier.fail(record, accepted.reach, error)

    [post] = world.discord.channel_messages()
    assert post.content == f"<@{member.id}> {describe(error)}"
    assert post.mentioned_user_ids() == {member.id}
    assert world.original(accepted).deleted


async def test_a_result_discord_refuses_is_refunded_and_the_member_told(world: World) -> None:
    accepted = await world.accept(world.discord.member())
    world.discord.reject_next(
        "/webhooks/",
        method="PATCH",
        status=400,
        code=50035,
        message="Invalid Form Body",
        with_files=True,
    )

    with pytest.raises(DeliveryError) as raised:
        await world.run(accepted)

    assert raised.value.notified
    assert world.original(accepted).content == DELIVERY_FAILED
    assert raised.value.job_id is not None
    record = await world.runtime.service.job(raised.value.job_id)
    assert record.state is JobState.REFUNDED
