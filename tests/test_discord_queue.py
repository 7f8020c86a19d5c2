"""Queue feedback on Discord, end to end: the real ``imagine-bot run`` with one provider slot
(``MAX_CONCURRENT_JOBS=1``), against the fake Discord and a fake image API whose ``Stall``
answer holds the slot until the test releases it, so the queue fills deterministically.

A waiting job's loading message shows its place and an ETA with a Cancel button, switches to
"Generating…" when the job starts, and becomes the result; Cancel takes a queued job out,
refunds it and keeps it from the provider; only the requester or an admin may cancel.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from tests.fakes.discord import FakeDiscord, FakeInteraction, FakeMember, FakeMessage
from tests.fakes.image_api import FakeImageAPI
from tests.fakes.process import BotProcess

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

DAILY_IMAGES = 8
CANCELLED = "Cancelled. Nothing was charged."
QUEUED = re.compile(r"^Queued: (you're next|\d+ ahead of you)(, about \d+ (s|min))?\.$")


@dataclass
class World:
    discord: FakeDiscord
    api: FakeImageAPI
    bot: BotProcess

    async def imagine(self, prompt: str, member: FakeMember) -> FakeInteraction:
        return await self.discord.slash("imagine", {"prompt": prompt}, member=member)

    async def queued(self, interaction: FakeInteraction) -> FakeMessage:
        """The interaction's loading message once it shows a queue position."""

        def showing() -> FakeMessage | None:
            message = self.discord.messages.get(interaction.original_id or "")
            if message is not None and message.content.startswith("Queued"):
                return message
            return None

        return await self.discord.wait_for(showing)

    async def quota(self, member: FakeMember) -> str:
        interaction = await self.discord.slash("quota", member=member)
        return (await self.discord.wait_response(interaction)).content

    def slot_taken(self) -> AbstractContextManager[None]:
        """The next provider call stalls (holding the only slot) until the block ends."""
        return self.api.stalling()

    async def stalled(self) -> None:
        await self.api.wait_stalled()

    def prompts_sent(self) -> list[str]:
        return [str(call.json.get("prompt")) for call in self.api.generations]


@asynccontextmanager
async def running_world(workdir: Path) -> AsyncIterator[World]:
    """A bot process of its own, connected and warmed up, with its fakes."""
    async with FakeDiscord() as discord, FakeImageAPI() as api:
        env = {
            **discord.env(),
            **api.env(),
            "IMAGE_API_MAX_RETRIES": "0",
            "DEFAULT_IMAGES_PER_DAY": str(DAILY_IMAGES),
            "MAX_CONCURRENT_JOBS": "1",
        }
        bot = BotProcess(env, workdir=workdir)
        async with bot:
            discord.watch(bot)
            try:
                await discord.wait_connected()
                # One finished job, so the scheduler knows the provider's latency (the ETA).
                warm_up = await discord.slash(
                    "imagine", {"prompt": "warm up"}, member=discord.member()
                )
                await discord.wait_response(warm_up)
                yield World(discord, api, bot)
            except BaseException:
                print(bot.log())
                raise
        assert "Traceback" not in bot.log(), bot.log()[-6000:]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """One bot for the module's tests: none of them may stop it."""
    async with running_world(tmp_path_factory.mktemp("discord-queue")) as world:
        yield world
        assert world.bot.running, "a test stopped the shared bot: give it a process of its own"


@pytest_asyncio.fixture(loop_scope="module")
async def own_world(tmp_path: Path) -> AsyncIterator[World]:
    """A bot for one test alone: for a test that stops it."""
    async with running_world(tmp_path) as world:
        yield world


async def test_a_waiting_job_shows_its_place_then_generates_and_delivers(world: World) -> None:
    first, second, third = (world.discord.member() for _ in range(3))
    with world.slot_taken():
        running = await world.imagine("the slow one", first)
        await world.stalled()
        next_in_line = await world.imagine("next in line", second)
        behind = await world.imagine("behind it", third)

        waiting = await world.queued(behind)
        assert waiting.content.startswith("Queued: 1 ahead of you, about ")
        assert QUEUED.match(waiting.content), waiting.content
        assert not waiting.ephemeral  # the public loading message itself
        [cancel] = waiting.buttons()
        assert cancel["label"] == "Cancel" and cancel["custom_id"].startswith("imagine:cancel:")
        assert QUEUED.match((await world.queued(next_in_line)).content)
        assert (await world.queued(next_in_line)).content.startswith("Queued: you're next")
        # The running job's message says it is being drawn.
        slow = world.discord.messages[running.original_id or ""]
        await world.discord.wait_for(lambda: slow.content.startswith("Generating 1 image"))
        assert not slow.buttons()

    results = [
        await world.discord.wait_response(interaction)
        for interaction in (running, next_in_line, behind)
    ]
    for result, prompt in zip(results, ("the slow one", "next in line", "behind it"), strict=True):
        assert result.embeds[0]["description"] == prompt and len(result.attachments) == 1
        labels = [b["label"] for b in result.buttons()]
        assert labels[:1] == ["Reroll"] and "Cancel" not in labels
    history = results[2].history
    assert history[0].startswith("Queued: 1 ahead of you")
    assert history[-2].startswith("Generating 1 image")  # then the result replaced it
    # Throttled: moving up to "next" came less than 3 s after the first edit, and the
    # switch to running superseded it, so there was no edit in between.
    assert len(history) == 3, history
    assert world.prompts_sent()[-3:] == ["the slow one", "next in line", "behind it"]


