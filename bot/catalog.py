"""The model catalog: the built-in models, plus those a ``MODELS_FILE`` (TOML) adds or overrides.

A file looks like::

    [[models]]
    id = "openai/dall-e-3"          # required; an existing id overrides that model's fields
    label = "DALL-E 3"
    aliases = ["dalle3"]
    sizes = ["1024x1024", "1792x1024", "1024x1792"]
    max_n = 1
    price = 0.04                    # USD per image at 1024x1024
    size_prices = { "1792x1024" = 0.08, "1024x1792" = 0.08 }
    supports_seed = false
    supports_negative_prompt = false
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from bot.errors import ConfigError, UnknownModelError
from bot.models import ModelSpec
from bot.money import usd_to_micros

__all__ = ["BUILTIN_MODELS", "ModelCatalog", "load_catalog"]

log = logging.getLogger(__name__)

_STANDARD_SIZES = ("1024x1024", "1024x1792", "1792x1024", "2048x2048")
_SIZE_RE = re.compile(r"^[1-9][0-9]{1,4}x[1-9][0-9]{1,4}$")
_MAX_N = 10

BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="black-forest-labs/flux-1-schnell",
        label="FLUX.1 [schnell]",
        aliases=("flux", "schnell"),
        sizes=_STANDARD_SIZES,
        max_n=4,
        price_micros=3_000,
    ),
    ModelSpec(
        id="stability/sdxl",
        label="Stable Diffusion XL",
        aliases=("sdxl",),
        sizes=_STANDARD_SIZES,
        max_n=4,
        price_micros=2_000,
    ),
    ModelSpec(
        id="google/imagen-4-ultra",
        label="Imagen 4 Ultra",
        aliases=("imagen-ultra",),
        sizes=_STANDARD_SIZES,
        max_n=4,
        price_micros=13_000,
        supports_negative_prompt=False,
    ),
    ModelSpec(
        id="google/imagen-4-fast",
        label="Imagen 4 Fast",
        aliases=("imagen-fast",),
        sizes=_STANDARD_SIZES,
        max_n=4,
        price_micros=4_000,
        supports_negative_prompt=False,
    ),
)


class ModelCatalog:
    """Looks models up by id or alias, case-insensitively (``find``; the parser turns a name
    it cannot find into ``UnknownModelError``), or by exact id (``get``). Labels are for
    display only: two models may share one."""

    def __init__(self, models: Iterable[ModelSpec], *, default: str | None = None) -> None:
        self._models: dict[str, ModelSpec] = {}
        for spec in models:
            self._models[spec.id] = spec
        if not self._models:
            raise ConfigError("the model catalog is empty")
        self._index: dict[str, ModelSpec] = {}
        for spec in self._models.values():
            for key in (spec.id, *spec.aliases):
                self._index[key.casefold()] = spec
        first = next(iter(self._models.values()))
        if default is None:
            self._default = first
        else:
            found = self._index.get(default.casefold())
            if found is None:
                raise ConfigError(
                    f"DEFAULT_MODEL={default!r} is not in the catalog; "
                    f"choose {', '.join(self.names())}"
                )
            self._default = found

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    @property
    def default(self) -> ModelSpec:
        return self._default

    def names(self) -> list[str]:
        """The shortest name of each model, as offered to users."""
        return [spec.short_name for spec in self._models.values()]

    def find(self, name: str) -> ModelSpec | None:
        return self._index.get(name.strip().casefold())

    def get(self, model_id: str) -> ModelSpec:
        """The model with this exact id; for ids already validated (e.g. read from the ledger)."""
        try:
            return self._models[model_id]
        except KeyError:
            raise UnknownModelError(model_id, self.names()) from None


def load_catalog(models_file: Path | None = None, *, default: str | None = None) -> ModelCatalog:
    """The built-in catalog, with the models of ``models_file`` added or overriding."""
    models = {spec.id: spec for spec in BUILTIN_MODELS}
    if models_file is not None:
        for spec in _read_models_file(models_file, models):
            models[spec.id] = spec
        _check_names(models_file, models.values())
        log.info("loaded %d model(s) from %s", len(models), models_file)
    return ModelCatalog(models.values(), default=default)


def _read_models_file(path: Path, existing: Mapping[str, ModelSpec]) -> list[ModelSpec]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"MODELS_FILE {path}: cannot read it ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"MODELS_FILE {path}: not UTF-8 text ({exc.reason})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"MODELS_FILE {path}: not valid TOML ({exc})") from exc
    entries = document.get("models")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"MODELS_FILE {path}: expected one or more [[models]] tables")
    specs: list[ModelSpec] = []
    for position, entry in enumerate(entries, start=1):
        name = entry.get("id") if isinstance(entry, dict) else None
        where = f"MODELS_FILE {path}, model {name or f'#{position}'}"
        if not isinstance(entry, dict) or not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: every model needs a non-empty string 'id'")
        if any(spec.id == name for spec in specs):
            raise ConfigError(f"{where}: this id is given twice in the file")
        try:
            specs.append(_spec_from_table(entry, existing.get(name)))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    return specs


def _check_names(path: Path, specs: Iterable[ModelSpec]) -> None:
    """Refuse a name (id or alias, case-insensitive) shared by two models: a lookup would
    silently pick one of them."""
    owners: dict[str, str] = {}
    for spec in specs:
        for key in dict.fromkeys(name.casefold() for name in (spec.id, *spec.aliases)):
            owner = owners.setdefault(key, spec.id)
            if owner != spec.id:
                raise ConfigError(
                    f"MODELS_FILE {path}, model {spec.id}: name {key!r} is already used by {owner}"
                )


_KNOWN_KEYS = {
    "id",
    "label",
    "aliases",
    "sizes",
    "max_n",
    "price",
    "size_prices",
    "supports_seed",
    "supports_negative_prompt",
}


def _spec_from_table(table: Mapping[str, Any], base: ModelSpec | None) -> ModelSpec:
    unknown = sorted(set(table) - _KNOWN_KEYS)
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KNOWN_KEYS))}"
        )
    if base is None:
        missing = [key for key in ("sizes", "price") if key not in table]
        if missing:
            raise ValueError(f"a new model needs {' and '.join(missing)}")
        base = ModelSpec(
            id=table["id"], label=table["id"], aliases=(), sizes=(), max_n=1, price_micros=0
        )
    changes: dict[str, Any] = {}
    if "label" in table:
        changes["label"] = _string(table["label"], "label")
    if "aliases" in table:
        aliases = table["aliases"]
        if not isinstance(aliases, list):
            raise ValueError("'aliases' must be a list of strings")
        changes["aliases"] = tuple(_string(a, "aliases") for a in aliases)
    if "sizes" in table:
        sizes = table["sizes"]
        if not isinstance(sizes, list) or not sizes:
            raise ValueError("'sizes' must be a non-empty list like [\"1024x1024\"]")
        for size in sizes:
            if not isinstance(size, str) or not _SIZE_RE.match(size):
                raise ValueError(f'size {size!r} is not WIDTHxHEIGHT, e.g. "1024x1024"')
        changes["sizes"] = tuple(sizes)
    if "max_n" in table:
        max_n = table["max_n"]
        if not isinstance(max_n, int) or isinstance(max_n, bool) or not 1 <= max_n <= _MAX_N:
            raise ValueError(f"'max_n' must be a whole number from 1 to {_MAX_N}")
        changes["max_n"] = max_n
    if "price" in table:
        changes["price_micros"] = usd_to_micros(table["price"])
    if "size_prices" in table:
        prices = table["size_prices"]
        if not isinstance(prices, dict):
            raise ValueError("'size_prices' must be a table of size = USD")
        changes["size_prices"] = tuple((str(s), usd_to_micros(p)) for s, p in prices.items())
    for flag in ("supports_seed", "supports_negative_prompt"):
        if flag in table:
            if not isinstance(table[flag], bool):
                raise ValueError(f"'{flag}' must be true or false")
            changes[flag] = table[flag]
    spec = replace(base, **changes)
    for size, _ in spec.size_prices:
        if size not in spec.sizes:
            raise ValueError(f"size_prices names {size}, which is not in sizes")
    return spec


def _string(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'{key}' must be a non-empty string")
    return value.strip()
