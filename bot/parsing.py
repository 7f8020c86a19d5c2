"""The one text grammar shared by Slack, the shell and flags typed into a Discord prompt::

    <prompt> [--model M] [--size WxH | --ar W:H] [--n N] [--seed S] [--no NEGATIVE]

Rules, in the order they apply:

- Whitespace (tabs, newlines, NBSP, ...) counts as a plain space and runs of it collapse to
  one; other control characters are dropped. The prompt is otherwise kept as typed, but one
  made only of invisible characters (zero-width spaces, joiners, combining marks) is empty.
- A flag is a word starting with ``--`` and a letter (``--AR`` = ``--ar``), or with the em/en
  dash that phones and Slack substitute for ``--`` (``—ar 16:9``). A dash-word whose name is
  not a flag (``—Einstein``) stays prompt text; a ``--`` word with an unknown name is an error.
  ``--aspect`` is accepted for ``--ar``.
- A flag takes its value as ``--flag value`` or ``--flag=value``; flags may appear anywhere.
  Every word that is neither a flag nor a flag's value is prompt text.
- A value may be wrapped in double quotes, straight or curly (``--no "text, watermark"``); the
  quotes are removed and the prompt may go on after the closing quote. Single quotes are
  apostrophes and never quote anything.
- An unquoted ``--no`` takes every word up to the next flag or the end (Midjourney style:
  ``--no text watermark``); every other unquoted value is one word.
- ``--size`` accepts ``1024x1024``, ``1024X1024``, ``1024*1024`` and ``1024×1024``. ``--ar W:H``
  picks the model's size whose aspect ratio is nearest on a log scale (ties: the smaller area).
  With neither, the model's first listed size is used.

Structured ``RequestOptions`` (Discord's slash-command options) merge with the flags: a value
given in both places must agree. Every mistake raises ``InvalidRequestError`` (an unknown model,
its subclass ``UnknownModelError``) with one short line naming what was wrong and what is
allowed. The parser is a pure function: no I/O.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from bot.catalog import ModelCatalog
from bot.errors import InvalidRequestError, UnknownModelError
from bot.models import GenerationRequest, ModelSpec, parse_size

__all__ = ["MAX_SEED", "RequestOptions", "parse_request"]

log = logging.getLogger(__name__)

MAX_SEED = 2**32 - 1

_FLAGS = ("model", "size", "ar", "n", "seed", "no")
_FLAG_NAMES = {**{name: name for name in _FLAGS}, "aspect": "ar"}
_FLAG_LIST = ", ".join(f"--{name}" for name in _FLAGS)
_EXAMPLES = {
    "size": "--size 1024x1024",
    "ar": "--ar 16:9",
    "n": "--n 2",
    "seed": "--seed 42",
    "no": '--no "text, watermark"',
}
_FLAG_RE = re.compile(r"(--|[\u2013\u2014]-?)([A-Za-z][A-Za-z0-9_-]*)")
_QUOTES = frozenset('"\u201c\u201d\u201e')
_SIZE_RE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")
_RATIO_RE = re.compile(r"([0-9]{1,5}(?:\.[0-9]{1,4})?):([0-9]{1,5}(?:\.[0-9]{1,4})?)")
_MAX_SHOWN = 40

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """Structured options (Discord slash-command options), merged with flags in the text."""

    model: str | None = None
    size: str | None = None
    n: int | None = None
    seed: int | None = None
    negative: str | None = None


def parse_request(
    text: str,
    *,
    catalog: ModelCatalog,
    options: RequestOptions | None = None,
    max_prompt_length: int = 4000,
) -> GenerationRequest:
    """The request typed as ``text``, with ``options`` merged in (see the module docstring).

    Raises ``InvalidRequestError`` (or ``UnknownModelError``) with a one-line reason.
    """
    opts = options or RequestOptions()
    words, flags = _scan(_clean(text), catalog)
    prompt = " ".join(words)
    if not _visible(prompt):
        raise InvalidRequestError(
            "the prompt is empty; describe the image, e.g. a red fox in snow --ar 16:9"
        )
    if len(prompt) > max_prompt_length:
        raise InvalidRequestError(
            f"the prompt is {len(prompt)} characters; the limit is {max_prompt_length}"
        )
    spec = (
        _merge(
            "model",
            _resolve_model(catalog, flags.get("model")),
            _resolve_model(catalog, _option_text(opts.model)),
            lambda s: s.short_name,
        )
        or catalog.default
    )
    size = (
        _merge("size", _text_size(spec, flags), _option_size(spec, _option_text(opts.size)), str)
        or spec.sizes[0]
    )
    n = _merge("n", _text_n(spec, flags.get("n")), _option_n(spec, opts.n), str) or 1
    seed = _merge("seed", _text_seed(flags.get("seed")), _option_seed(opts.seed), str)
    typed_negative = flags.get("no")
    if typed_negative is not None and not _visible(typed_negative):
        typed_negative = None
    negative = _merge("negative prompt", typed_negative, _option_text(opts.negative), None)
    if negative is not None:
        _check_negative(catalog, spec, negative, max_prompt_length)
    return GenerationRequest(
        prompt=prompt, model=spec.id, size=size, n=n, seed=seed, negative_prompt=negative
    )


# -- text -> words and flag values ---------------------------------------------------------


def _clean(text: str) -> str:
    """Whitespace becomes a space; other control characters and lone surrogates go."""
    out: list[str] = []
    for ch in text:
        if ch.isspace():
            out.append(" ")
        elif unicodedata.category(ch) not in ("Cc", "Cs"):
            out.append(ch)
    return "".join(out)


# Format characters (zero-width space and joiner, BOM), marks and separators draw nothing by
# themselves; joiners stay inside a prompt (emoji sequences, Persian) but cannot be one.
_INVISIBLE = frozenset({"Cf", "Cc", "Cs", "Co", "Cn", "Mn", "Me", "Zs", "Zl", "Zp"})


def _visible(text: str) -> bool:
    return any(unicodedata.category(ch) not in _INVISIBLE for ch in text)


def _scan(s: str, catalog: ModelCatalog) -> tuple[list[str], dict[str, str]]:
    """Split ``s`` into prompt words and ``{flag: value}``."""
    words: list[str] = []
    flags: dict[str, str] = {}
    end = len(s)
    i = _skip_spaces(s, 0)
    while i < end:
        j = _word_end(s, i)
        word = s[i:j]
        flag = _flag(word)
        if flag is None:
            words.append(word)
            i = _skip_spaces(s, j)
            continue
        name, shown = flag
        if name is None:
            raise InvalidRequestError(f"unknown flag {_clip(shown)}; use {_FLAG_LIST}")
        if name in flags:
            raise InvalidRequestError(f"--{name} given twice; give each flag once")
        if {name, *flags} >= {"size", "ar"}:
            raise InvalidRequestError("--size and --ar both given; use one of them")
        equals = word.find("=")
        if equals >= 0:
            start = i + equals + 1
            if start >= j:
                raise _missing(name, catalog)
        else:
            start = _skip_spaces(s, j)
            if start >= end or _flag(s[start : _word_end(s, start)]) is not None:
                raise _missing(name, catalog)
        value, i = _read_value(s, start, name)
        if not value:
            raise _missing(name, catalog)
        flags[name] = value
        i = _skip_spaces(s, i)
    return words, flags


def _skip_spaces(s: str, i: int) -> int:
    while i < len(s) and s[i] == " ":
        i += 1
    return i


def _word_end(s: str, i: int) -> int:
    j = s.find(" ", i)
    return len(s) if j < 0 else j


def _flag(word: str) -> tuple[str | None, str] | None:
    """``None`` when ``word`` is prompt text, else (canonical name or ``None`` if unknown,
    the flag as typed)."""
    match = _FLAG_RE.match(word)
    if match is None:
        return None
    dash, name = match.groups()
    rest = word[match.end() :]
    known = _FLAG_NAMES.get(name.lower()) if rest == "" or rest.startswith("=") else None
    if known is None and dash in ("\u2013", "\u2014"):
        return None  # "—Einstein": a dash in the prose, not a flag
    return known, word.partition("=")[0]


def _read_value(s: str, start: int, name: str) -> tuple[str, int]:
    """The value starting at ``s[start]`` and the index just after it."""
    if s[start] in _QUOTES:
        close = next((k for k in range(start + 1, len(s)) if s[k] in _QUOTES), -1)
        if close < 0:
            raise InvalidRequestError(
                f"--{name} has an unclosed quote; close it, e.g. {_example(name)}"
            )
        return " ".join(s[start + 1 : close].split()), close + 1
    end = _word_end(s, start)
    if name != "no":
        return s[start:end], end
    # Unquoted --no: every word up to the next flag.
    while True:
        following = _skip_spaces(s, end)
        if following >= len(s) or _flag(s[following : _word_end(s, following)]) is not None:
            return " ".join(s[start:end].split()), end
        end = _word_end(s, following)


def _missing(name: str, catalog: ModelCatalog) -> InvalidRequestError:
    if name == "model":
        return InvalidRequestError(f"--model needs a value; choose {', '.join(catalog.names())}")
    return InvalidRequestError(f"--{name} needs a value, e.g. {_example(name)}")


def _example(name: str) -> str:
    return _EXAMPLES.get(name, f"--{name} VALUE")


# -- values -> a validated request --------------------------------------------------------


def _merge(
    what: str, typed: _T | None, option: _T | None, show: Callable[[_T], str] | None
) -> _T | None:
    """The value given in the text or the options; both is fine only when they agree."""
    if typed is None:
        return option
    if option is not None and option != typed:
        if show is None:
            raise InvalidRequestError(f"{what} given twice, differently; give it once")
        raise InvalidRequestError(
            f"{what} given twice ({_clip(show(option))} and {_clip(show(typed))}); give it once"
        )
    return typed


def _option_text(value: str | None) -> str | None:
    """An option's text, cleaned like the prompt; blank counts as not given."""
    if value is None:
        return None
    cleaned = " ".join(_clean(value).split())
    return cleaned if _visible(cleaned) else None


