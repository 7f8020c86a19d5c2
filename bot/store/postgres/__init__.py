"""The PostgreSQL backend (``DATABASE_URL=postgresql://...``, through asyncpg): the ledger, the
moderation store and the cluster-wide job queue of several bot processes on one database."""
