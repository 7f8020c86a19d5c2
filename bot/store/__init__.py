"""Storage: the database connection, schema and migrations, row encoding, the quota ledger,
the moderation store and job leases.

Callers open a store with ``database.open_store(DATABASE_URL, ...)`` and depend only on the
protocols (``ledger.Ledger``, ``moderation.ModerationStore``); the SQLite classes are named
only inside this package (and by tests of SQLite itself). A second backend adds its classes
and one entry to ``database._BACKENDS``, and passes the contract suites
(``tests/test_ledger.py``, ``tests/test_moderation_store.py``) by adding its URL to
``tests/ledger_support.py``.

Nothing is re-exported here: import from the module that defines a name, so the import
graph shows who depends on what.
"""
