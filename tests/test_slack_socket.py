"""End to end on Slack in Socket Mode: the real ``imagine-bot run`` in a child process, with the
real slack-bolt and slack-sdk, against a loopback fake Slack and a fake image API.

One bot process serves the whole module; each test uses its own user, so quotas don't mix.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from bot.messages import ALREADY_WORKING
from tests.fakes.image_api import FakeImageAPI, content_policy_violation
from tests.fakes.process import BotProcess
from tests.fakes.slack import FakeSlack, PostedMessage, ResponsePost, Upload

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ADMIN = "UADMIN"
DAILY_IMAGES = 2


@dataclass
class Harness:
    slack: FakeSlack
    api: FakeImageAPI
    bot: BotProcess


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    workdir: Path = tmp_path_factory.mktemp("slack-socket")
    async with FakeSlack() as slack, FakeImageAPI() as api:
        slack.add_user(ADMIN, "ada")
        slack.add_user("UOWNER", "olga", is_owner=True)
        env = {
            **slack.env(),
            **api.env(),
            "IMAGE_API_MAX_RETRIES": "0",
            "DEFAULT_IMAGES_PER_DAY": str(DAILY_IMAGES),
            # A bare id: an admin of the token's workspace (T1); T2:... names another one.
            "SLACK_ADMIN_USER_IDS": f"{ADMIN},T2:UOTHERADMIN",
        }
        bot = BotProcess(env, workdir=workdir)
        async with bot:
            slack.watch(bot)
            await slack.wait_connected()
            yield Harness(slack, api, bot)
            assert bot.running, "a test stopped the shared bot: give it a process of its own"
            # Every envelope of the module was acknowledged (none left for Slack to retry).
            await slack.wait_all_acked()


async def _only_response(slack: FakeSlack, text: str, *, user: str) -> ResponsePost:
    command = await slack.slash_command(text, user=user, channel="C1")
    [answer] = await slack.wait_for(lambda: slack.responses_to(command), timeout=5)
    return answer


def _image_size(upload: Upload) -> tuple[int, int]:
    assert upload.data is not None
    with Image.open(io.BytesIO(upload.data)) as image:
        image.load()
        return image.size


def _buttons(message: PostedMessage) -> list[str]:
    return [str(b.get("value")) for b in message.buttons()]


def _uploads_with(slack: FakeSlack, text: str, channel: str = "C1") -> list[Upload]:
    return [u for u in slack.uploads_in(channel) if text in (u.initial_comment or "")]


def _reroll_message_for(slack: FakeSlack, upload: Upload) -> PostedMessage | None:
    """The button message whose job id names ``upload``'s file."""
    for message in slack.posted(upload.channel_id):
        if any(value[:12] in upload.filename for value in _buttons(message)):
            return message
    return None


async def test_slash_command_acks_at_once_and_uploads_the_image_to_the_channel(
    world: Harness,
) -> None:
    slack, api = world.slack, world.api
    before = len(api.generations)
    envelope = await slack.slash_command("a red fox in snow --ar 1:1", user="U1", channel="C1")

    ack = await slack.wait_ack(envelope)
    assert ack.at - envelope.sent_at < 3.0

    [upload] = await slack.wait_for(lambda: _uploads_with(slack, "a red fox in snow"))
    assert upload.thread_ts is None
    assert _image_size(upload) == (1024, 1024)
    assert upload.data is not None and len(upload.data) == upload.length
    comment = upload.initial_comment or ""
    assert "<@U1>" in comment
    assert "FLUX.1 [schnell]" in comment and "1024x1024" in comment
    assert "seed " in comment and "$0.003" in comment
    assert f"{DAILY_IMAGES - 1} left today" in comment

    # One provider call, with the prompt as typed.
    assert len(api.generations) == before + 1
    assert api.generations[-1].json["prompt"] == "a red fox in snow"

    # A "generating" note went to the requester only, through the response_url.
    notes = slack.responses_to(envelope)
    assert notes and notes[0].ephemeral and "Generating 1 image" in notes[0].text

    # The Reroll button follows the upload in the channel, carrying the job id.
    button_message = await slack.wait_for(lambda: _reroll_message_for(slack, upload))
    assert button_message.thread_ts is None
    [job_id] = _buttons(button_message)
    assert job_id


