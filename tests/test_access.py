"""Who may cancel a job or remove its result: the member who asked, or an admin of the same
workspace on the same platform, and nobody else."""

from __future__ import annotations

from dataclasses import replace

from bot.access import may_act_on
from bot.models import Requester

OWNER = Requester(platform="discord", workspace_id="G1", channel_id="C1", user_id="U1")


def test_the_member_who_asked_may() -> None:
    assert may_act_on(OWNER, OWNER)


def test_another_member_may_not() -> None:
    assert not may_act_on(replace(OWNER, user_id="U2"), OWNER)


def test_an_admin_of_the_same_workspace_may() -> None:
    assert may_act_on(replace(OWNER, user_id="U2", is_admin=True), OWNER)


def test_an_admin_elsewhere_may_not() -> None:
    assert not may_act_on(replace(OWNER, workspace_id="G2", user_id="U2", is_admin=True), OWNER)
    assert not may_act_on(replace(OWNER, platform="slack", user_id="U2", is_admin=True), OWNER)


def test_the_same_user_id_in_another_workspace_is_someone_else() -> None:
    assert not may_act_on(replace(OWNER, workspace_id="G2"), OWNER)
