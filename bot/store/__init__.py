"""Storage: the database connection, schema and migrations, row encoding, the quota ledger,
the moderation store and job leases. Callers depend on the protocols (``ledger.Ledger``,
``moderation.ModerationStore``), so a second backend fills the same seams.

Nothing is re-exported here: import from the module that defines a name, so the import
graph shows who depends on what.
"""