async def test_mention_is_answered_in_the_mentions_thread(world: Harness) -> None:
    slack = world.slack
    envelope = await slack.mention("a lighthouse at dusk", user="U2", channel="C1")
    await slack.wait_ack(envelope)
    thread = envelope.payload["event"]["ts"]

    [upload] = await slack.wait_for(lambda: slack.uploads_in("C1", thread_ts=thread))
    assert "a lighthouse at dusk" in (upload.initial_comment or "")
    assert _image_size(upload) == (1024, 1024)
    button_message = await slack.wait_for(
        lambda: next((m for m in slack.posted("C1") if m.thread_ts == thread), None)
    )
    assert _buttons(button_message)
    # The note was ephemeral (in the channel: the thread did not exist yet).
    assert any("Generating" in text for text in slack.ephemeral_to("U2"))


async def test_bad_flags_get_an_ephemeral_explanation_and_no_provider_call(
    world: Harness,
) -> None:
    slack, api = world.slack, world.api
    before = len(api.generations)
    envelope = await slack.slash_command("a cat --size 12x12", user="U3", channel="C1")
    await slack.wait_ack(envelope)

    [reply] = await slack.wait_for(lambda: slack.responses_to(envelope))
    assert reply.ephemeral
    assert "size 12x12 is not offered" in reply.text and "1024x1024" in reply.text
    assert len(api.generations) == before
    assert not [u for u in slack.uploads.values() if "a cat" in (u.initial_comment or "")]


async def test_a_used_up_quota_is_refused_with_the_reset_time(world: Harness) -> None:
    slack, api = world.slack, world.api
    first = await slack.slash_command(f"two owls --n {DAILY_IMAGES}", user="U4", channel="C1")
    await slack.wait_for(lambda: _uploads_with(slack, "two owls"))
    calls = len(api.generations)
    assert slack.responses_to(first)

    second = await slack.slash_command("one more owl", user="U4", channel="C1")
    reply = await slack.wait_for(
        lambda: next((r for r in slack.responses_to(second) if "limit" in r.text), None)
    )
    assert reply.ephemeral
    assert "daily image limit" in reply.text and "resets" in reply.text
    assert "Nothing was charged" in reply.text
    assert len(api.generations) == calls


async def test_content_policy_rejection_is_explained_and_refunded(world: Harness) -> None:
    slack, api = world.slack, world.api
    api.script(content_policy_violation())
    envelope = await slack.slash_command("something forbidden", user="U5", channel="C1")
    reply = await slack.wait_for(
        lambda: next((r for r in slack.responses_to(envelope) if "policy" in r.text), None)
    )
    assert reply.ephemeral and "Nothing was charged" in reply.text

    # The refund is visible: the whole daily allowance is still there.
    quota = await slack.slash_command("quota", user="U5", channel="C1")
    [answer] = await slack.wait_for(lambda: slack.responses_to(quota))
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in answer.text
    assert not [u for u in slack.uploads.values() if "forbidden" in (u.initial_comment or "")]


async def test_a_redelivered_event_runs_and_charges_once(world: Harness) -> None:
    slack, api = world.slack, world.api
    before = len(api.generations)
    first = await slack.mention("a paper boat", user="U6", channel="C1")
    again = await slack.redeliver(first)
    await slack.wait_ack(first)
    await slack.wait_ack(again)  # acked too, so Slack stops redelivering
    thread = first.payload["event"]["ts"]
    await slack.wait_for(lambda: slack.uploads_in("C1", thread_ts=thread))

    quota = await slack.slash_command("quota", user="U6", channel="C1")
    [answer] = await slack.wait_for(lambda: slack.responses_to(quota))
    assert f"{DAILY_IMAGES - 1} image left of {DAILY_IMAGES}" in answer.text
    assert len(slack.uploads_in("C1", thread_ts=thread)) == 1
    assert len(api.generations) == before + 1
    assert sum("Generating" in t for t in slack.ephemeral_to("U6")) == 1


async def test_admins_set_quotas_and_others_are_refused(world: Harness) -> None:
    slack = world.slack
    # An admin listed in SLACK_ADMIN_USER_IDS.
    command = await slack.slash_command(
        "admin set-quota <@U7|bob> images_per_day=5", user=ADMIN, channel="C1"
    )
    [done] = await slack.wait_for(lambda: slack.responses_to(command))
    assert done.ephemeral and "<@U7>" in done.text
    quota = await slack.slash_command("quota", user="U7", channel="C1")
    [answer] = await slack.wait_for(lambda: slack.responses_to(quota))
    assert "5 images left of 5" in answer.text

    # A workspace owner according to users.info.
    command = await slack.slash_command(
        "admin set-quota <@U8|carl> images_per_day=3", user="UOWNER", channel="C1"
    )
    await slack.wait_for(lambda: slack.responses_to(command))
    quota = await slack.slash_command("quota", user="U8", channel="C1")
    [answer] = await slack.wait_for(lambda: slack.responses_to(quota))
    assert "3 images left of 3" in answer.text

    # Anyone else is refused, checked on the server side.
    slack.add_user("U9", "mallory")
    command = await slack.slash_command(
        "admin set-quota <@U9|mallory> images_per_day=1000", user="U9", channel="C1"
    )
    [refusal] = await slack.wait_for(lambda: slack.responses_to(command))
    assert refusal.ephemeral and "admin" in refusal.text.lower()
    assert any(c.args.get("user") == "U9" for c in slack.calls("users.info"))
    quota = await slack.slash_command("quota", user="U9", channel="C1")
    [answer] = await slack.wait_for(lambda: slack.responses_to(quota))
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in answer.text