async def test_cancel_takes_a_queued_job_out_refunds_it_and_never_sends_it(
    world: World,
) -> None:
    first, second = world.discord.member(), world.discord.member()
    with world.slot_taken():
        running = await world.imagine("keeps the slot", first)
        await world.stalled()
        doomed = await world.imagine("never drawn", second)
        waiting = await world.queued(doomed)

        click = await world.discord.click(waiting, "Cancel", member=second)
        confirmation = await world.discord.wait_response(click)
        assert confirmation.ephemeral
        assert "Cancelled" in confirmation.content and "nothing was charged" in confirmation.content
        # The job's own message says so, and offers no button any more.
        await world.discord.wait_for(lambda: waiting.content == CANCELLED)
        assert not waiting.buttons() and not waiting.ephemeral
        assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in await world.quota(second)

    delivered = await world.discord.wait_response(running)
    assert len(delivered.attachments) == 1
    assert "never drawn" not in world.prompts_sent()
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in await world.quota(second)


async def test_only_the_requester_or_an_admin_may_cancel(world: World) -> None:
    first, second = world.discord.member(), world.discord.member()
    stranger = world.discord.member()
    admin = world.discord.member(manage_guild=True)
    with world.slot_taken():
        running = await world.imagine("busy", first)
        await world.stalled()
        queued = await world.imagine("not yours to cancel", second)
        waiting = await world.queued(queued)

        refused = await world.discord.click(waiting, "Cancel", member=stranger)
        refusal = await world.discord.wait_response(refused)
        assert refusal.ephemeral and "Only the person who asked" in refusal.content
        assert waiting.content.startswith("Queued") and waiting.buttons()

        allowed = await world.discord.click(waiting, "Cancel", member=admin)
        assert (await world.discord.wait_response(allowed)).ephemeral
        await world.discord.wait_for(lambda: waiting.content == CANCELLED)

    await world.discord.wait_response(running)
    assert "not yours to cancel" not in world.prompts_sent()
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in await world.quota(second)


async def test_a_stale_cancel_after_the_job_ran_says_it_is_too_late(world: World) -> None:
    first, second = world.discord.member(), world.discord.member()
    with world.slot_taken():
        await world.imagine("ahead", first)
        await world.stalled()
        job = await world.imagine("ran anyway", second)
        # What a client that has not refreshed the message still shows.
        stale = copy.deepcopy(await world.queued(job))
    result = await world.discord.wait_response(job)
    assert len(result.attachments) == 1

    click = await world.discord.click(stale, "Cancel", member=second)
    answer = await world.discord.wait_response(click)
    assert answer.ephemeral and "no longer waiting" in answer.content
    assert f"{DAILY_IMAGES - 1} images left" in await world.quota(second)  # it was charged


async def test_a_third_job_while_two_are_on_the_way_is_refused_privately(world: World) -> None:
    member = world.discord.member()
    with world.slot_taken():
        await world.imagine("one", member)
        await world.stalled()
        second = await world.imagine("two", member)
        await world.queued(second)
        third = await world.imagine("three", member)
        refusal = await world.discord.wait_response(third)
        assert refusal.ephemeral and "already have 2 image jobs" in refusal.content
        # The public "thinking" message was removed rather than left spinning.
        assert world.discord.messages[third.original_id or ""].deleted
    assert len((await world.discord.wait_response(second)).attachments) == 1
    assert "three" not in world.prompts_sent()


async def test_on_shutdown_a_queued_job_still_runs_within_the_grace(own_world: World) -> None:
    # It stops the bot, so the bot is its own. Draining, not refusing: the jobs it accepted,
    # the queued one too, are finished before it exits.
    world = own_world
    first, second = world.discord.member(), world.discord.member()
    with world.slot_taken():
        running = await world.imagine("finished in the grace period", first)
        await world.stalled()
        queued = await world.imagine("drained from the queue", second)
        await world.queued(queued)
        stopping = asyncio.create_task(world.bot.stop())
    delivered = await world.discord.wait_response(running)
    drained = await world.discord.wait_response(queued)
    assert len(delivered.attachments) == 1 and len(drained.attachments) == 1
    assert not drained.ephemeral and drained.embeds[0]["description"] == "drained from the queue"
    assert await stopping == 0
    assert "drained from the queue" in world.prompts_sent()
