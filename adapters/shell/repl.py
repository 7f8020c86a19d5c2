"""``imagine-bot shell``: a local chat REPL with the same grammar as Slack, for trying the bot
without a chat platform. Images are saved under ``out_dir`` and their paths printed."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import TextIO

from adapters.shell.output import save_images
from bot.errors import BotError
from bot.messages import (
    allowance_text,
    describe,
    help_text,
    is_operator_fault,
    models_table,
    result_summary,
)
from bot.models import Requester
from bot.service import ImageService

__all__ = ["run_shell"]

log = logging.getLogger(__name__)

PROMPT = "imagine> "
BANNER = "imagine-bot shell: type a prompt, or help, models, quota, quit."


async def run_shell(
    service: ImageService,
    *,
    requester: Requester,
    out_dir: Path,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    interactive = stdin.isatty()
    print(BANNER, file=stdout)
    while True:
        if interactive:
            print(PROMPT, end="", file=stdout, flush=True)
        line = await asyncio.to_thread(stdin.readline)
        if not line:
            return 0
        text = line.strip()
        if not text:
            continue
        command = text.casefold()
        if command in ("quit", "exit"):
            return 0
        if command == "help":
            print(help_text(service.catalog), file=stdout)
        elif command == "models":
            print(models_table(service.catalog, default=service.catalog.default), file=stdout)
        elif command == "quota":
            print(allowance_text(await service.allowance(requester)), file=stdout)
        else:
            await _imagine(service, text, requester, out_dir, stdout)
        stdout.flush()


async def _imagine(
    service: ImageService, text: str, requester: Requester, out_dir: Path, stdout: TextIO
) -> None:
    try:
        request = service.parse(text)
        result = await service.generate(request, requester)
    except BotError as err:
        if is_operator_fault(err):
            log.warning("job failed: %s", err)
        print(describe(err), file=stdout)
        return
    print(result_summary(result), file=stdout)
    for path in save_images(result, out_dir):
        print(path, file=stdout)
