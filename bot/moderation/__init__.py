"""Moderation: the prompt filter (words and RE2 patterns), the endpoint client, screening
before any quota hold, reviews of refusals, and the admins' rules.

Nothing is re-exported here: import from the module that defines a name.
"""