def _resolve_model(catalog: ModelCatalog, name: str | None) -> ModelSpec | None:
    if name is None:
        return None
    spec = catalog.find(name)
    if spec is None:
        raise UnknownModelError(_clip(name), catalog.names())
    return spec


def _text_size(spec: ModelSpec, flags: dict[str, str]) -> str | None:
    if "size" in flags:
        return _size(spec, flags["size"])
    if "ar" in flags:
        return _nearest_size(spec, flags["ar"])
    return None


def _option_size(spec: ModelSpec, value: str | None) -> str | None:
    if value is None:
        return None
    return _nearest_size(spec, value) if ":" in value else _size(spec, value)


def _size(spec: ModelSpec, value: str) -> str:
    compact = "".join(value.split()).lower().replace("*", "x").replace("\u00d7", "x")
    match = _SIZE_RE.fullmatch(compact)
    size = f"{int(match[1])}x{int(match[2])}" if match else value.strip()
    if size not in spec.sizes:
        raise InvalidRequestError(
            f"size {_clip(size)} is not offered by {spec.short_name}; "
            f"choose {', '.join(spec.sizes)}"
        )
    return size


def _nearest_size(spec: ModelSpec, value: str) -> str:
    match = _RATIO_RE.fullmatch("".join(value.split()))
    width, height = (float(match[1]), float(match[2])) if match else (0.0, 0.0)
    if width <= 0 or height <= 0:
        raise InvalidRequestError(
            f"aspect ratio {_clip(value.strip())} is not W:H with positive numbers, "
            "e.g. --ar 16:9, 1:1 or 9:16"
        )
    wanted = math.log(width / height)

    def distance(size: str) -> tuple[float, int]:
        w, h = parse_size(size)
        return round(abs(math.log(w / h) - wanted), 9), w * h

    return min(spec.sizes, key=distance)


