"""The operator's command line, run as a real process: `generate`, `models` and `shell`
offline, and against the fake image API for the real provider's paths."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.fakes.image_api import (
    Answer,
    DeadUrl,
    FakeImageAPI,
    Images,
    NotAnImage,
    RawReply,
    Stall,
    bad_gateway,
    content_policy_violation,
    insufficient_quota,
    invalid_api_key,
    rate_limited,
    server_error,
)
from tests.fakes.process import REPO_ROOT


def cli_env(**extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO_ROOT),
        **extra,
    }


def run_cli(*args: str, cwd: Path, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        cwd=cwd,
        env=cli_env(**env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def decoded_size(path: Path) -> tuple[int, int]:
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        image.load()
        return image.size


def test_generate_offline_writes_two_pngs(tmp_path: Path) -> None:
    out = run_cli(
        "generate", "a red fox", "--n", "2", "--out", str(tmp_path / "imgs"), cwd=tmp_path
    )

    assert out.returncode == 0, out.stderr
    paths = [Path(line) for line in out.stdout.splitlines()]
    assert len(paths) == 2
    for path in paths:
        assert path.parent == tmp_path / "imgs" and path.suffix == ".png"
        assert decoded_size(path) == (1024, 1024)
    # One warning says previews are in use and how to switch.
    assert out.stderr.count("IMAGE_API_KEY is not set") == 1
    # The default database was created where DESIGN.md says.
    assert (tmp_path / "data" / "imagine.db").exists()


def test_generate_user_mistake_is_one_line_and_non_zero(tmp_path: Path) -> None:
    out = run_cli("generate", "a red fox", "--size", "999x999", cwd=tmp_path)

    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if line.startswith("imagine-bot:")]
    assert errors == [
        "imagine-bot: Sorry, I can't draw that: size 999x999 is not offered by flux; choose "
        "1024x1024, 1024x1792, 1792x1024, 2048x2048."
    ]
    assert "Traceback" not in out.stderr


def test_models_prints_the_catalog_with_prices(tmp_path: Path) -> None:
    out = run_cli("models", cwd=tmp_path)

    assert out.returncode == 0
    assert "black-forest-labs/flux-1-schnell" in out.stdout and "$0.003" in out.stdout
    assert "google/imagen-4-ultra" in out.stdout and "$0.013" in out.stdout


def test_malformed_models_file_stops_start_up_with_one_line(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text('[[models]]\nid = "acme/x"\nsizes = ["big"]\nprice = 0.01\n')
    out = run_cli("models", cwd=tmp_path, MODELS_FILE=str(models))

    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"imagine-bot: MODELS_FILE {models}, model acme/x: size 'big' is not WIDTHxHEIGHT, "
        'e.g. "1024x1024"'
    ]


def test_shell_session(tmp_path: Path) -> None:
    session = "help\nmodels\na lighthouse at dusk --n 2 --ar 16:9\nx --n 9\nquota\nquit\n"
    out = run_cli("shell", cwd=tmp_path, stdin=session, DEFAULT_IMAGES_PER_DAY="5")

    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("Usage: <prompt>") for line in lines)
    assert any(line.startswith("flux (default)") for line in lines)
    saved = [Path(line) for line in lines if line.endswith(".png")]
    assert len(saved) == 2
    assert all(decoded_size(tmp_path / path) == (1792, 1024) for path in saved)
    assert all(str(path).startswith("out/") for path in saved)
    assert any("n must be 1-4" in line for line in lines)
    assert any(line.startswith("Daily image limit: 3 images left of 5") for line in lines)


async def run_cli_async(*args: str, cwd: Path, **env: str) -> tuple[int, str, str]:
    """The CLI in a child process while this test's event loop keeps serving the fakes."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.cli",
        *args,
        cwd=cwd,
        env=cli_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_generate_against_an_openai_compatible_server(
    tmp_path: Path, image_api: FakeImageAPI
) -> None:
    code, stdout, stderr = await run_cli_async(
        "generate",
        "a red fox",
        "--size",
        "1792x1024",
        "--model",
        "sdxl",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
        IMAGE_API_BASE_URL=image_api.base_url,
        IMAGE_API_KEY=image_api.api_key,
    )

    assert code == 0, stderr
    [request] = image_api.generations
    assert request.json["size"] == "1792x1024" and request.json["model"] == "stability/sdxl"
    assert request.json["prompt"] == "a red fox" and request.json["n"] == 1
    [path] = [Path(line) for line in stdout.splitlines()]
    assert decoded_size(path) == (1792, 1024)
    assert "IMAGE_API_KEY is not set" not in stderr


FAULTS = [
    (rate_limited(retry_after_ms="1"), "rate limit"),
    (insufficient_quota(), "quota"),
    (server_error(500), "500"),
    (bad_gateway(), "502"),
    (content_policy_violation(), "refused this prompt"),
    (invalid_api_key(), "401"),
    (Stall(), "no answer"),
    (RawReply(b'{"created": 1, "data": [{"b64_json": '), "JSON"),
    (NotAnImage(), "not a readable image"),
    (DeadUrl(), "404"),
]


@pytest.mark.parametrize(
    ("answer", "fragment"), FAULTS, ids=[type(a).__name__ + ":" + f for a, f in FAULTS]
)
async def test_each_provider_fault_is_one_line_and_non_zero(
    tmp_path: Path, image_api: FakeImageAPI, answer: Answer, fragment: str
) -> None:
    # Retries would repeat the scripted fault; the last answer of each attempt is the same.
    image_api.script(*[answer] * 3)
    code, stdout, stderr = await run_cli_async(
        "generate",
        "a red fox",
        cwd=tmp_path,
        IMAGE_API_BASE_URL=image_api.base_url,
        IMAGE_API_KEY=image_api.api_key,
        IMAGE_API_MAX_RETRIES="1",
        IMAGE_API_TIMEOUT="0.5",
        IMAGE_API_ALLOW_PRIVATE_URLS="1",  # the fake's URLs are on 127.0.0.1
    )
    image_api.release.set()

    assert code == 1
    assert stdout == ""
    assert "Traceback" not in stderr
    assert image_api.api_key not in stderr
    [error] = [line for line in stderr.splitlines() if line.startswith("imagine-bot:")]
    assert stderr.rstrip().splitlines()[-1] == error
    assert fragment.casefold() in error.casefold(), error


@pytest.mark.parametrize(("allow", "code"), [("", 1), ("true", 0)])
async def test_image_urls_on_loopback_are_fetched_only_with_allow_private_urls(
    tmp_path: Path, image_api: FakeImageAPI, allow: str, code: int
) -> None:
    image_api.script(Images(as_url=True))
    result, stdout, stderr = await run_cli_async(
        "generate",
        "a red fox",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
        IMAGE_API_BASE_URL=image_api.base_url,
        IMAGE_API_KEY=image_api.api_key,
        IMAGE_API_ALLOW_PRIVATE_URLS=allow,
    )

    assert result == code, stderr
    if code:
        assert "IMAGE_API_ALLOW_PRIVATE_URLS" in stderr and image_api.downloads == []
    else:
        [path] = [Path(line) for line in stdout.splitlines()]
        assert decoded_size(path) == (1024, 1024) and len(image_api.downloads) == 1
