"""Event keys never collide across origins, and stay as they were stored before."""

from __future__ import annotations

from bot.event_key import again, platform_event, review_run


def test_keys_of_different_origins_differ() -> None:
    keys = {
        platform_event("discord", "123"),
        platform_event("slack", "123"),
        review_run("123"),
        again(platform_event("discord", "123")),
    }
    assert len(keys) == 4


def test_stored_spellings_are_kept() -> None:
    assert platform_event("discord", "1180000000000000001") == "1180000000000000001"
    assert platform_event("slack", "Ev01") == "slack:Ev01"
    assert review_run("r1") == "review:r1"
    assert again("slack:Ev01") == "slack:Ev01#again"
