"""PostgreSQL tables of the moderation store (``bot.store.postgres.moderation``), created by
``bot.store.postgres.schema``'s first migration after the ledger's tables."""

from __future__ import annotations

__all__ = ["MODERATION"]

MODERATION: tuple[str, ...] = ()
