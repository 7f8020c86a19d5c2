"""``async with`` for the store's objects that are closed once, when the process stops."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Closing"]


class Closing:
    """``async with`` closes it on the way out; subclasses define ``close``."""

    # No fields of its own: the frozen, slotted ``Store`` dataclass derives from it too.
    __slots__ = ()

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