async def test_huge_amounts_are_refused_in_one_line_and_members_before_they_are_read(
    world: Harness,
) -> None:
    slack = world.slack
    slack.add_user("U10", "mel")
    # 1e999990 used to be turned into a 3-million-bit integer before the admin check.
    command = await slack.slash_command("admin spend-cap 1e999990", user="U10", channel="C1")
    [refusal] = await slack.wait_for(lambda: slack.responses_to(command), timeout=5)
    assert refusal.ephemeral and refusal.text == "Only admins can use admin commands."
    for text in ("admin spend-cap 1e999990", "admin set-quota <@U10|mel> usd_per_month=1e400"):
        answer = await _only_response(slack, text, user=ADMIN)
        assert answer.ephemeral and "from 0 to 1,000,000 with at most 6 decimals" in answer.text
        assert "\n" not in answer.text.strip() and "Traceback" not in world.bot.log()
    quota = await slack.slash_command("quota", user="U10", channel="C1")
    [answer] = await slack.wait_for(lambda: slack.responses_to(quota))
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in answer.text


async def test_a_channel_without_the_bot_gets_invite_instructions(world: Harness) -> None:
    slack, api = world.slack, world.api
    before = len(api.generations)
    envelope = await slack.slash_command("a red fox", user="U10", channel="C404")
    [reply] = await slack.wait_for(lambda: slack.responses_to(envelope))
    assert reply.ephemeral
    assert "/invite <@UBOT>" in reply.text and "Nothing was charged" in reply.text
    assert len(api.generations) == before


async def test_slack_rate_limit_on_an_upload_method_is_retried(world: Harness) -> None:
    slack = world.slack
    slack.fail("files.completeUploadExternal", status=429, error="ratelimited", retry_after=1)
    envelope = await slack.slash_command("a windmill", user="U11", channel="C1")
    [upload] = await slack.wait_for(lambda: _uploads_with(slack, "a windmill"))
    attempts = [
        c
        for c in slack.calls("files.completeUploadExternal")
        if upload.file_id in str(c.args.get("files"))
    ]
    assert [c.status for c in attempts] == [429, 200]
    assert not any("could not" in r.text for r in slack.responses_to(envelope))


async def test_help_models_and_quota_answer_privately(world: Harness) -> None:
    slack = world.slack
    replies: dict[str, ResponsePost] = {}
    for word in ("help", "models", "quota"):
        envelope = await slack.slash_command(word, user="U12", channel="C1")
        [replies[word]] = await slack.wait_for(partial(slack.responses_to, envelope))
    assert all(reply.ephemeral for reply in replies.values())
    assert "--model" in replies["help"].text and "--ar" in replies["help"].text
    assert "flux" in replies["models"].text and "$0.003" in replies["models"].text
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in replies["quota"].text


async def test_an_admin_gets_the_usage_summary_and_the_csv_privately(world: Harness) -> None:
    slack = world.slack
    await slack.slash_command("a tram at night --model sdxl", user="U13", channel="C1")
    [upload] = await slack.wait_for(lambda: _uploads_with(slack, "a tram at night"))
    # The Reroll button is posted once the job is complete and charged.
    await slack.wait_for(lambda: _reroll_message_for(slack, upload))

    command = await slack.slash_command("admin usage 7", user=ADMIN, channel="C1")
    [reply] = await slack.wait_for(lambda: slack.responses_to(command))
    assert reply.ephemeral
    assert "Usage " in reply.text and "<@U13>" in reply.text and "direct message" in reply.text
    [csv_file] = slack.uploads_in(f"D{ADMIN}")
    assert csv_file.filename.endswith(".csv")
    assert csv_file.data is not None
    header, *rows = csv_file.data.decode().splitlines()
    assert header == "day,platform,workspace_id,user_id,model,images,usd"
    assert any(r.endswith(",slack,T1,U13,stability/sdxl,1,0.002000") for r in rows)

    others = await slack.slash_command("admin usage", user="U12", channel="C1")
    [refusal] = await slack.wait_for(lambda: slack.responses_to(others))
    assert "admin" in refusal.text.lower() and len(slack.uploads_in("DU12")) == 0


