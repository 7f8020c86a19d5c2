"""The operator's command line, run as a real process: `generate`, `models` and `shell`
offline, and against the fake image API for the real provider's paths; every ordinary mistake
is one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from PIL import Image

from tests.fakes.discord import FakeDiscord
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

pytestmark = pytest.mark.e2e


def cli_env(**extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO_ROOT),
        **extra,
    }


def run_cli(
    *args: str, cwd: Path, stdin: str = "", prefix: Sequence[str] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "adapters.cli", *args],
        cwd=cwd,
        env=cli_env(**env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_error_line(
    out: subprocess.CompletedProcess[str] | tuple[int, str, str], *, alone: bool = False
) -> str:
    """The single ``imagine-bot:`` line a mistake prints, checked to be the last thing on
    stderr, with a non-zero exit and no traceback; with ``alone``, the only thing on stderr
    (else log lines may come first, such as ``run``'s or the preview warning)."""
    if isinstance(out, tuple):
        code, _, stderr = out
    else:
        code, stderr = out.returncode, out.stderr
    assert code != 0, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("imagine-bot:")]
    assert len(errors) == 1, stderr
    assert stderr.rstrip().splitlines()[-1] == errors[0], stderr
    if alone:
        assert stderr == errors[0] + "\n", stderr
    return errors[0].removeprefix("imagine-bot: ")


