"""The moderation store on PostgreSQL (placeholder until it is written: every call raises)."""

from __future__ import annotations

from typing import Any, cast

from bot.store.moderation import ModerationStore

__all__ = ["PostgresModerationStore"]


class PostgresModerationStore:
    @classmethod
    def on(cls, ledger: Any) -> ModerationStore:
        return cast(ModerationStore, cls())

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(f"PostgresModerationStore.{name}")
