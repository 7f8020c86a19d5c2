"""The prompt filter's table: what a server's blocked words catch (evasions included) and the
ordinary words that contain a blocked word and must never be refused."""

from __future__ import annotations

import importlib.resources

import pytest

from bot.errors import InvalidRequestError
from bot.filter import (
    MAX_PATTERN_INPUT,
    MAX_PATTERN_LENGTH,
    PromptFilter,
    builtin_terms,
    check_term,
    compile_pattern,
    fold,
    join_spelled_out,
)

SERVER_WORDS = (
    "ass",
    "cock",
    "cunt",
    "rape",
    "rapist",
    "sex",
    "nsfw",
    "nude",
    "tit",
    "loli",
    "child porn",
    "hell",
)

FILTER = PromptFilter(SERVER_WORDS)

# prompt -> the term it must hit
HITS = [
    ("nsfw", "nsfw"),
    ("NSFW art", "nsfw"),
    ("a n.s.f.w picture", "nsfw"),
    ("n-s-f-w", "nsfw"),
    ("n s f w please", "nsfw"),
    ("n_s_f_w", "nsfw"),
    ("n . s . f . w", "nsfw"),
    ("nuuuuude beach", "nude"),
    ("NNUUDDEE", "nude"),
    ("Nüde statue", "nude"),
    ("ｎｕｄｅ", "nude"),  # fullwidth letters
    ("nu\u200bde", "nude"),  # zero-width space
    ("nud3", "nude"),
    ("a nude", "nude"),
    ("nudes", "nude"),
    ("s3x", "sex"),
    ("$ex", "sex"),
    ("5ex", "sex"),
    ("S.E.X", "sex"),
    ("@ss", "ass"),
    ("a$$", "ass"),
    ("asses", "ass"),
    ("4ss", "ass"),
    ("r4pe", "rape"),
    ("r@pe", "rape"),
    ("rapists", "rapist"),
    ("7it", "tit"),
    ("l0l1", "loli"),
    ("1oli", "loli"),
    ("child porn", "child porn"),
    ("child   porn", "child porn"),
    ("child-porn", "child porn"),
    ("CHILD_PORN", "child porn"),
    ("c0ck", "cock"),
    ("what the hell", "hell"),
    ("a cat, nude!", "nude"),
]

# prompts that contain a blocked word inside an ordinary word
MISSES = [
    "Scunthorpe town hall",
    "a class photo",
    "an assassin in the rain",
    "assess the damage",
    "a passenger on a bass boat",
    "a cocktail party",
    "the cockpit of a plane",
    "peacock feathers",
    "a therapist's office",
    "grape harvest in Sussex",
    "Essex countryside",
    "drape the curtains",
    "a title card",
    "a tilt shift photo",
    "constitution day",
    "hello world",
    "shell on the beach",
    "Hellenic temple",
    "lollipop",
    "as you like it",
    "a red fox in snow",
    "a nudist",  # not the word "nude"
    "sextant on a ship",
    "intersexual",
]


@pytest.mark.parametrize(("prompt", "term"), HITS)
def test_blocked_words_are_caught_through_evasions(prompt: str, term: str) -> None:
    assert FILTER.match(prompt) == f"term:{term}"


@pytest.mark.parametrize("prompt", MISSES)
def test_ordinary_words_containing_a_blocked_word_pass(prompt: str) -> None:
    assert FILTER.match(prompt) is None


def test_folding_undoes_case_accents_and_lookalikes() -> None:
    assert fold("CAFÉ Ñ 0 3 4 5 7 @ $") == "cafe n o e a s t a s"
    assert join_spelled_out("n.s.f.w and x y z") == "nsfw and xyz"
    # Only single letters are joined: "to be" stays two words.
    assert join_spelled_out("to be or n o t") == "to be or not"


def test_doubled_letters_in_a_term_are_required() -> None:
    # "ass" needs two s: "as" is an ordinary word.
    assert PromptFilter(["ass"]).match("as good as new") is None
    assert PromptFilter(["ass"]).match("a sss") is None
    assert PromptFilter(["ass"]).match("asssss") == "term:ass"


def test_patterns_match_typed_and_folded_text() -> None:
    f = PromptFilter(patterns=[r"\bblood\s*bath\b", r"\d{3}-\d{4}"])
    assert f.match("a BLOOD BATH scene") == r"pattern:\bblood\s*bath\b"
    assert f.match("a bl00d bath") == r"pattern:\bblood\s*bath\b"  # folded form
    assert f.match("call 555-1234") == r"pattern:\d{3}-\d{4}"  # typed form keeps digits
    assert f.match("a bloody bathroom") is None


def test_patterns_see_only_the_start_of_a_long_prompt() -> None:
    f = PromptFilter(patterns=["forbidden"])
    assert f.match("x " * (MAX_PATTERN_INPUT // 2) + "forbidden") is None
    assert f.match("forbidden " + "x " * MAX_PATTERN_INPUT) == "pattern:forbidden"


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("(a+)+$", "repeat a group"),
        ("(x*y*)*z", "repeat a group"),
        ("((ab)+c)*", "repeat a group"),
        ("(?:\\w+\\s?)+", "repeat a group"),
        ("(a)\\1", "back-references"),
        ("(?P<w>a)(?P=w)", "back-references"),
        ("(unclosed", "not a valid regular expression"),
        (".*", "matches every prompt"),
        ("", "empty"),
        ("a" * (MAX_PATTERN_LENGTH + 1), "at most"),
    ],
)
def test_risky_or_invalid_patterns_are_refused(pattern: str, problem: str) -> None:
    with pytest.raises(InvalidRequestError, match=problem):
        compile_pattern(pattern)


@pytest.mark.parametrize("pattern", [r"(foo|bar)+", r"[(]+x", r"n[a@4]ked", r"(ab){2}c", r"x+y+"])
def test_reasonable_patterns_are_accepted(pattern: str) -> None:
    assert compile_pattern(pattern).pattern == pattern


def test_terms_are_trimmed_and_must_have_letters() -> None:
    assert check_term("  Child   PORN ") == "child porn"
    with pytest.raises(InvalidRequestError):
        check_term(" -- ")
    with pytest.raises(InvalidRequestError):
        check_term("x" * 101)


def test_the_builtin_list_ships_in_the_package_and_is_conservative() -> None:
    resource = importlib.resources.files("bot").joinpath("data/blocked_words.txt")
    assert resource.is_file()
    terms = builtin_terms()
    assert "nsfw" in terms and "loli" in terms
    assert 20 <= len(terms) <= 100
    builtin = PromptFilter(terms, label="builtin")
    assert builtin.match("N.S.F.W") == "builtin:nsfw"
    assert builtin.match("p0rn") == "builtin:porn"
    for prompt in [*MISSES, "a naked mole rat", "paint stripper", "rapeseed field"]:
        assert builtin.match(prompt) is None, prompt