def unprivileged() -> list[str]:
    """A prefix that runs the child without root's power to write anywhere (tests run as root
    here; the Docker image runs as uid 10001): permissions then apply as to any user."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to test permissions as root"
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]


def read_only_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    path.chmod(0o555)
    return path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    # The default database: data/imagine.db under the working directory.
    assert (tmp_path / "data" / "imagine.db").exists()


def test_generate_user_mistake_is_one_line_and_non_zero(tmp_path: Path) -> None:
    out = run_cli("generate", "a red fox", "--size", "999x999", cwd=tmp_path)

    # Terminal wording: what is wrong and what is allowed, without the chat persona.
    assert one_error_line(out) == (
        "size 999x999 is not offered by flux; choose 1024x1024, 1024x1792, 1792x1024, 2048x2048."
    )


def test_a_refused_prompt_is_worded_for_the_terminal(tmp_path: Path) -> None:
    out = run_cli("generate", "a nude portrait", cwd=tmp_path)

    assert one_error_line(out) == "This prompt was refused by the word filter. Nothing was charged."


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
        **image_api.env(),
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
        **image_api.env(),
        IMAGE_API_ALLOW_PRIVATE_URLS="1",  # the fake's URLs are on 127.0.0.1
        IMAGE_API_MAX_RETRIES="1",
        IMAGE_API_TIMEOUT="0.5",
    )
    image_api.release.set()

    assert code == 1
    assert stdout == ""
    assert "Traceback" not in stderr
    assert image_api.api_key not in stderr
    [error] = [line for line in stderr.splitlines() if line.startswith("imagine-bot:")]
    assert stderr.rstrip().splitlines()[-1] == error
    assert fragment.casefold() in error.casefold(), error


# --- ordinary mistakes: one line, a non-zero exit, nothing charged -------------------------


def _jobs(tmp_path: Path) -> str:
    """What the ledger in ``tmp_path`` recorded (the usage report), to show nothing was."""
    out = run_cli("usage", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("where", ["a file", "under a file", "a read-only directory"])
def test_generate_checks_out_before_anything_is_drawn(tmp_path: Path, where: str) -> None:
    (tmp_path / "notes.txt").write_text("not a directory")
    out_dir = {
        "a file": tmp_path / "notes.txt",
        "under a file": tmp_path / "notes.txt" / "images",
        "a read-only directory": read_only_dir(tmp_path / "locked") / "images",
    }[where]

    out = run_cli(
        "generate", "a red fox", "--out", str(out_dir), cwd=tmp_path, prefix=unprivileged()
    )

    error = one_error_line(out, alone=True)
    assert out.stdout == ""
    if where == "a read-only directory":
        assert error == (
            f"the output directory {tmp_path / 'locked'} is not writable by this user "
            f"(uid {os.geteuid()}); choose another with --out"
        )
    else:
        assert (
            error
            == f"--out {out_dir} is not a directory (a file is in the way); choose a directory"
        )
    # Checked before the database was even opened: no job was held, drawn or charged.
    assert not (tmp_path / "data").exists()


def test_an_unwritable_database_directory_says_whose_it_must_be(tmp_path: Path) -> None:
    # A root-owned bind mount on /data under Docker looks like this to uid 10001.
    data = read_only_dir(tmp_path / "data")
    for command in (["quota", "audit"], ["generate", "a red fox"], ["shell"]):
        out = run_cli(*command, cwd=tmp_path, prefix=unprivileged())

        uid = os.geteuid()
        assert one_error_line(out, alone=True) == (
            f"the database directory {data} is not writable by this user (uid {uid}); run "
            f"chown {uid} {data}, or for a Docker bind mount run chown {uid} on the host "
            f"directory (e.g. chown {uid} ./data)"
        ), command
    assert list(data.iterdir()) == []


def test_a_database_path_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "db").write_text("")
    out = run_cli("quota", "audit", cwd=tmp_path, DATABASE_URL="sqlite:///db/imagine.db")

    assert one_error_line(out, alone=True) == (
        f"the database directory {tmp_path / 'db'} cannot be created: a file is in the way; "
        "fix DATABASE_URL"
    )


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("these are my notes, not a database" * 100)
    out = run_cli("quota", "audit", cwd=tmp_path, DATABASE_URL="sqlite:///notes.db")

    error = one_error_line(out, alone=True)
    assert error == "cannot open the database notes.db: file is not a database"


def test_an_unknown_log_level_is_one_line(tmp_path: Path) -> None:
    out = run_cli("models", cwd=tmp_path, LOG_LEVEL="verbose")

    assert one_error_line(out, alone=True) == (
        "invalid configuration: LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING', "
        "'ERROR' or 'CRITICAL'"
    )
    assert run_cli("models", cwd=tmp_path, LOG_LEVEL=" warn ").returncode == 0


async def test_discord_without_a_network_is_one_line(tmp_path: Path) -> None:
    port = closed_port()
    async with asyncio.timeout(60):
        out = await run_cli_async(
            "run",
            cwd=tmp_path,
            DISCORD_TOKEN="a-token",
            DISCORD_API_BASE_URL=f"http://127.0.0.1:{port}/api/v10",
            DISCORD_GATEWAY_URL=f"ws://127.0.0.1:{port}/",
        )

    assert one_error_line(out) == (
        f"cannot reach Discord at http://127.0.0.1:{port}/api/v10 (ClientConnectorError); "
        "check DISCORD_API_BASE_URL and the network"
    )
    assert "a-token" not in out[2]


async def test_an_unreachable_discord_gateway_is_one_line(tmp_path: Path) -> None:
    port = closed_port()
    async with FakeDiscord() as discord, asyncio.timeout(60):
        env = {**discord.env(), "DISCORD_GATEWAY_URL": f"ws://127.0.0.1:{port}/"}
        out = await run_cli_async("run", cwd=tmp_path, **env)

    assert one_error_line(out) == (
        f"cannot reach the Discord gateway at ws://127.0.0.1:{port}/ (ConnectionRefusedError); "
        "check DISCORD_GATEWAY_URL and the network"
    )
    assert discord.token not in out[2]


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`imagine-bot models | head -2`: the reader has gone before the table is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "adapters.cli", "models"],
            cwd=tmp_path,
            env=cli_env(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)

    assert out.returncode == 128 + signal.SIGPIPE
    assert out.stderr == ""


# --- small gaps ----------------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    out = run_cli("--version", cwd=tmp_path)

    assert out.returncode == 0
    assert re.fullmatch(r"imagine-bot \S+ \(Python 3\.\d+\.\d+\S*\)\n", out.stdout), out.stdout


async def test_generate_takes_ar_and_no_as_options(tmp_path: Path, image_api: FakeImageAPI) -> None:
    code, stdout, stderr = await run_cli_async(
        "generate",
        "a lighthouse",
        "--ar",
        "16:9",
        "--no",
        "boats, text",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
        **image_api.env(),
    )

    assert code == 0, stderr
    [request] = image_api.generations
    assert request.json["prompt"] == "a lighthouse"
    assert request.json["size"] == "1792x1024"
    assert request.json["negative_prompt"] == "boats, text"
    [path] = [Path(line) for line in stdout.splitlines()]
    assert path.name.startswith("a-lighthouse-") and decoded_size(path) == (1792, 1024)


def test_generate_ar_mistakes_are_the_grammar_s(tmp_path: Path) -> None:
    both = run_cli("generate", "a fox --size 1024x1024", "--ar", "16:9", cwd=tmp_path)
    assert one_error_line(both) == "--size and --ar both given; use one of them."
    bad = run_cli("generate", "a fox", "--ar", "wide", cwd=tmp_path)
    assert one_error_line(bad).startswith("aspect ratio wide is not W:H")


def test_generate_options_explain_themselves_with_examples(tmp_path: Path) -> None:
    out = run_cli("generate", "--help", cwd=tmp_path)

    assert out.returncode == 0
    for option in ("--model", "--size", "--ar", "--n", "--seed", "--no"):
        [line] = [line for line in out.stdout.splitlines() if line.strip().startswith(option + " ")]
        assert "e.g." in line, line
    assert 'imagine-bot generate "a lighthouse at dusk" --ar 16:9' in out.stdout


@pytest.mark.parametrize("platform", ["discord", "slack"])
def test_quota_scopes_on_discord_and_slack_need_a_server(tmp_path: Path, platform: str) -> None:
    out = run_cli("quota", "set", "--platform", platform, "--images-per-day", "3", cwd=tmp_path)

    error = one_error_line(out, alone=True)
    assert error.startswith(f"--server is required with --platform {platform}: ")
    assert out.returncode == 2
    assert "no charged usage" in _jobs(tmp_path)
    assert run_cli("quota", "audit", cwd=tmp_path).stdout == "no quota changes recorded\n"
    # The shell has no servers: a scope without one is its only scope.
    shell = run_cli("quota", "set", "--platform", "shell", "--images-per-day", "3", cwd=tmp_path)
    assert shell.returncode == 0, shell.stderr


def test_quota_audit_says_values_in_words(tmp_path: Path) -> None:
    where = ["--platform", "slack", "--server", "T1"]
    for change in (
        ["quota", "set", *where, "--images-per-day", "20", "--usd-per-month", "2.5"],
        ["quota", "set", *where, "--images-per-day", "none"],
        ["quota", "cap", *where, "50"],
    ):
        assert run_cli(*change, cwd=tmp_path).returncode == 0

    audit = run_cli("quota", "audit", cwd=tmp_path).stdout

    assert "usd_micros" not in audit and "images_per_day" not in audit and "set_limits" not in audit
    lines = audit.splitlines()
    assert re.search(r"set spend cap\s+server slack:T1\s+\(none\)\s+\$50\.00/month$", lines[1])
    assert re.search(r"set limits .*20 images/day, \$2\.50/month\s+\$2\.50/month$", lines[2])
    assert re.search(r"set limits .*\(none\)\s+20 images/day, \$2\.50/month$", lines[3])


def test_one_off_commands_are_quiet_with_a_copied_env_example(tmp_path: Path) -> None:
    # As the issue found it: .env.example copied, with its LOG_LEVEL=INFO.
    env_file = tmp_path / ".env"
    env_file.write_text((REPO_ROOT / ".env.example").read_text() + "\nLOG_LEVEL=INFO\n")
    where = ["--platform", "slack", "--server", "T1"]

    quiet = run_cli("quota", "set", *where, "--images-per-day", "5", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""

    asked = run_cli("--verbose", "quota", "clear", *where, cwd=tmp_path)
    assert asked.returncode == 0
    assert "INFO bot.store.ledger: cli:" in asked.stderr and "cleared limits" in asked.stderr


# Python reprs: a dataclass's `Name(field=...)`, an enum's `<Kind.X: 'x'>`, `<... object at 0x>`.
REPR = re.compile(r"\b[A-Z]\w*\(\w+=|<\w+\.\w+: |<[\w.]+ object at 0x")


def test_log_lines_about_quota_changes_have_no_python_reprs(tmp_path: Path) -> None:
    where = ["--platform", "discord", "--server", "123"]
    log = ""
    for change in (
        ["quota", "set", *where, "--role", "9", "--images-per-month", "40", "--usd-per-month", "1"],
        ["quota", "set", *where, "--images-per-day", "7"],
        ["quota", "clear", *where, "--role", "9"],
        ["quota", "cap", *where, "12.5"],
    ):
        out = run_cli("-v", *change, cwd=tmp_path, LOG_LEVEL="DEBUG")
        assert out.returncode == 0, out.stderr
        log += out.stderr

    ours = [line for line in log.splitlines() if re.search(r" (bot|adapters)\.\w+", line)]
    assert [line for line in ours if REPR.search(line)] == []
    assert any(
        "set limits at role 9 in discord:123: images/day unset, images/month 40, "
        "micro-USD/month 1000000" in line
        for line in ours
    ), ours
    assert any("cleared limits at role 9 in discord:123" in line for line in ours), ours


# --- run in a container: no platform configured -----------------------------------------------


async def test_run_with_no_platform_exits_2_and_explains(tmp_path: Path) -> None:
    code, _, stderr = await run_cli_async("run", cwd=tmp_path)

    assert code == 2
    assert "No chat platform is configured" in stderr and "imagine-bot shell" in stderr


async def test_run_waits_for_config_instead_of_a_restart_loop(tmp_path: Path) -> None:
    """The image runs `imagine-bot run --wait-for-config`: an empty .env under a restart policy
    leaves the container waiting with the reason in its log, not restarting it over and over."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.cli",
        "run",
        "--wait-for-config",
        cwd=tmp_path,
        env=cli_env(),
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    async with asyncio.timeout(30):
        line = (await process.stderr.readline()).decode()
        assert "No chat platform is configured" in line and "Waiting instead of exiting" in line
        assert process.returncode is None
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == 0


