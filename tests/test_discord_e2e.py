"""End to end on Discord: the real ``imagine-bot run`` in a child process, with the real
discord.py, against a loopback fake Discord (REST + gateway) and a fake image API.

One bot process serves the whole module; each test uses its own members, so quotas don't mix.
Every test asserts on what Discord received: callbacks, messages, attachments, deletions.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from bot.messages import ALREADY_WORKING
from tests.fakes.discord import (
    EPHEMERAL,
    PRIVILEGED_INTENTS,
    FakeDiscord,
    FakeInteraction,
    FakeMember,
    FakeMessage,
    FakeUser,
)
from tests.fakes.image_api import (
    FAKE_API_KEY,
    FakeImageAPI,
    Stall,
    content_policy_violation,
    invalid_api_key,
    rate_limited,
)
from tests.fakes.process import BotProcess

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

DAILY_IMAGES = 8
JOB_ID = re.compile(r"job ([0-9a-f]{32})")


@dataclass
class World:
    discord: FakeDiscord
    api: FakeImageAPI
    bot: BotProcess

    async def imagine(
        self, prompt: str, member: FakeMember, **options: object
    ) -> tuple[FakeInteraction, FakeMessage]:
        interaction = await self.discord.slash(
            "imagine", {"prompt": prompt, **options}, member=member
        )
        return interaction, await self.discord.wait_response(interaction)

    async def quota(self, member: FakeMember) -> str:
        interaction = await self.discord.slash("quota", member=member)
        return (await self.discord.wait_response(interaction)).content


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    workdir: Path = tmp_path_factory.mktemp("discord")
    async with FakeDiscord() as discord, FakeImageAPI() as api:
        env = {
            **discord.env(),
            **api.env(),
            "IMAGE_API_MAX_RETRIES": "2",
            "DEFAULT_IMAGES_PER_DAY": str(DAILY_IMAGES),
        }
        bot = BotProcess(env, workdir=workdir)
        async with bot:
            discord.watch(bot)
            try:
                await discord.wait_connected()
                yield World(discord, api, bot)
                assert bot.running, "a test stopped the shared bot: give it a process of its own"
            except BaseException:
                print(bot.log())
                raise
        assert "Traceback" not in bot.log(), bot.log()[-6000:]


def _field(message: FakeMessage, name: str) -> str:
    for embed in message.embeds:
        for field in embed.get("fields", []):
            if field["name"] == name:
                return str(field["value"])
    raise KeyError(f"no field {name!r} in {message.embeds}")


def _job_id(message: FakeMessage) -> str:
    match = JOB_ID.search(message.text)
    assert match, message.text
    return match.group(1)


# -- start-up -----------------------------------------------------------------------------


async def test_start_up_registers_the_commands_in_the_guild_without_privileged_intents(
    world: World,
) -> None:
    [identify] = world.discord.identifies[:1]
    assert identify["intents"] & PRIVILEGED_INTENTS == 0
    [sync] = world.discord.command_syncs
    assert sync.guild_id == world.discord.guild_id
    commands = {c["name"]: c for c in sync.commands}
    assert set(commands) == {"imagine", "quota", "models", "imagine-admin"}
    imagine = {o["name"]: o for o in commands["imagine"]["options"]}
    assert list(imagine) == ["prompt", "model", "size", "n", "negative", "seed"]
    assert imagine["prompt"]["required"] is True
    assert {c["value"] for c in imagine["model"]["choices"]} == {
        "flux",
        "sdxl",
        "imagen-ultra",
        "imagen-fast",
    }
    assert "1792x1024" in {c["value"] for c in imagine["size"]["choices"]}
    assert (imagine["n"]["min_value"], imagine["n"]["max_value"]) == (1, 4)
    admin = commands["imagine-admin"]
    assert admin["default_member_permissions"] == str(1 << 5)  # Manage Server
    assert {o["name"] for o in admin["options"]} == {
        "set-quota",
        "clear-quota",
        "spend-cap",
        "usage",
        # moderation (adapters/discord/moderation_admin.py)
        "block",
        "channels",
        "review-channel",
        "spoilers",
        "moderation-log",
    }


# -- /imagine ------------------------------------------------------------------------------


async def test_imagine_defers_at_once_then_delivers_a_decodable_image(world: World) -> None:
    member = world.discord.member("ada")
    before = len(world.api.generations)
    interaction, message = await world.imagine("a red fox in snow", member)

    assert interaction.callback_type == 5  # deferred, "thinking"
    assert interaction.ack_delay is not None and interaction.ack_delay < 3.0
    assert message.id == interaction.original_id  # the thinking message became the result
    assert not message.ephemeral
    assert message.edits == 2 and message.content == ""  # "Generating…", then the result
    [image] = message.attachments
    assert image.image_format == "PNG" and (image.width, image.height) == (1024, 1024)
    assert image.image().size == (1024, 1024)
    assert message.embeds[0]["description"] == "a red fox in snow"
    assert _field(message, "Model") == "FLUX.1 [schnell]"
    assert _field(message, "Size") == "1024x1024"
    assert _field(message, "Seed").isdigit()
    assert _field(message, "Cost") == "$0.003"
    assert _field(message, "Quota left") == f"{DAILY_IMAGES - 1} left today"
    job_id = _job_id(message)
    labels = [b["label"] for b in message.buttons()]
    assert labels[0] == "Reroll" and labels[-1] == "Delete" and len(labels) == 4
    assert all(job_id in b["custom_id"] for b in message.buttons())
    [call] = world.api.generations[before:]
    assert call.json["prompt"] == "a red fox in snow" and call.json["n"] == 1
    assert str(call.json["seed"]) == _field(message, "Seed")


async def test_four_images_arrive_in_one_message(world: World) -> None:
    member = world.discord.member()
    _, message = await world.imagine("four kittens --ar 16:9", member, n=4, model="sdxl")
    assert len(message.attachments) == 4
    assert all((a.width, a.height) == (1792, 1024) for a in message.attachments)
    assert len({a.data for a in message.attachments}) == 4
    assert _field(message, "Model") == "Stable Diffusion XL"
    assert _field(message, "Cost") == "$0.014"  # 4 x $0.002 x 1.75 megapixels
    assert world.api.generations[-1].json["n"] == 4


async def test_an_invalid_size_is_answered_privately_without_calling_the_provider(
    world: World,
) -> None:
    before = len(world.api.generations)
    interaction, message = await world.imagine("a cat --size 999x999", world.discord.member())
    assert interaction.callback_type == 4  # answered straight away, nothing deferred
    assert interaction.callbacks[0]["data"]["flags"] & EPHEMERAL
    assert message.ephemeral
    assert "999x999" in message.content and "1024x1024" in message.content
    assert len(world.api.generations) == before


async def test_models_lists_the_catalog_with_prices(world: World) -> None:
    interaction = await world.discord.slash("models", member=world.discord.member())
    message = await world.discord.wait_response(interaction)
    assert message.ephemeral
    text = message.text
    assert "black-forest-labs/flux-1-schnell" in text and "$0.003" in text
    assert "google/imagen-4-ultra" in text and "$0.013" in text


# -- quotas -------------------------------------------------------------------------------


async def test_a_used_up_quota_is_explained_privately_with_the_reset_time(world: World) -> None:
    member = world.discord.member()
    await world.imagine("first batch", member, n=4)
    await world.imagine("second batch", member, n=4)
    before = len(world.api.generations)

    interaction, message = await world.imagine("one more", member)

    assert message.ephemeral
    assert "daily image limit" in message.content
    assert re.search(r"resets \d{4}-\d\d-\d\d 00:00 UTC", message.content), message.content
    assert len(world.api.generations) == before
    # The public "thinking" message was removed rather than left spinning or made public.
    original = world.discord.messages[interaction.original_id or ""]
    assert original.deleted
    assert "0 images left" in await world.quota(member)


async def test_content_rejected_by_the_provider_is_explained_and_refunded(world: World) -> None:
    member = world.discord.member()
    world.api.script(content_policy_violation())
    _, message = await world.imagine("something forbidden", member, n=4)
    assert message.ephemeral
    assert "content policy" in message.content and "Nothing was charged" in message.content
    # Refunded: the four images held for the job are available again.
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in await world.quota(member)
    _, retry = await world.imagine("something allowed", member, n=4)
    assert len(retry.attachments) == 4


async def test_an_operator_fault_says_temporarily_unavailable_and_is_logged(
    world: World,
) -> None:
    member = world.discord.member()
    world.api.script(invalid_api_key())
    interaction, message = await world.imagine("a harmless cat", member)
    assert message.ephemeral and "temporarily unavailable" in message.content
    assert "API key" not in message.content
    log = world.bot.log()
    [line] = [line for line in log.splitlines() if f"interaction {interaction.id}" in line]
    assert " ERROR " in line and "ProviderAuthError" in line
    assert FAKE_API_KEY not in log
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in await world.quota(member)


async def test_a_rate_limited_provider_is_retried_and_the_image_delivered(world: World) -> None:
    before = len(world.api.generations)
    world.api.script(rate_limited(retry_after_ms="50"))
    _, message = await world.imagine("patience", world.discord.member())
    assert len(message.attachments) == 1 and not message.ephemeral
    assert len(world.api.generations) == before + 2


async def test_an_image_over_the_upload_limit_is_re_encoded_under_it(world: World) -> None:
    limit = 40_000
    interaction = await world.discord.slash(
        "imagine",
        {"prompt": "a very detailed poster", "size": "2048x2048"},
        member=world.discord.member(),
        attachment_size_limit=limit,
    )
    message = await world.discord.wait_response(interaction)
    [image] = message.attachments
    assert image.size <= limit
    assert image.image_format in ("WEBP", "JPEG")
    assert image.image().width > 0
    assert _field(message, "Size") == "2048x2048"
    assert len(world.api.generations[-1].body) > 0


async def test_several_large_results_finished_together_all_arrive_within_the_limit(
    world: World,
) -> None:
    # Their re-encodings take turns (a few at a time in the process): every job still gets
    # all of its images, each under the limit.
    limit = 40_000
    members = [world.discord.member() for _ in range(3)]
    interactions = await asyncio.gather(
        *(
            world.discord.slash(
                "imagine",
                {"prompt": f"a detailed map, sheet {index}", "size": "2048x2048", "n": 2},
                member=member,
                attachment_size_limit=limit,
            )
            for index, member in enumerate(members)
        )
    )
    messages = await asyncio.gather(*(world.discord.wait_response(i) for i in interactions))
    for message in messages:
        assert not message.ephemeral and len(message.attachments) == 2
        for image in message.attachments:
            assert image.size <= limit and image.image_format in ("WEBP", "JPEG")
            assert image.image().width > 0
    assert len({_job_id(message) for message in messages}) == 3


# -- buttons ---------------------------------------------------------------------------------


async def test_reroll_repeats_the_job_with_a_new_seed_charged_to_the_clicker(
    world: World,
) -> None:
    author, clicker = world.discord.member(), world.discord.member()
    _, original = await world.imagine("a lighthouse at dusk", author, model="imagen-fast")
    click = await world.discord.click(original, "Reroll", member=clicker)
    rerolled = await world.discord.wait_response(click)

    assert click.callback_type == 5 and click.ack_delay is not None and click.ack_delay < 3.0
    assert rerolled.id != original.id and not rerolled.ephemeral
    assert rerolled.embeds[0]["description"] == "a lighthouse at dusk"
    assert _field(rerolled, "Model") == "Imagen 4 Fast"
    assert _field(rerolled, "Seed") != _field(original, "Seed")
    assert _job_id(rerolled) != _job_id(original)
    assert f"{DAILY_IMAGES - 1} images left" in await world.quota(clicker)
    assert f"{DAILY_IMAGES - 1} images left" in await world.quota(author)


async def test_a_double_click_is_one_job_and_one_charge_but_another_members_click_counts(
    world: World,
) -> None:
    author, other = world.discord.member(), world.discord.member()
    _, original = await world.imagine("a tin robot", author)
    before = len(world.api.generations)
    for label, images in (("Reroll", 1), ("Variations", 4)):
        first = await world.discord.click(original, label, member=author)
        second = await world.discord.click(original, label, member=author)
        done, repeat = (
            await world.discord.wait_response(first),
            await world.discord.wait_response(second),
        )
        assert len(done.attachments) == images
        assert repeat.ephemeral and repeat.content == ALREADY_WORKING
    theirs = await world.discord.click(original, "Reroll", member=other)
    assert (await world.discord.wait_response(theirs)).attachments
    assert len(world.api.generations) == before + 3
    assert f"{DAILY_IMAGES - 6} images left" in await world.quota(author)


async def test_variations_draw_four_more_and_details_show_every_parameter(world: World) -> None:
    author = world.discord.member()
    _, original = await world.imagine("a paper boat", author, seed=1234, negative="people")
    click = await world.discord.click(original, "Variations", member=author)
    varied = await world.discord.wait_response(click)
    assert len(varied.attachments) == 4
    assert world.api.generations[-1].json["n"] == 4

    details_click = await world.discord.click(original, "Details", member=world.discord.member())
    details = await world.discord.wait_response(details_click)
    assert details.ephemeral
    assert _field(details, "Seed") == "1234"
    assert _field(details, "Negative prompt") == "people"
    assert _field(details, "Job id") == _job_id(original)
    assert _field(details, "Requested by") == author.mention


async def test_delete_is_refused_to_others_and_done_for_the_requester(world: World) -> None:
    author, stranger = world.discord.member(), world.discord.member()
    _, message = await world.imagine("a private sketch", author)

    refused = await world.discord.click(message, "Delete", member=stranger)
    answer = await world.discord.wait_response(refused)
    assert answer.ephemeral and "Only the person who asked" in answer.content
    assert not message.deleted

    allowed = await world.discord.click(message, "Delete", member=author)
    await world.discord.wait_for(lambda: message.deleted)
    assert allowed.callback_type == 6  # a silent update: nothing else is posted
    assert world.discord.requests_to(f"/channels/{world.discord.channel_id}/messages/", "DELETE")


async def test_an_admin_may_delete_anyones_result(world: World) -> None:
    _, message = await world.imagine("needs moderation", world.discord.member())
    await world.discord.click(message, "Delete", member=world.discord.member(manage_guild=True))
    await world.discord.wait_for(lambda: message.deleted)


# -- admin -----------------------------------------------------------------------------------


async def test_a_member_without_manage_server_cannot_set_quotas(world: World) -> None:
    member, target = world.discord.member(), world.discord.member()
    interaction = await world.discord.slash(
        "imagine-admin",
        {"user": target, "images_per_day": 100},
        subcommand="set-quota",
        member=member,
    )
    message = await world.discord.wait_response(interaction)
    assert message.ephemeral and "admins can change quotas" in message.content
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in await world.quota(target)


async def test_an_admin_sets_user_and_role_quotas_that_take_effect(world: World) -> None:
    admin = world.discord.member("boss", manage_guild=True)
    target = world.discord.member()
    set_user = await world.discord.slash(
        "imagine-admin",
        {"user": target, "images_per_day": 1},
        subcommand="set-quota",
        member=admin,
    )
    confirmation = await world.discord.wait_response(set_user)
    assert confirmation.ephemeral
    _, first = await world.imagine("the only one", target)
    assert len(first.attachments) == 1
    _, second = await world.imagine("one too many", target)
    assert second.ephemeral and "daily image limit" in second.content

    role = await world.discord.create_role("artists")
    set_role = await world.discord.slash(
        "imagine-admin",
        {"role": role, "images_per_day": 30},
        subcommand="set-quota",
        member=admin,
    )
    await world.discord.wait_response(set_role)
    artist = world.discord.member(roles=[role])
    assert "30 images left of 30" in await world.quota(artist)


async def test_usage_report_comes_with_a_csv(world: World) -> None:
    admin = world.discord.member(admin=True)
    await world.imagine("for the report", admin)
    interaction = await world.discord.slash(
        "imagine-admin", {"days": 7}, subcommand="usage", member=admin
    )
    message = await world.discord.wait_response(interaction)
    assert message.ephemeral
    [csv] = message.attachments
    assert csv.filename.endswith(".csv")
    assert admin.id in csv.data.decode()


# -- Discord's own rules ---------------------------------------------------------------------------


async def test_a_redelivered_interaction_is_answered_and_charged_once(world: World) -> None:
    member = world.discord.member()
    before = len(world.api.generations)
    interaction = await world.discord.slash("imagine", {"prompt": "only once"}, member=member)
    await world.discord.redeliver(interaction)  # the gateway may resend after a reconnect
    message = await world.discord.wait_response(interaction)
    await world.discord.wait_for(
        lambda: any(code == 40060 for _, _, code in world.discord.errors_returned)
    )
    assert len(message.attachments) == 1
    assert len(world.api.generations) == before + 1
    assert f"{DAILY_IMAGES - 1} images left" in await world.quota(member)


async def test_a_discord_rate_limit_is_waited_out(world: World) -> None:
    world.discord.rate_limit_next("/messages/@original", method="PATCH", retry_after=0.05)
    _, message = await world.imagine("under pressure", world.discord.member())
    assert len(message.attachments) == 1
    assert any(status == 429 for _, status, _ in world.discord.errors_returned)


async def test_a_result_discord_refuses_is_reported_to_the_requester(world: World) -> None:
    world.discord.reject_next(
        "/messages/@original",
        method="PATCH",
        status=413,
        code=40005,
        message="Request entity too large",
        with_files=True,
    )
    member = world.discord.member()
    interaction, message = await world.imagine("refused upload", member)
    assert message.ephemeral and "could not post them" in message.content
    assert "Nothing was charged" in message.content
    assert world.discord.messages[interaction.original_id or ""].deleted
    # The job was refunded: the whole daily allowance is still there.
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in await world.quota(member)


# -- timing and scale -----------------------------------------------------------------------------


async def test_a_job_finishing_after_the_token_expired_is_posted_to_the_channel(
    world: World,
) -> None:
    member = world.discord.member()
    world.api.release.clear()
    world.api.stalled.clear()
    world.api.script(Stall())
    interaction = await world.discord.slash("imagine", {"prompt": "a slow one"}, member=member)
    await asyncio.wait_for(world.api.stalled.wait(), 10)
    world.discord.expire(interaction)  # as if 15 minutes had passed
    world.api.release.set()

    [late] = await world.discord.wait_for(
        lambda: [m for m in world.discord.channel_messages() if m.attachments]
    )
    assert member.mention in late.content and late.mentioned_user_ids() == {member.id}
    assert late.attachments[0].image().size == (1024, 1024)
    assert late.embeds[0]["description"] == "a slow one"
    # The stale "thinking" message is removed with the bot token too.
    await world.discord.wait_for(
        lambda: world.discord.messages[interaction.original_id or ""].deleted
    )


async def test_twenty_members_at_once_all_get_their_images(world: World) -> None:
    members = [world.discord.member() for _ in range(20)]
    interactions = [
        await world.discord.slash("imagine", {"prompt": f"portrait {i}"}, member=m)
        for i, m in enumerate(members)
    ]
    messages = await asyncio.gather(
        *(world.discord.wait_response(i, timeout=30) for i in interactions)
    )
    for index, (interaction, message) in enumerate(zip(interactions, messages, strict=True)):
        assert interaction.ack_delay is not None and interaction.ack_delay < 3.0
        assert message.embeds[0]["description"] == f"portrait {index}"
        assert message.attachments[0].image().size == (1024, 1024)


async def test_an_admin_clears_a_quota_and_caps_the_servers_spending(world: World) -> None:
    # The spend cap applies to the whole server (every other test) until it is removed.
    admin, member = world.discord.member(admin=True), world.discord.member()

    async def admin_says(subcommand: str, **options: object) -> str:
        interaction = await world.discord.slash(
            "imagine-admin", options, subcommand=subcommand, member=admin
        )
        message = await world.discord.wait_response(interaction)
        assert message.ephemeral
        return message.content

    assert "0 images a day" in await admin_says("set-quota", user=member, images_per_day=0)
    _, refused = await world.imagine("blocked", member)
    assert refused.ephemeral and "daily image limit" in refused.content
    assert "cleared" in await admin_says("clear-quota", user=member)
    _, allowed = await world.imagine("allowed again", member)
    assert len(allowed.attachments) == 1

    before = len(world.api.generations)
    assert "$0.001" in await admin_says("spend-cap", usd_per_month=0.001)
    try:
        _, capped = await world.imagine("over the cap", member)
        assert capped.ephemeral and "server's monthly spending cap" in capped.content
        assert len(world.api.generations) == before
    finally:
        assert "removed" in await admin_says("spend-cap")
    _, uncapped = await world.imagine("under no cap", member)
    assert len(uncapped.attachments) == 1

    # Someone who left the server: discord.py cannot make a Member of them.
    departed = FakeUser(world.discord.snowflake(), "gone")
    said = await admin_says("set-quota", user=departed, images_per_day=1)
    assert said == "That user option can't be used: choose a member of this server."
