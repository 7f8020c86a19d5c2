"""Runs the real ``imagine-bot run`` in a child process, as an operator would, for end-to-end
tests against the local fakes. The environment is built from scratch so that nothing from the
developer's shell or a stray ``.env`` leaks in."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.fakes import e2e

__all__ = ["REPO_ROOT", "BotProcess"]

REPO_ROOT = Path(__file__).resolve().parents[2]


class BotProcess:
    """``async with BotProcess(env, workdir=tmp_path) as bot: ...``; ``bot.log()`` returns what
    it printed (stdout and stderr), for assertions and for failure reports."""

    def __init__(self, env: dict[str, str], *, workdir: Path, args: tuple[str, ...] = ("run",)):
        self.env = env
        self.workdir = workdir
        self.args = args
        self.log_path = workdir / f"bot-{id(self):x}.log"
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> BotProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        e2e.require(f"the bot (imagine-bot {' '.join(self.args)})")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "DEBUG",
            "DATABASE_URL": f"sqlite:///{self.workdir / 'imagine.db'}",
            **self.env,
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "adapters.cli",
                *self.args,
                cwd=self.workdir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )

    async def stop(self, *, grace: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        process = self.process
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            process.kill()
            return await process.wait()

    async def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    @property
    def running(self) -> bool:
        """Started and not exited: what a module's shared bot must still be at the module's
        end (a test that stops it needs a process of its own)."""
        return self.process is not None and self.process.returncode is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
