"""Project rules that keep the core portable: bot/ never loads a chat SDK, and every core
module's ``__all__`` is complete (ruff's RUF022 keeps it sorted). The linters themselves run in
``scripts/check``, once, before the suite."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from tests.fakes.loopback import serve_loopback
from tests.fakes.process import BotProcess

ROOT = Path(__file__).resolve().parents[1]
# Every module under bot/, its sub-packages included (``bot.store.__init__`` stands for the
# package ``bot.store``).
CORE_MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for path in (ROOT / "bot").rglob("*.py")
    if path.stem != "__main__"
)
PLATFORM_SDKS = ("discord", "slack_bolt", "slack_sdk")


def test_core_never_loads_a_platform_sdk() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {CORE_MODULES!r}:\n"
        "    importlib.import_module(name.replace('.__init__', ''))\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {PLATFORM_SDKS!r})\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("module_name", [m.replace(".__init__", "") for m in CORE_MODULES])
def test_all_is_complete(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = list(getattr(module, "__all__", []))
    source = Path(module.__file__ or "").read_text()
    public = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            public.add(node.name)
    public = {name for name in public if not name.startswith("_")}
    missing = public - set(exported)
    assert not missing, f"{module_name}.__all__ lacks {sorted(missing)}"
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name}"


async def test_a_test_not_marked_e2e_can_start_neither_a_fake_server_nor_the_bot(
    tmp_path: Path,
) -> None:
    # tests/fakes/e2e.py keeps `pytest -m "not e2e"` in-process.
    with pytest.raises(AssertionError, match="mark it e2e"):
        await serve_loopback(web.Application())
    with pytest.raises(AssertionError, match="mark it e2e"):
        await BotProcess({}, workdir=tmp_path).start()
