"""``imagine-bot shell``: a local chat REPL with the same grammar as Slack, for trying the bot
without a chat platform. Images are saved under ``out_dir`` and their paths printed.

At a terminal the prompt is GNU readline: arrow keys and line editing, a history kept in
``~/.imagine-bot-history``, Ctrl-C cancels the line being typed (or the job being drawn, which
is refunded) and Ctrl-D leaves. Readline needs the main thread, so the service runs on a
``LoopThread`` and this module reads lines, writes files and prints in the main thread.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TextIO

from adapters.runtime import Runtime
from adapters.shell.loop import LoopThread
from adapters.shell.output import check_out_dir, save_images
from bot.errors import BotError
from bot.messages import (
    SHELL_CANCELLED,
    allowance_text,
    help_text,
    is_operator_fault,
    models_table,
    result_summary,
    save_failed_text,
    terminal_text,
)
from bot.models import Requester

__all__ = ["HISTORY_FILE", "run_shell"]

log = logging.getLogger(__name__)

PROMPT = "imagine> "
BANNER = "imagine-bot shell: type a prompt, or help, models, quota, quit (or Ctrl-D)."
HISTORY_FILE = Path("~/.imagine-bot-history")
HISTORY_LENGTH = 1000


def run_shell(
    open_runtime: Callable[[], AbstractAsyncContextManager[Runtime]],
    *,
    requester: Requester,
    out_dir: Path,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Run the REPL until ``quit``, Ctrl-D or the end of input; returns the exit code. Raises
    ``BotError`` (e.g. ``ConfigError``) when ``out_dir`` or the runtime cannot be used."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    check_out_dir(out_dir)
    thread = LoopThread(open_runtime)
    with thread as runtime, _LineReader(stdin, stdout) as reader:
        if reader.interactive and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            # Started from something that ignores Ctrl-C (a background job of a script,
            # nohup): at a terminal, Ctrl-C is how a line or a job is cancelled.
            signal.signal(signal.SIGINT, signal.default_int_handler)
        session = _Session(thread, runtime, requester, out_dir, stdout)
        print(BANNER, file=stdout, flush=True)
        while True:
            try:
                line = reader.read()
            except KeyboardInterrupt:  # Ctrl-C at the prompt: drop the line, prompt again
                print(file=stdout, flush=True)
                continue
            if line is None:  # Ctrl-D or the end of piped input
                if reader.interactive:
                    print(file=stdout, flush=True)
                return 0
            try:
                if not session.handle(line):
                    return 0
            except KeyboardInterrupt:  # Ctrl-C while a job ran: it was cancelled, refunded
                print(SHELL_CANCELLED, file=stdout, flush=True)
            stdout.flush()


class _Session:
    def __init__(
        self,
        thread: LoopThread[Runtime],
        runtime: Runtime,
        requester: Requester,
        out_dir: Path,
        stdout: TextIO,
    ) -> None:
        self.thread = thread
        self.service = runtime.service
        self.requester = requester
        self.out_dir = out_dir
        self.stdout = stdout

    def say(self, text: str) -> None:
        print(text, file=self.stdout)

    def handle(self, line: str) -> bool:
        """Answer one line; ``False`` means leave."""
        text = line.strip()
        command = text.casefold()
        if not text:
            return True
        if command in ("quit", "exit"):
            return False
        catalog = self.service.catalog
        try:
            if command == "help":
                self.say(help_text(catalog))
            elif command == "models":
                self.say(models_table(catalog, default=catalog.default))
            elif command == "quota":
                self.say(allowance_text(self.thread.run(self.service.allowance(self.requester))))
            else:
                self._imagine(text)
        except BotError as err:
            if is_operator_fault(err):
                log.warning("job failed: %s", err)
            self.say(terminal_text(err))
        return True

    def _imagine(self, text: str) -> None:
        request = self.service.parse(text)
        result = self.thread.run(self.service.generate(request, self.requester))
        self.say(result_summary(result))
        try:
            paths = save_images(result, self.out_dir)
        except OSError as err:
            self.say(save_failed_text(str(self.out_dir), err))
            return
        for path in paths:
            self.say(str(path))


class _LineReader:
    """Lines from ``stdin``: through readline (with a prompt and a history file) when it is
    the terminal, else plain reads with no prompt (piped input, tests)."""

    def __init__(self, stdin: TextIO, stdout: TextIO) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.interactive = stdin is sys.stdin and stdout is sys.stdout and stdin.isatty()
        self._readline: ModuleType | None = None
        self._history = HISTORY_FILE.expanduser()

    def __enter__(self) -> _LineReader:
        if self.interactive:
            try:
                import readline  # enables line editing for input(); absent on some builds
            except ImportError:
                return self
            self._readline = readline
            readline.set_history_length(HISTORY_LENGTH)
            with contextlib.suppress(OSError):  # no history yet, or an unreadable home
                readline.read_history_file(self._history)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._readline is not None:
            try:
                self._readline.write_history_file(self._history)
            except OSError as err:
                log.warning("could not save the shell history to %s: %s", self._history, err)

    def read(self) -> str | None:
        """The next line, or ``None`` at the end; Ctrl-C raises ``KeyboardInterrupt``."""
        if not self.interactive:
            return self.stdin.readline() or None
        try:
            return input(PROMPT)
        except EOFError:
            return None