async def test_an_upload_slack_refuses_is_refunded(world: Harness) -> None:
    slack, api = world.slack, world.api
    # The bot was in the channel when the job started, but is removed before the upload.
    slack.member_channels.add("C2")
    slack.fail(
        "files.completeUploadExternal",
        status=200,
        error="not_in_channel",
        retry_after=None,
        channel="C2",
    )
    before = len(api.generations)
    envelope = await slack.slash_command("a paper boat", user="U12", channel="C2")
    replies = await slack.wait_for(
        lambda: [r for r in slack.responses_to(envelope) if "/invite" in r.text]
    )
    assert replies[0].ephemeral and "Nothing was charged" in replies[0].text
    assert len(api.generations) == before + 1
    assert _uploads_with(slack, "a paper boat", channel="C2") == []
    quota = await slack.slash_command("quota", user="U12", channel="C2")
    [answer] = await slack.wait_for(lambda: slack.responses_to(quota))
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in answer.text


async def test_a_proxy_error_page_from_slack_is_reported_as_its_status_and_refunded(
    world: Harness,
) -> None:
    """A proxy's 502 text instead of Slack's JSON used to crash the error path itself."""
    slack, api = world.slack, world.api
    slack.fail(
        "files.getUploadURLExternal",
        status=502,
        retry_after=None,
        page="upstream connect error or disconnect/reset before headers",
    )
    before = len(api.generations)
    envelope = await slack.slash_command("a glass lighthouse", user="U14", channel="C1")
    [failed] = await slack.wait_for(
        lambda: [r for r in slack.responses_to(envelope) if "Nothing was charged" in r.text]
    )
    assert failed.ephemeral and "could not post them here" in failed.text
    assert len(api.generations) == before + 1
    assert "upload to Slack failed: http_502" in world.bot.log()
    quota = await slack.slash_command("quota", user="U14", channel="C1")
    [answer] = await slack.wait_for(lambda: slack.responses_to(quota))
    assert f"{DAILY_IMAGES} images left of {DAILY_IMAGES}" in answer.text


async def test_a_double_click_on_reroll_is_one_job_and_one_charge(world: Harness) -> None:
    slack, api = world.slack, world.api
    await slack.slash_command("a tin robot", user="U15", channel="C1")
    [upload] = await slack.wait_for(lambda: _uploads_with(slack, "a tin robot"))
    message = await slack.wait_for(lambda: _reroll_message_for(slack, upload))
    before = len(api.generations)
    [button] = message.buttons()
    await slack.click(button, message, user="U15")
    await slack.click(button, message, user="U15")
    await slack.wait_for(lambda: len(_uploads_with(slack, "a tin robot")) == 2)
    await slack.wait_for(lambda: ALREADY_WORKING in slack.ephemeral_to("U15"))
    assert len(api.generations) == before + 1
    quota = await slack.slash_command("quota", user="U15", channel="C1")
    [answer] = await slack.wait_for(lambda: slack.responses_to(quota))
    assert f"0 images left of {DAILY_IMAGES}" in answer.text


async def test_admin_rights_belong_to_one_workspace(world: Harness) -> None:
    slack = world.slack

    async def in_workspace(team: str, user: str, text: str) -> str:
        payload = {**slack.slash_payload(text, user=user, channel="C1"), "team_id": team}
        envelope = await slack.send("slash_commands", payload)
        [answer] = await slack.wait_for(lambda: slack.responses_to(envelope))
        return answer.text

    refused = "Only admins can use admin commands."
    # T1's admins, by the list and by users.info, have no rights in T2 ...
    assert await in_workspace("T2", ADMIN, "admin spend-cap 5") == refused
    asked_before = len(slack.calls("users.info"))
    assert await in_workspace("T2", "UOWNER", "admin spend-cap 5") == refused
    assert len(slack.calls("users.info")) == asked_before  # T1's answer says nothing of T2
    # ... the one named for T2 has, and only there.
    assert "$5.00" in await in_workspace("T2", "UOTHERADMIN", "admin spend-cap 5")
    assert await in_workspace("T1", "UOTHERADMIN", "admin spend-cap 5") == refused
    assert "$7.00" in await in_workspace("T1", ADMIN, "admin spend-cap 7")
    assert "removed" in await in_workspace("T1", ADMIN, "admin spend-cap off")
    assert "removed" in await in_workspace("T2", "UOTHERADMIN", "admin spend-cap off")
