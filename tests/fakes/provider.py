"""A scripted in-process image provider for service tests: it satisfies ``ImageProvider`` the
way the real client does (returns decodable images, raises ``bot.errors``), and records calls.
The real HTTP client is tested against ``tests.fakes.image_api`` instead."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from bot.models import GeneratedImage, GenerationRequest, ModelSpec
from bot.provider.preview import draw_preview

__all__ = ["ScriptedProvider"]


@dataclass
class ScriptedProvider:
    """Each call takes the next scripted step: an exception to raise, an int (deliver only that
    many images), or ``"block"`` (wait until ``release`` is set). With no step left it draws
    ``request.n`` images.

    ``gates`` holds single calls by prompt: a call whose prompt has a gate waits for that event
    first. ``running``/``peak`` count calls in flight; ``wait_calls(k)`` waits for k calls."""

    billable: bool = True
    script: deque[BaseException | int | str] = field(default_factory=deque)
    calls: list[GenerationRequest] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    running: int = 0
    peak: int = 0
    _called: asyncio.Condition = field(default_factory=asyncio.Condition)

    def gate(self, prompt: str) -> asyncio.Event:
        """Hold every call for ``prompt`` until the returned event is set."""
        return self.gates.setdefault(prompt, asyncio.Event())

    async def wait_calls(self, count: int) -> None:
        async with self._called:
            await self._called.wait_for(lambda: len(self.calls) >= count)

    async def generate(
        self, request: GenerationRequest, spec: ModelSpec
    ) -> tuple[GeneratedImage, ...]:
        self.calls.append(request)
        self.started.set()
        async with self._called:
            self._called.notify_all()
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            gate = self.gates.get(request.prompt)
            if gate is not None:
                await gate.wait()
            return await self._step(request, spec)
        finally:
            self.running -= 1

    async def _step(
        self, request: GenerationRequest, spec: ModelSpec
    ) -> tuple[GeneratedImage, ...]:
        count = request.n
        if self.script:
            step = self.script.popleft()
            if isinstance(step, BaseException):
                raise step
            if step == "block":
                await self.release.wait()
            elif isinstance(step, int):
                count = step
        seed = request.seed or 0
        return tuple(draw_preview(request, spec, seed + i, i) for i in range(count))
