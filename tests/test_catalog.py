"""The model catalog: built-in models and prices, MODELS_FILE overrides, and start-up errors."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from bot.catalog import BUILTIN_MODELS, ModelCatalog, load_catalog
from bot.errors import ConfigError, UnknownModelError
from bot.models import ModelSpec
from bot.money import usd_to_micros
from bot.parsing import parse_request

FLUX = "black-forest-labs/flux-1-schnell"
SIZES = ("1024x1024", "1024x1792", "1792x1024", "2048x2048")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def named(catalog: ModelCatalog, name: str) -> ModelSpec:
    """The model ``name`` finds (an id or an alias, any case)."""
    spec = catalog.find(name)
    assert spec is not None, name
    return spec


def test_builtin_models_and_prices() -> None:
    catalog = load_catalog()
    got = {
        spec.id: (spec.short_name, spec.price_micros, spec.sizes, spec.max_n) for spec in catalog
    }
    assert got == {
        FLUX: ("flux", 3_000, SIZES, 4),
        "stability/sdxl": ("sdxl", 2_000, SIZES, 4),
        "google/imagen-4-ultra": ("imagen-ultra", 13_000, SIZES, 4),
        "google/imagen-4-fast": ("imagen-fast", 4_000, SIZES, 4),
    }
    assert catalog.default.id == FLUX
    assert catalog.names() == ["flux", "sdxl", "imagen-ultra", "imagen-fast"]


def test_prices_scale_by_megapixels() -> None:
    flux = load_catalog().get(FLUX)
    assert flux.image_price_micros("1024x1024") == 3_000
    assert flux.image_price_micros("2048x2048") == 12_000  # 4 megapixels = 4x
    assert flux.image_price_micros("1792x1024") == 5_250
    assert flux.job_price_micros("2048x2048", 3) == 36_000


@pytest.mark.parametrize(
    ("name", "model_id"),
    [
        ("flux", FLUX),
        ("schnell", FLUX),
        ("FLUX", FLUX),
        (" Schnell ", FLUX),
        (FLUX.upper(), FLUX),
        ("sdxl", "stability/sdxl"),
        ("imagen-ultra", "google/imagen-4-ultra"),
        ("Imagen-Fast", "google/imagen-4-fast"),
    ],
)
def test_ids_and_aliases_resolve_case_insensitively(name: str, model_id: str) -> None:
    assert named(load_catalog(), name).id == model_id


def test_defaults_and_unknown_models() -> None:
    catalog = load_catalog(default="sdxl")
    assert catalog.default.id == "stability/sdxl"
    assert parse_request("a fox", catalog=catalog).model == "stability/sdxl"
    assert catalog.find("dalle") is None
    assert catalog.find("Stable Diffusion XL") is None  # a label is not a name
    with pytest.raises(UnknownModelError) as info:
        parse_request("a fox --model dalle", catalog=catalog)
    assert str(info.value) == "unknown model 'dalle'; choose flux, sdxl, imagen-ultra, imagen-fast"
    with pytest.raises(UnknownModelError):
        catalog.get("flux")  # get() takes exact ids only


def test_unknown_default_model_stops_start_up() -> None:
    with pytest.raises(ConfigError) as info:
        load_catalog(default="dalle")
    assert str(info.value) == (
        "DEFAULT_MODEL='dalle' is not in the catalog; choose flux, sdxl, imagen-ultra, imagen-fast"
    )


def test_models_file_adds_a_model(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[models]]
id = "openai/dall-e-3"
label = "DALL-E 3"
aliases = ["dalle3", "dalle"]
sizes = ["1024x1024", "1792x1024", "1024x1792"]
max_n = 1
price = 0.04
size_prices = { "1792x1024" = 0.08, "1024x1792" = "0.08" }
supports_seed = false
supports_negative_prompt = false
""",
    )
    catalog = load_catalog(path, default="dalle")
    dalle = named(catalog, "DALLE3")
    assert catalog.default is dalle
    assert (dalle.id, dalle.label, dalle.max_n) == ("openai/dall-e-3", "DALL-E 3", 1)
    assert dalle.sizes == ("1024x1024", "1792x1024", "1024x1792")
    assert not dalle.supports_seed and not dalle.supports_negative_prompt
    assert dalle.image_price_micros("1024x1024") == 40_000
    assert dalle.image_price_micros("1792x1024") == 80_000  # the size_prices entry wins
    assert len(catalog) == 5
    assert catalog.names()[-1] == "dalle3"
    assert named(catalog, "flux").price_micros == 3_000  # built-ins stay