def _text_n(spec: ModelSpec, value: str | None) -> int | None:
    if value is None:
        return None
    return _n(spec, int(value) if value.isascii() and value.isdigit() and len(value) < 4 else 0)


def _option_n(spec: ModelSpec, value: int | None) -> int | None:
    return None if value is None else _n(spec, value)


def _n(spec: ModelSpec, n: int) -> int:
    if not 1 <= n <= spec.max_n:
        allowed = "1" if spec.max_n == 1 else f"1-{spec.max_n}"
        raise InvalidRequestError(f"n must be {allowed} for {spec.short_name}")
    return n


def _text_seed(value: str | None) -> int | None:
    if value is None:
        return None
    ok = value.isascii() and value.isdigit() and len(value) <= len(str(MAX_SEED))
    return _seed(int(value) if ok else -1)


def _option_seed(value: int | None) -> int | None:
    return None if value is None else _seed(value)


def _seed(seed: int) -> int:
    if not 0 <= seed <= MAX_SEED:
        raise InvalidRequestError(f"seed must be a whole number from 0 to {MAX_SEED}")
    return seed


def _check_negative(catalog: ModelCatalog, spec: ModelSpec, negative: str, max_length: int) -> None:
    if not spec.supports_negative_prompt:
        takers = [m.short_name for m in catalog if m.supports_negative_prompt]
        which = f"models that do: {', '.join(takers)}" if takers else "no model here does"
        raise InvalidRequestError(
            f"{spec.short_name} does not take a negative prompt (--no); {which}"
        )
    if len(negative) > max_length:
        raise InvalidRequestError(
            f"the --no text is {len(negative)} characters; the limit is {max_length}"
        )


def _clip(value: str) -> str:
    return value if len(value) <= _MAX_SHOWN else value[: _MAX_SHOWN - 1] + "\u2026"
