"""Who may do what to a job: one rule for every platform.

A member acts on their own jobs; an admin (``Requester.is_admin``, which each adapter computes
from its platform: Discord's Manage Server, Slack's listed or workspace admins) acts on any
job of their own workspace on their own platform, never on another's. The platform, the
workspace and the user id together name a member: the same user id in another workspace is
someone else.
"""

from __future__ import annotations

from bot.models import Requester

__all__ = ["may_act_on", "owns", "same_workspace"]


def same_workspace(actor: Requester, owner: Requester) -> bool:
    return (actor.platform, actor.workspace_id) == (owner.platform, owner.workspace_id)


def owns(actor: Requester, owner: Requester) -> bool:
    """``actor`` is the member who asked for the job ``owner`` asked for."""
    return same_workspace(actor, owner) and actor.user_id == owner.user_id


def may_act_on(actor: Requester, owner: Requester) -> bool:
    """Whether ``actor`` may cancel or remove a job (or its result) that ``owner`` asked for:
    their own, or any of their workspace's as its admin."""
    return owns(actor, owner) or (actor.is_admin and same_workspace(actor, owner))