def test_models_file_overrides_a_builtin_price(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
[[models]]
id = "{FLUX}"
price = 0.005
size_prices = {{ "2048x2048" = 0.015 }}
""",
    )
    catalog = load_catalog(path)
    flux = named(catalog, "flux")
    assert flux.price_micros == 5_000
    assert flux.image_price_micros("1024x1792") == 8_750
    assert flux.image_price_micros("2048x2048") == 15_000  # not 4 x 5_000
    assert (flux.label, flux.aliases, flux.sizes, flux.max_n) == (
        "FLUX.1 [schnell]",
        ("flux", "schnell"),
        SIZES,
        4,
    )
    assert len(catalog) == 4


MALFORMED = [
    ("[[models]\nid = 1", "", "not valid TOML"),
    ('title = "no models"', "", "expected one or more [[models]] tables"),
    ('[[models]]\nid = "acme/x"\nprice = 0.01', "model acme/x", "a new model needs sizes"),
    ('[[models]]\nid = "acme/x"\nsizes = ["1024x1024"]', "model acme/x", "needs price"),
    (
        '[[models]]\nid = "acme/x"\nsizes = ["1024 by 1024"]\nprice = 0.01',
        "model acme/x",
        "size '1024 by 1024' is not WIDTHxHEIGHT",
    ),
    ('[[models]]\nid = "acme/x"\nsizes = []\nprice = 0.01', "model acme/x", "'sizes' must be"),
    (f'[[models]]\nid = "{FLUX}"\nmax_n = 0', f"model {FLUX}", "'max_n' must be a whole number"),
    (f'[[models]]\nid = "{FLUX}"\nmax_n = 11', f"model {FLUX}", "from 1 to 10"),
    (f'[[models]]\nid = "{FLUX}"\nprice = -0.01', f"model {FLUX}", "non-negative"),
    (f'[[models]]\nid = "{FLUX}"\nprice = 0.0000001', f"model {FLUX}", "precision"),
    (f'[[models]]\nid = "{FLUX}"\nprice = true', f"model {FLUX}", "dollars"),
    (f'[[models]]\nid = "{FLUX}"\ncolour = "red"', f"model {FLUX}", "unknown key(s) colour"),
    (f'[[models]]\nid = "{FLUX}"\naliases = "fx"', f"model {FLUX}", "'aliases' must be a list"),
    (f'[[models]]\nid = "{FLUX}"\naliases = [""]', f"model {FLUX}", "'aliases' must be"),
    (f'[[models]]\nid = "{FLUX}"\nlabel = 3', f"model {FLUX}", "'label' must be"),
    (
        f'[[models]]\nid = "{FLUX}"\nsupports_seed = "yes"',
        f"model {FLUX}",
        "'supports_seed' must be true or false",
    ),
    (
        f'[[models]]\nid = "{FLUX}"\nsize_prices = {{ "640x480" = 0.01 }}',
        f"model {FLUX}",
        "size_prices names 640x480, which is not in sizes",
    ),
    ('[[models]]\nlabel = "no id"', "model #1", "every model needs a non-empty string 'id'"),
    (
        '[[models]]\nid = "acme/x"\naliases = ["FLUX"]\nsizes = ["1024x1024"]\nprice = 0.01',
        "model acme/x",
        "name 'flux' is already used by black-forest-labs/flux-1-schnell",
    ),
    (
        '[[models]]\nid = "acme/x"\nsizes = ["1024x1024"]\nprice = 0.01\n'
        '[[models]]\nid = "acme/x"\nprice = 0.02',
        "model acme/x",
        "this id is given twice in the file",
    ),
]


@pytest.mark.parametrize(("text", "model", "problem"), MALFORMED, ids=[m[2] for m in MALFORMED])
def test_malformed_models_file_names_file_model_and_problem(
    tmp_path: Path, text: str, model: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_catalog(path)
    message = str(info.value)
    assert message.startswith(f"MODELS_FILE {path}")
    assert model in message
    assert problem in message


def test_missing_or_undecodable_models_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="cannot read it") as info:
        load_catalog(missing)
    assert str(missing) in str(info.value)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[[models]]")
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_catalog(binary)
    assert str(binary) in str(info.value)


def test_an_empty_catalog_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty"):
        ModelCatalog([])


def test_builtins_are_the_documented_four() -> None:
    assert [spec.id for spec in BUILTIN_MODELS] == [
        FLUX,
        "stability/sdxl",
        "google/imagen-4-ultra",
        "google/imagen-4-fast",
    ]
    assert [spec.supports_negative_prompt for spec in BUILTIN_MODELS] == [True, True, False, False]


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        (0.003, 3_000),
        ("0.003", 3_000),
        ("0.1", 100_000),
        (0.1, 100_000),
        (3, 3_000_000),
        (0, 0),
        ("0.000001", 1),
        (Decimal("0.0130"), 13_000),
        (1.5e-5, 15),
    ],
)
def test_usd_to_micros_is_exact(value: object, micros: int) -> None:
    assert usd_to_micros(value) == micros


@pytest.mark.parametrize(
    "value",
    [-0.01, "-1", float("nan"), float("inf"), "0.0000001", 1e-7, "abc", "", None, True],
)
def test_usd_to_micros_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        usd_to_micros(value)
