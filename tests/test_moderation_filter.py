"""The prompt filter's table: what a server's blocked words catch (evasions included) and the
ordinary words that contain a blocked word and must never be refused; which patterns an admin
may add, and why the others are refused."""

from __future__ import annotations

import importlib.resources

import pytest

from bot.errors import InvalidRequestError
from bot.moderation.filter import (
    MAX_PATTERN_LENGTH,
    MAX_PATTERNS_SIZE,
    PromptFilter,
    builtin_terms,
    check_pattern,
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


def test_patterns_see_the_whole_prompt() -> None:
    f = PromptFilter(patterns=["forbidden"])
    assert f.match("x " * 2000 + "forbidden") == "pattern:forbidden"
    assert f.match("FORBIDDEN " + "x " * 2000) == "pattern:forbidden"


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("(?=a)b", "cannot look ahead or behind"),
        ("(?!x)y", "cannot look ahead or behind"),
        ("(?<=a)b", "cannot look ahead or behind"),
        ("(?<!x)y", "cannot look ahead or behind"),
        ("a*+b", "possessive"),
        ("x++y", "possessive"),
        ("(?>ab)c", "atomic groups"),
        (r"(a)\1", "back-references"),
        ("(?P<w>a)(?P=w)", "back-references"),
        ("(a)?(?(1)b|c)", "conditionals"),
        (r"end\Z", r"write \\z, not \\Z"),
        ("a{1001}", "too complex"),
        (r"\pL{3}", "too complex"),
        (".{0,1000}!", "too complex"),
        ("(unclosed", "not a valid regular expression"),
        ("(?x) a b", "not a valid regular expression"),
        (".*", "matches every prompt"),
        ("x?", "matches every prompt"),
        ("", "empty"),
        ("a" * (MAX_PATTERN_LENGTH + 1), "at most"),
    ],
)
def test_patterns_the_engine_cannot_run_are_refused_with_the_reason(
    pattern: str, problem: str
) -> None:
    with pytest.raises(InvalidRequestError, match=problem) as refused:
        compile_pattern(pattern)
    assert "\n" not in refused.value.reason


@pytest.mark.parametrize(
    "pattern",
    [
        r"(foo|bar)+",
        r"[(]+x",
        r"n[a@4]ked",
        r"(ab){2}c",
        r"x+y+",
        r"\bblood\s*bath\b",
        r"\pL+\d",
        # Shapes that backtrack for ever in Python's re are harmless in a linear-time engine.
        "(a+)+",
        "(a|a)*b",
        r"(.|\w)*!",
        "(a?){30}a{30}",
        "a*a*a*a*a*a*b",
    ],
)
def test_reasonable_patterns_are_accepted(pattern: str) -> None:
    assert compile_pattern(pattern).pattern == pattern
    assert check_pattern(f"  {pattern} ") == pattern


def test_a_servers_patterns_together_have_a_complexity_budget() -> None:
    # Each of these compiles to just under 2,000 steps of RE2 program: ten of them fit.
    stored: list[str] = []
    for prefix in ("ab", "cd", "ef", "gh", "ij", "kl", "mn", "op", "qr", "st"):
        stored.append(check_pattern(prefix + r"\w{0,220}!", stored))
    assert sum(compile_pattern(p).programsize for p in stored) <= MAX_PATTERNS_SIZE
    with pytest.raises(InvalidRequestError, match="together would be too complex"):
        check_pattern(r"uv\w{0,220}!", stored)
    assert check_pattern("blood", stored) == "blood"  # a small one still fits


def test_stored_patterns_that_cannot_compile_are_skipped_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Python's re accepted look-arounds, so a database may hold some.
    patterns = ["(?<!good )dragon", "wyrm"]
    first, second = PromptFilter(patterns=patterns), PromptFilter(patterns=patterns)
    for f in (first, second):
        assert f.match("a bad dragon") is None
        assert f.match("a wyrm") == "pattern:wyrm"
    warnings = [r for r in caplog.records if "(?<!good )dragon" in r.getMessage()]
    assert [r.levelname for r in warnings] == ["WARNING"]
    assert "look ahead or behind" in warnings[0].getMessage()


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