# --- the shell at a real terminal: readline ---------------------------------------------------

PROMPT = "imagine> "


def _wait_blocked(wchan: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not any(word in wchan.read_text() for word in ("select", "poll")):
        assert time.monotonic() < deadline, f"still not waiting for a key: {wchan.read_text()}"
        time.sleep(0.01)


class Terminal:
    """``imagine-bot`` on a pseudo-terminal of its own (its controlling terminal, so Ctrl-C is
    SIGINT), typed at and read as a person would; output is awaited, never slept for."""

    def __init__(self, process: asyncio.subprocess.Process, master: int) -> None:
        self.process = process
        self.master = master
        self.output = ""
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(master, self._read)

    @classmethod
    async def start(cls, *args: str, cwd: Path, **env: str) -> Terminal:
        import fcntl
        import struct
        import termios

        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        setsid = shutil.which("setsid")
        assert setsid, "setsid (util-linux) gives the child its own controlling terminal"
        process = await asyncio.create_subprocess_exec(
            setsid,
            "--ctty",
            sys.executable,
            "-m",
            "adapters.cli",
            *args,
            cwd=cwd,
            env=cli_env(TERM="xterm", HOME=str(cwd), **env),
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        return cls(process, master)

    def _read(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
        self.output += data.decode(errors="replace")
        self._changed.set()

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    async def expect(self, text: str, *, count: int = 1, timeout: float = 30.0) -> None:
        """Wait until ``text`` has been shown ``count`` times in all."""
        await self._until(lambda: self.output.count(text) >= count, f"{text!r} x{count}", timeout)

    async def at_prompt(self, *, timeout: float = 30.0) -> None:
        """Wait until the shell waits at its prompt: typed earlier, a key would reach the
        terminal before readline does (Ctrl-D would then be no end of input)."""
        await self._until(lambda: self.output.endswith(PROMPT), "the prompt", timeout)

    async def idle(self, *, timeout: float = 30.0) -> None:
        """Wait until the shell's main thread is blocked waiting for a key. CPython's readline
        notices a signal only while it waits (an EINTR): a Ctrl-C typed in the microseconds
        after it echoed a key waits for the next signal. No person types that fast; a test
        does. The kernel announces no such state, so this looks at /proc every 10 ms."""
        pid = self.process.pid
        await asyncio.to_thread(_wait_blocked, Path(f"/proc/{pid}/task/{pid}/wchan"), timeout)

    async def _until(self, done: Callable[[], bool], what: str, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{what} not shown; the screen:\n{self.output}") from None

    async def close(self) -> int:
        async with asyncio.timeout(30):
            code = await self.process.wait()
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.master)
        os.close(self.master)
        return code


async def test_the_shell_has_line_editing_history_and_ctrl_c_ctrl_d(tmp_path: Path) -> None:
    term = await Terminal.start("shell", cwd=tmp_path)
    await term.at_prompt()

    term.type("modles")
    await term.expect("modles")
    await term.idle()
    term.type("\x03")  # Ctrl-C drops the line at once, with no Enter
    await term.expect(PROMPT, count=2)
    await term.at_prompt()

    term.type("mdels" + "\x1b[D" * 4 + "o\r")  # left arrow four times, then fix the typo
    await term.expect("flux (default)")
    await term.at_prompt()

    term.type("\x1b[A\r")  # up arrow: the last line again
    await term.expect("flux (default)", count=2)
    await term.at_prompt()

    term.type("\x04")  # Ctrl-D leaves
    assert await term.close() == 0
    assert list((tmp_path / "out").iterdir()) == []  # the dropped line drew nothing
    # Kept for next time (a repeated line once, as in bash); the dropped line is not.
    assert (tmp_path / ".imagine-bot-history").read_text().splitlines() == ["models"]


async def test_ctrl_c_in_the_shell_cancels_a_running_job_and_refunds_it(
    tmp_path: Path, image_api: FakeImageAPI
) -> None:
    image_api.script(Stall(then=Images()))
    term = await Terminal.start(
        "shell",
        cwd=tmp_path,
        **image_api.env(),
        DEFAULT_IMAGES_PER_DAY="5",
    )
    await term.at_prompt()

    term.type("a slow fox --n 2\r")
    await image_api.stalled.wait()
    term.type("\x03")
    await term.expect("Cancelled. Nothing was charged.")
    await term.at_prompt()

    term.type("quota\r")
    await term.expect("Daily image limit: 5 images left of 5")
    await term.at_prompt()
    term.type("\x04")
    assert await term.close() == 0
    image_api.release.set()
    assert list((tmp_path / "out").iterdir()) == []


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
        **image_api.env(),
        IMAGE_API_ALLOW_PRIVATE_URLS=allow,
    )

    assert result == code, stderr
    if code:
        assert "IMAGE_API_ALLOW_PRIVATE_URLS" in stderr and image_api.downloads == []
    else:
        [path] = [Path(line) for line in stdout.splitlines()]
        assert decoded_size(path) == (1024, 1024) and len(image_api.downloads) == 1
