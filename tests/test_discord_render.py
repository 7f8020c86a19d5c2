"""The Discord adapter's pure parts: settings, option merging, embeds, custom ids, files."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from adapters.discord.button import CUSTOM_ID, JobButton, custom_id
from adapters.discord.config import DiscordSettings
from adapters.discord.render import (
    MAX_ATTACHMENTS,
    details_embed,
    fit_images,
    image_files,
    model_suggestions,
    result_embed,
    to_generation_request,
)
from bot.catalog import load_catalog
from bot.errors import ConfigError, InvalidRequestError
from bot.models import (
    Allowance,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    JobRecord,
    JobState,
    LimitUsage,
    Requester,
)
from bot.provider.imaging import Refitter
from bot.provider.preview import PreviewProvider
from bot.service import ImageService

CATALOG = load_catalog()


class _NoLedger:
    """``to_generation_request`` only parses; any ledger call would be a bug."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"parsing touched the ledger ({name})")


def _service() -> ImageService:
    return ImageService(catalog=CATALOG, provider=PreviewProvider(), ledger=_NoLedger())  # type: ignore[arg-type]


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((width, height), 60).convert("RGB").save(out, format="PNG")
    return out.getvalue()


def _result(
    *, n: int = 1, prompt: str = "a red fox", allowance: Allowance | None = None
) -> GenerationResult:
    image = GeneratedImage(data=_png(64, 64), mime_type="image/png", width=64, height=64, seed=9)
    return GenerationResult(
        job_id="0123456789abcdef0123456789abcdef",
        request=GenerationRequest(
            prompt=prompt, model=CATALOG.default.id, size="1024x1024", n=n, seed=9
        ),
        images=(image,) * n,
        cost_micros=3_000 * n,
        model_label=CATALOG.default.label,
        allowance=allowance,
    )


# -- settings -------------------------------------------------------------------------------


def test_settings_read_the_environment_and_stay_disabled_without_a_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not DiscordSettings().enabled
    monkeypatch.setenv("DISCORD_TOKEN", "  ")
    assert not DiscordSettings().enabled
    monkeypatch.setenv("DISCORD_TOKEN", "abc.def")
    monkeypatch.setenv("DISCORD_GUILD_IDS", " 123, 456 ,")
    monkeypatch.setenv("DISCORD_API_BASE_URL", "http://127.0.0.1:9/api/v10/")
    settings = DiscordSettings()
    assert settings.enabled
    assert settings.guild_ids == (123, 456)
    assert settings.api_base_url == "http://127.0.0.1:9/api/v10"
    assert settings.gateway_url == "wss://gateway.discord.gg/"
    assert "abc.def" not in repr(settings)


def test_settings_come_from_dot_env_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("DISCORD_TOKEN=from-file\nDISCORD_GUILD_IDS=\n")
    settings = DiscordSettings()
    assert settings.enabled and settings.guild_ids == ()


def test_a_bad_guild_id_is_a_one_line_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_GUILD_IDS", "123,my-server")
    with pytest.raises(ConfigError, match="DISCORD_GUILD_IDS: 'my-server'"):
        DiscordSettings()


def test_the_settings_module_does_not_load_discord_py() -> None:
    import subprocess
    import sys

    code = "import adapters.discord.config, sys; print('discord' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# -- requests -------------------------------------------------------------------------------


def test_options_and_prompt_flags_merge_into_one_request() -> None:
    request = to_generation_request(
        _service(), "a lighthouse --ar 16:9 --no boats", model="sdxl", n=2, seed=5
    )
    assert request == GenerationRequest(
        prompt="a lighthouse",
        model="stability/sdxl",
        size="1792x1024",
        n=2,
        seed=5,
        negative_prompt="boats",
    )


def test_options_that_contradict_the_prompt_are_refused() -> None:
    with pytest.raises(InvalidRequestError):
        to_generation_request(_service(), "a cat --n 3", n=2)


