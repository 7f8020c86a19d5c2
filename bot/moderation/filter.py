"""The prompt filter: blocked words and regular expressions, matched the way people evade them.

Synchronous and CPU-bound: ``bot.moderation.screening`` runs ``PromptFilter.match`` on a
thread of its own and decides what a match means. Text and terms are first *folded* the same way:

1. case-folded, decomposed (NFKD) and stripped of combining marks and invisible format
   characters, so "NÜDE", "nude" and "nu\\u200bde" are the same word;
2. the common look-alike swaps are undone: ``0->o 3->e 4->a 5->s 7->t @->a $->s`` (``1`` may
   stand for ``i`` or ``l``, so a term's ``i`` and ``l`` also accept ``1``);
3. runs of single letters separated by punctuation or spaces are joined ("n.s.f.w",
   "n-s-f-w", "n s f w" -> "nsfw"); separators inside longer words are left alone, so
   ordinary text is never glued together.

A term then matches only as a **whole word** of the folded text (or its plural in -s/-es),
with any letter repeated ("nuuuude"), so words that merely contain a blocked word
("Scunthorpe", "class", "assassin", "grape", "Sussex", "therapist") never match. A term of
several words matches them with any separators in between.

Regular expressions (admins' ``block add /regex/``) are searched, case-insensitively, in the
prompt as typed and in its folded form.

Every expression here, the terms' own and the admins', runs on RE2 (``google-re2``), whose
matching time is linear in the length of the text, so no pattern can backtrack
catastrophically (Python's ``re`` took a second on ``(a|a)*b`` against 22 letters, twice as
long for every two more, and about 20 minutes on the term ``lil`` against 4,000 characters of
``1``; see BENCHMARKS.md). RE2 has no look-around, back-references, possessive repeats, atomic
groups or conditionals; ``compile_pattern`` refuses them with a one-line reason. RE2's time is
also proportional to the size of the compiled program (``a{1000}`` is a thousand steps), so a
pattern is at most ``MAX_PATTERN_LENGTH`` characters and ``MAX_PATTERN_SIZE`` program steps,
and a server's patterns together at most ``MAX_PATTERNS_SIZE``; ``MAX_CHECKED_LENGTH`` bounds
the text. RE2 releases the GIL while it searches and the folding is linear Python, so a check
on another thread leaves the event loop free.
"""

from __future__ import annotations

import functools
import importlib.resources
import itertools
import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import re2

from bot.errors import InvalidRequestError
from bot.messages import (
    PATTERN_BACKREFERENCE,
    PATTERN_CONDITIONAL,
    PATTERN_LOOKAROUND,
    PATTERN_POSSESSIVE,
    PATTERN_TOO_COMPLEX,
    PATTERN_UPPER_Z,
    PATTERNS_TOO_COMPLEX,
)

__all__ = [
    "BUILTIN_RESOURCE",
    "MAX_CHECKED_LENGTH",
    "MAX_PATTERNS_SIZE",
    "MAX_PATTERN_LENGTH",
    "MAX_PATTERN_SIZE",
    "MAX_TERM_LENGTH",
    "CompiledPattern",
    "PromptFilter",
    "builtin_terms",
    "cached_filter",
    "check_pattern",
    "check_term",
    "compile_pattern",
    "fold",
    "join_spelled_out",
]

log = logging.getLogger(__name__)

BUILTIN_RESOURCE = "data/blocked_words.txt"
MAX_TERM_LENGTH = 100
MAX_PATTERN_LENGTH = 200
MAX_PATTERN_SIZE = 2_000
"""RE2 program steps one pattern may compile to (``\\pL`` alone is about 1,200)."""
MAX_PATTERNS_SIZE = 20_000
"""RE2 program steps a server's patterns may compile to together."""
MAX_CHECKED_LENGTH = 16_000
"""Longest text ``match`` accepts (the parser's own limit, MAX_PROMPT_LENGTH, is 4,000 by
default); ``bot.moderation.screening`` refuses longer prompts before checking them."""

