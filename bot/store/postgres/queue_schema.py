"""PostgreSQL tables of the cluster-wide job queue (``bot.store.postgres.queue``), created by
``bot.store.postgres.schema``'s first migration after the ledger's and moderation's tables."""

from __future__ import annotations

__all__ = ["QUEUE"]

QUEUE: tuple[str, ...] = ()