def test_model_suggestions_match_any_name_best_first() -> None:
    assert model_suggestions(CATALOG, "imagen") == [
        ("Imagen 4 Ultra (imagen-ultra)", "imagen-ultra"),
        ("Imagen 4 Fast (imagen-fast)", "imagen-fast"),
    ]
    assert [value for _, value in model_suggestions(CATALOG, "")] == CATALOG.names()
    assert model_suggestions(CATALOG, "nothing-like-it") == []


# -- rendering ------------------------------------------------------------------------------


def test_the_result_embed_shows_prompt_model_size_seed_cost_and_quota() -> None:
    reset = datetime(2030, 1, 2, tzinfo=UTC)
    allowance = Allowance(limits=(LimitUsage("images_per_day", 10, 3, reset),))
    embed = result_embed(_result(n=2, allowance=allowance)).to_dict()
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert embed["description"] == "a red fox"
    assert fields == {
        "Model": "FLUX.1 [schnell]",
        "Size": "1024x1024",
        "Seed": "9",
        "Cost": "$0.006",
        "Quota left": "7 left today",
    }
    assert embed["footer"]["text"] == "job 0123456789abcdef0123456789abcdef"


def test_a_long_prompt_is_clipped_to_what_an_embed_holds() -> None:
    embed = result_embed(_result(prompt="word " * 2000)).to_dict()
    assert len(embed["description"]) == 4096 and embed["description"].endswith("…")


def test_details_list_every_parameter_and_mention_the_requester() -> None:
    record = JobRecord(
        job_id="0123456789abcdef0123456789abcdef",
        requester=Requester(platform="discord", workspace_id="1", channel_id="2", user_id="42"),
        request=GenerationRequest(
            prompt="a boat",
            model="stability/sdxl",
            size="1024x1024",
            n=2,
            seed=3,
            negative_prompt="sea",
        ),
        state=JobState.REFUNDED,
        held_micros=4_000,
        held_images=2,
        charged_micros=0,
        charged_images=0,
        created_at=datetime(2030, 1, 2, 3, 4, tzinfo=UTC),
        refund_reason="content_rejected",
    )
    fields = {
        f["name"]: f["value"] for f in details_embed(record, model_label="SDXL").to_dict()["fields"]
    }
    assert fields["Requested by"] == "<@42>"
    assert fields["Status"] == "refunded (content_rejected)"
    assert fields["Negative prompt"] == "sea" and fields["Seed"] == "3"
    assert fields["Created"] == "2030-01-02 03:04 UTC"


def test_custom_ids_carry_the_action_and_job_id_within_discords_limit() -> None:
    job_id = "0123456789abcdef0123456789abcdef"
    for action in ("reroll", "vary", "details", "delete"):
        value = custom_id(action, job_id)
        assert len(value) <= 100
        match = CUSTOM_ID.fullmatch(value)
        assert match and (match["action"], match["job_id"]) == (action, job_id)
        assert JobButton(action, job_id).custom_id == value
    with pytest.raises(ValueError):
        custom_id("reroll", "job id with spaces")


async def test_images_over_the_limit_are_re_encoded_and_at_most_ten_are_kept() -> None:
    big = GeneratedImage(data=_png(300, 300), mime_type="image/png", width=300, height=300)
    small = GeneratedImage(data=b"tiny", mime_type="image/png", width=1, height=1)
    refitter = Refitter()
    assert await fit_images([small] * 12, 1000, refitter) == (small,) * MAX_ATTACHMENTS
    [fitted] = await fit_images([big], 20_000, refitter)
    assert len(fitted.data) <= 20_000 and fitted.mime_type in ("image/webp", "image/jpeg")
    files = image_files(_result(), [fitted])
    assert files[0].filename == f"imagine-0123456789ab-1.{fitted.extension}"
    assert files[0].description == "a red fox"
    for file in files:
        file.close()
