"""The prompt filter: blocked words and regular expressions, matched the way people evade them.

Pure and synchronous; ``bot.moderation`` decides what a match means. Text and terms are first
*folded* the same way:

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

Regular expressions (admins' ``block add-pattern``) are searched, case-insensitively, in the
prompt as typed and in its folded form. Python's ``re`` has no timeout, so a pattern is
limited to ``MAX_PATTERN_LENGTH`` characters, may not repeat a group that itself repeats
(``(a+)+``, the classic catastrophic backtracking shape) or use back-references, and only
the first ``MAX_PATTERN_INPUT`` characters of a prompt are searched with patterns.
"""

from __future__ import annotations

import functools
import importlib.resources
import itertools
import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from bot.errors import InvalidRequestError

__all__ = [
    "BUILTIN_RESOURCE",
    "MAX_PATTERN_INPUT",
    "MAX_PATTERN_LENGTH",
    "MAX_TERM_LENGTH",
    "PromptFilter",
    "builtin_terms",
    "cached_filter",
    "check_term",
    "compile_pattern",
    "fold",
    "join_spelled_out",
]

log = logging.getLogger(__name__)

BUILTIN_RESOURCE = "data/blocked_words.txt"
MAX_TERM_LENGTH = 100
MAX_PATTERN_LENGTH = 200
MAX_PATTERN_INPUT = 2000

_SWAPS = str.maketrans({"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
# What a folded letter of a term also accepts in the text ("1" stands for i or l).
_LOOKALIKES = {"i": "[i1]", "l": "[l1]", "1": "[1il]"}
_WORD = re.compile(r"[^\W_]+")
_MAX_GAP = 3  # separator characters allowed between spelled-out letters


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
    return _LOOKALIKES.get(ch, re.escape(ch))


def _term_regex(term: str) -> re.Pattern[str] | None:
    words = _WORD.findall(fold(term))
    if not words:
        return None
    parts = []
    for word in words:
        runs = [(ch, len(list(group))) for ch, group in itertools.groupby(word)]
        # A run keeps its length as a minimum ("ass" needs two s), any letter may repeat.
        parts.append("".join(_letter(ch) + ("+" if n == 1 else f"{{{n},}}") for ch, n in runs))
    body = r"[\W_]+".join(parts)
    return re.compile(rf"(?<![^\W_]){body}(?:e?s)?(?![^\W_])")


def check_term(term: str) -> str:
    """A blocked term as stored: trimmed, single-spaced, lower case. ``InvalidRequestError``
    when it has no letters or digits or is too long."""
    cleaned = " ".join(term.split()).casefold()
    if not cleaned or not _WORD.search(fold(cleaned)):
        raise InvalidRequestError("a blocked word needs at least one letter or digit")
    if len(cleaned) > MAX_TERM_LENGTH:
        raise InvalidRequestError(f"a blocked word can be at most {MAX_TERM_LENGTH} characters")
    return cleaned


def _repeats_at(pattern: str, index: int) -> bool:
    """Whether a quantifier that can repeat (``*``, ``+``, ``{m,n}`` with n > 1) starts here."""
    if index >= len(pattern):
        return False
    if pattern[index] in "*+":
        return True
    counted = re.match(r"\{(\d*)(,?)(\d*)\}", pattern[index:])
    if counted is None:
        return False
    low, comma, high = counted.groups()
    if not comma:
        return int(low or "0") > 1
    return not high or int(high) > 1


def _check_backtracking(pattern: str) -> None:
    if re.search(r"\\[1-9]|\(\?P=", pattern):
        raise InvalidRequestError("a pattern cannot use back-references")
    stack = [False]  # per open group: does it contain a repeat?
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] == "^":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            while j < len(pattern) and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
            if _repeats_at(pattern, i):
                stack[-1] = True
            continue
        if ch == "(":
            stack.append(False)
        elif ch == ")" and len(stack) > 1:
            inner = stack.pop()
            if _repeats_at(pattern, i + 1):
                if inner:
                    raise InvalidRequestError(
                        "a pattern cannot repeat a group that repeats itself, like (a+)+"
                    )
                stack[-1] = True
            elif inner:
                stack[-1] = True
        elif _repeats_at(pattern, i):
            stack[-1] = True
        i += 1


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """An admin's regular expression, compiled case-insensitively, or ``InvalidRequestError``
    naming the problem (empty, too long, invalid, or prone to catastrophic backtracking)."""
    pattern = pattern.strip()
    if not pattern:
        raise InvalidRequestError("the pattern is empty")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidRequestError(f"a pattern can be at most {MAX_PATTERN_LENGTH} characters")
    _check_backtracking(pattern)
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise InvalidRequestError(f"that is not a valid regular expression ({exc.msg})") from None
    if compiled.search(""):
        raise InvalidRequestError("that pattern matches every prompt")
    return compiled


@functools.cache
def builtin_terms() -> tuple[str, ...]:
    """The built-in word list shipped inside the package (``bot/data/blocked_words.txt``)."""
    text = importlib.resources.files("bot").joinpath(BUILTIN_RESOURCE).read_text("utf-8")
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


@dataclass(frozen=True, slots=True)
class _Term:
    term: str
    regex: re.Pattern[str]


class PromptFilter:
    """Blocked ``terms`` and ``patterns``; ``match`` names the first rule that hits, as
    ``"<label>:<term>"`` or ``"pattern:<regex>"``. Patterns that do not compile (stored before
    a rule change) are skipped with a warning; use ``compile_pattern`` to vet new ones."""

    def __init__(
        self, terms: Iterable[str] = (), patterns: Iterable[str] = (), *, label: str = "term"
    ) -> None:
        self.label = label
        self._terms: list[_Term] = []
        for term in terms:
            regex = _term_regex(term)
            if regex is not None:
                self._terms.append(_Term(term, regex))
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        for pattern in patterns:
            try:
                self._patterns.append((pattern, compile_pattern(pattern)))
            except InvalidRequestError as exc:
                log.warning("skipping a stored blocked pattern: %s", exc.reason)

    def __len__(self) -> int:
        return len(self._terms) + len(self._patterns)

    def match(self, text: str) -> str | None:
        if not text or not (self._terms or self._patterns):
            return None
        folded = fold(text)
        forms = (folded, join_spelled_out(folded))
        for entry in self._terms:
            if any(entry.regex.search(form) for form in forms):
                return f"{self.label}:{entry.term}"
        head, folded_head = text[:MAX_PATTERN_INPUT], folded[:MAX_PATTERN_INPUT]
        for source, regex in self._patterns:
            if regex.search(head) or regex.search(folded_head):
                return f"pattern:{source}"
        return None


@functools.lru_cache(maxsize=256)
def cached_filter(terms: tuple[str, ...], patterns: tuple[str, ...]) -> PromptFilter:
    """A server's filter, compiled once per distinct rule set."""
    return PromptFilter(terms, patterns)