_SWAPS = str.maketrans({"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
# What a folded letter of a term also accepts in the text ("1" stands for i or l).
_LOOKALIKES = {"i": "[i1]", "l": "[l1]", "1": "[1il]"}
# Python's ``re`` only splits text into words here: one character class cannot backtrack.
_WORD = re.compile(r"[^\W_]+")
_MAX_GAP = 3  # separator characters allowed between spelled-out letters
# A compiled program is capped at this much memory (RE2's default is 8 MiB) so that hundreds
# of patterns cannot hold gigabytes of matching state; searches stay linear either way.
_MAX_MEM = 1 << 20


class CompiledPattern(Protocol):
    """The part of a compiled RE2 expression the filter uses."""

    @property
    def pattern(self) -> str: ...

    @property
    def programsize(self) -> int: ...

    def search(self, text: bytes) -> object | None: ...


def _options(*, case_sensitive: bool) -> re2.Options:
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.max_mem = _MAX_MEM
    options.log_errors = False  # RE2 would print the pattern to stderr
    return options


_TERM_OPTIONS = _options(case_sensitive=True)  # terms see folded (case-folded) text only
_PATTERN_OPTIONS = _options(case_sensitive=False)


def fold(text: str) -> str:
    """Case, accents, invisible characters and look-alike swaps folded away."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    kept = "".join(
        ch
        for ch in decomposed
        if not unicodedata.combining(ch) and unicodedata.category(ch) != "Cf"
    )
    return kept.translate(_SWAPS)


def join_spelled_out(text: str) -> str:
    """Join runs of single letters split by one kind of separator: ``"a n.s.f.w pic"`` ->
    ``"a nsfw pic"``. Words of two letters or more are never joined to anything."""
    tokens = list(_WORD.finditer(text))

    def gap(k: int) -> str | None:
        """The separator between token k and k + 1 when both are single letters."""
        if k + 1 >= len(tokens) or len(tokens[k].group()) != 1:
            return None
        if len(tokens[k + 1].group()) != 1:
            return None
        between = text[tokens[k].end() : tokens[k + 1].start()]
        return between if len(between) <= _MAX_GAP else None

    out: list[str] = []
    last = 0
    i = 0
    while i < len(tokens):
        first = gap(i)
        # A letter whose separator differs from the run that follows it stays on its own.
        if first is not None and gap(i + 1) not in (None, first):
            first = None
        j = i
        while first is not None and gap(j) == first:
            j += 1
        if j > i:
            out.append(text[last : tokens[i].start()])
            out.append("".join(t.group() for t in tokens[i : j + 1]))
            last = tokens[j].end()
        i = j + 1
    out.append(text[last:])
    return "".join(out)


def _letter(ch: str) -> str:
    return _LOOKALIKES.get(ch, ch)  # ``ch`` is a letter or digit: nothing to escape


@functools.lru_cache(maxsize=4096)
def _term_regex(term: str) -> CompiledPattern | None:
    words = _WORD.findall(fold(term))
    if not words:
        return None
    parts = []
    for word in words:
        runs = [(ch, len(list(group))) for ch, group in itertools.groupby(word)]
        # A run keeps its length as a minimum ("ass" needs two s), any letter may repeat.
        parts.append("".join(_letter(ch) + ("+" if n == 1 else f"{{{n},}}") for ch, n in runs))
    # Terms search the text's words joined by single spaces (``_words``), so a space stands
    # for any run of separators. RE2 has no look-around: the word edges are consumed instead,
    # which changes nothing when the only question is whether there is a match.
    body = " ".join(parts)
    compiled: CompiledPattern = re2.compile(f"(?:^| ){body}(?:e?s)?(?: |$)", _TERM_OPTIONS)
    return compiled


def check_term(term: str) -> str:
    """A blocked term as stored: trimmed, single-spaced, lower case. ``InvalidRequestError``
    when it has no letters or digits or is too long."""
    cleaned = " ".join(term.split()).casefold()
    if len(cleaned) > MAX_TERM_LENGTH:
        raise InvalidRequestError(f"a blocked word can be at most {MAX_TERM_LENGTH} characters")
    if not cleaned or not _WORD.search(fold(cleaned)):
        raise InvalidRequestError("a blocked word needs at least one letter or digit")
    return cleaned


def _rejection(pattern: str, error: re2.error) -> str:
    """One line saying why RE2 would not compile ``pattern``."""
    raw = error.args[0] if error.args else ""
    message = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    operator = message.removeprefix("invalid perl operator: ")
    if operator != message and operator.startswith(("(?=", "(?!", "(?<=", "(?<!")):
        return PATTERN_LOOKAROUND
    if operator.startswith("(?>"):
        return PATTERN_POSSESSIVE  # an atomic group
    if message.startswith("bad repetition operator: ") and message.endswith("+"):
        return PATTERN_POSSESSIVE  # a*+, a++, a?+, a{2}+
    if operator.startswith("(?("):
        return PATTERN_CONDITIONAL
    if re.fullmatch(r"invalid escape sequence: \\[1-9gk]", message) or (
        operator == "(?P" and "(?P=" in pattern
    ):
        return PATTERN_BACKREFERENCE  # \1, \g<1>, \k<name>, (?P=name)
    if message == "invalid escape sequence: \\Z":
        return PATTERN_UPPER_Z
    if message.startswith(("pattern too large", "invalid repetition size")):
        return PATTERN_TOO_COMPLEX
    return f"that is not a valid regular expression ({message or 'RE2 refused it'})"


def compile_pattern(pattern: str) -> CompiledPattern:
    """An admin's regular expression, compiled case-insensitively with RE2, or
    ``InvalidRequestError`` naming the problem: empty, too long, something RE2 does not
    have (look-around, back-references, possessive repeats, atomic groups, conditionals),
    too complex, invalid, or matching every prompt. Compiling can take tens of milliseconds:
    call it off the event loop."""
    pattern = pattern.strip()
    if not pattern:
        raise InvalidRequestError("the pattern is empty")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidRequestError(f"a pattern can be at most {MAX_PATTERN_LENGTH} characters")
    try:
        compiled: CompiledPattern = re2.compile(pattern, _PATTERN_OPTIONS)
    except re2.error as exc:
        raise InvalidRequestError(_rejection(pattern, exc)) from None
    if compiled.programsize > MAX_PATTERN_SIZE:
        raise InvalidRequestError(PATTERN_TOO_COMPLEX)
    if compiled.search(b""):
        raise InvalidRequestError("that pattern matches every prompt")
    return compiled


@functools.lru_cache(maxsize=4096)
def _stored_pattern(pattern: str) -> CompiledPattern | None:
    """A pattern from the database, or ``None`` (warned about once) when it no longer
    compiles: it may predate RE2 (a look-ahead was fine for Python's ``re``)."""
    try:
        return compile_pattern(pattern)
    except InvalidRequestError as exc:
        log.warning("skipping the stored blocked pattern %r: %s", pattern, exc.reason)
        return None


def check_pattern(pattern: str, existing: Sequence[str] = ()) -> str:
    """A new pattern as stored (trimmed), vetted by ``compile_pattern`` and against the
    server's ``existing`` patterns: together they must fit in ``MAX_PATTERNS_SIZE``. Runs
    RE2's compiler: call it off the event loop."""
    compiled = compile_pattern(pattern)
    others = (_stored_pattern(p) for p in existing if p != compiled.pattern)
    used = sum(c.programsize for c in others if c is not None)
    if used + compiled.programsize > MAX_PATTERNS_SIZE:
        raise InvalidRequestError(PATTERNS_TOO_COMPLEX)
    return compiled.pattern


@functools.cache
def builtin_terms() -> tuple[str, ...]:
    """The built-in word list shipped inside the package (``bot/data/blocked_words.txt``)."""
    text = importlib.resources.files("bot").joinpath(BUILTIN_RESOURCE).read_text("utf-8")
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


@dataclass(frozen=True, slots=True)
class _Rule:
    source: str
    regex: CompiledPattern


class PromptFilter:
    """Blocked ``terms`` and ``patterns``; ``match`` names the first rule that hits, as
    ``"<label>:<term>"`` or ``"pattern:<regex>"``. Stored patterns that do not compile (kept
    from before a rule change) are skipped with one warning each, and so are those beyond
    ``MAX_PATTERNS_SIZE``; use ``check_pattern`` to vet new ones. Building one compiles every
    rule: do it off the event loop (``cached_filter``)."""

    def __init__(
        self, terms: Iterable[str] = (), patterns: Iterable[str] = (), *, label: str = "term"
    ) -> None:
        self.label = label
        self._terms: list[_Rule] = []
        for term in terms:
            regex = _term_regex(term)
            if regex is not None:
                self._terms.append(_Rule(term, regex))
        self._patterns: list[_Rule] = []
        size = 0
        for pattern in patterns:
            compiled = _stored_pattern(pattern)
            if compiled is None:
                continue
            if size + compiled.programsize > MAX_PATTERNS_SIZE:
                log.warning(
                    "skipping the stored blocked pattern %r: %s", pattern, PATTERNS_TOO_COMPLEX
                )
                continue
            size += compiled.programsize
            self._patterns.append(_Rule(pattern, compiled))

    def __len__(self) -> int:
        return len(self._terms) + len(self._patterns)

    def match(self, text: str) -> str | None:
        """The first rule ``text`` hits, or ``None``. CPU-bound (a few milliseconds for a few
        thousand characters and hundreds of rules): run it in a worker thread. ``text`` may
        be at most ``MAX_CHECKED_LENGTH`` characters (``ValueError``)."""
        if len(text) > MAX_CHECKED_LENGTH:
            raise ValueError(f"text of {len(text)} characters; at most {MAX_CHECKED_LENGTH}")
        if not text or not (self._terms or self._patterns):
            return None
        folded = fold(text)
        if self._terms:
            words = _words(folded)
            joined = _words(join_spelled_out(folded))
            forms = (words,) if joined == words else (words, joined)
            for rule in self._terms:
                if any(rule.regex.search(form) for form in forms):
                    return f"{self.label}:{rule.source}"
        if self._patterns:
            typed = (_utf8(text), _utf8(folded))
            for rule in self._patterns:
                if any(rule.regex.search(form) for form in typed):
                    return f"pattern:{rule.source}"
        return None


def _words(text: str) -> bytes:
    """The words of ``text`` (letters and digits) joined by single spaces, for the terms."""
    return _utf8(" ".join(_WORD.findall(text)))


def _utf8(text: str) -> bytes:
    # RE2 searches UTF-8; searching bytes spares its wrapper re-encoding the text per rule.
    # "replace": a lone surrogate (valid JSON, invalid UTF-8) must not break the check.
    return text.encode("utf-8", "replace")


@functools.lru_cache(maxsize=256)
def cached_filter(terms: tuple[str, ...], patterns: tuple[str, ...]) -> PromptFilter:
    """A server's filter, compiled once per distinct rule set (in the caller's thread)."""
    return PromptFilter(terms, patterns)
