"""The shared text grammar: what users may type, and the one-line answers to mistakes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.catalog import ModelCatalog, load_catalog
from bot.errors import InvalidRequestError, UnknownModelError
from bot.models import GenerationRequest, ModelSpec
from bot.parsing import MAX_SEED, RequestOptions, parse_request

FLUX = "black-forest-labs/flux-1-schnell"
SDXL = "stability/sdxl"
ULTRA = "google/imagen-4-ultra"
FAST = "google/imagen-4-fast"
SIZES = "1024x1024, 1024x1792, 1792x1024, 2048x2048"

CATALOG = load_catalog()
# A second catalog with a narrow model: one image at a time, no negative prompts, odd sizes.
TINY = ModelSpec(
    id="acme/tiny",
    label="Tiny",
    aliases=("tiny",),
    sizes=("512x512", "768x512"),
    max_n=1,
    price_micros=1_000,
    supports_negative_prompt=False,
)
NARROW = ModelCatalog([TINY, *CATALOG], default="tiny")


def parse(
    text: str, options: RequestOptions | None = None, *, max_prompt_length: int = 4000
) -> GenerationRequest:
    return parse_request(
        text, catalog=CATALOG, options=options, max_prompt_length=max_prompt_length
    )


def rejection(text: str, options: RequestOptions | None = None, **kwargs: int) -> str:
    with pytest.raises(InvalidRequestError) as info:
        parse(text, options, **kwargs)
    message = str(info.value)
    assert message == info.value.reason
    assert "\n" not in message
    return message


def req(
    prompt: str,
    model: str = FLUX,
    size: str = "1024x1024",
    n: int = 1,
    seed: int | None = None,
    negative: str | None = None,
) -> GenerationRequest:
    return GenerationRequest(prompt, model, size, n, seed, negative)


ACCEPTED = [
    ("a red fox in snow", req("a red fox in snow")),
    ("a red fox in snow --model sdxl --n 2", req("a red fox in snow", SDXL, n=2)),
    ("a red fox --model=sdxl --n=2 --seed=7", req("a red fox", SDXL, n=2, seed=7)),
    # flags anywhere after the prompt starts; the rest is prompt text
    ("a fox --ar 16:9 in deep snow", req("a fox in deep snow", size="1792x1024")),
    ("a fox --n 3 --seed 0 at dawn", req("a fox at dawn", n=3, seed=0)),
    (f"a fox --seed {MAX_SEED}", req("a fox", seed=MAX_SEED)),
    # model by id, alias, any case
    (f"fox --model {ULTRA}", req("fox", ULTRA)),
    ("fox --model SCHNELL", req("fox", FLUX)),
    ("fox --model Imagen-Fast", req("fox", FAST)),
    # flag names are case-insensitive; --aspect is --ar
    ("fox --AR 9:16 --N 2", req("fox", size="1024x1792", n=2)),
    ("fox --aspect 9:16", req("fox", size="1024x1792")),
    # sizes: x, X, *, ×, quoted with spaces
    ("fox --size 1792x1024", req("fox", size="1792x1024")),
    ("fox --size 1024X1792", req("fox", size="1024x1792")),
    ("fox --size 2048*2048", req("fox", size="2048x2048")),
    ("fox --size 1024×1024", req("fox", size="1024x1024")),
    ('fox --size " 1792x1024 "', req("fox", size="1792x1024")),
    # em-dash and en-dash as typed by phones and Slack
    ("fox —ar 16:9 —n 2", req("fox", size="1792x1024", n=2)),
    ("fox –model sdxl", req("fox", SDXL)),
    ("fox —No text", req("fox", negative="text")),
    # a dash-word that is not a flag stays prose
    ('"to be" —Hamlet, as a poster', req('"to be" —Hamlet, as a poster')),
    ("a t-shirt -5 degrees -- cold", req("a t-shirt -5 degrees -- cold")),
    # --no: quoted (prompt may go on) or Midjourney style up to the next flag
    ('fox --no "text, watermark" in snow', req("fox in snow", negative="text, watermark")),
    ("fox --no “blurry  hands” at night", req("fox at night", negative="blurry hands")),
    ("fox --no text watermark", req("fox", negative="text watermark")),
    ("fox --no text, watermark --n 2", req("fox", n=2, negative="text, watermark")),
    ('fox --no="text, logo" --seed 5', req("fox", seed=5, negative="text, logo")),
    ("fox --no=text logo", req("fox", negative="text logo")),
    # whitespace collapses, control characters go, quotes and apostrophes in the prompt stay
    ("  a\tfox's\n\n 'den'   \x00at\x07 dusk  ", req("a fox's 'den' at dusk")),
    ('a sign that says "open"', req('a sign that says "open"')),
    ("emoji 👨\u200d👩\u200d👧 family", req("emoji 👨\u200d👩\u200d👧 family")),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED, ids=[t for t, _ in ACCEPTED])
def test_accepted(text: str, expected: GenerationRequest) -> None:
    assert parse(text) == expected


REJECTED_EXACT = [
    ("fox --size 999x999", f"size 999x999 is not offered by flux; choose {SIZES}"),
    ("fox --n 5", "n must be 1-4 for flux"),
    ("fox --foo", "unknown flag --foo; use --model, --size, --ar, --n, --seed, --no"),
    ("fox --model dalle", "unknown model 'dalle'; choose flux, sdxl, imagen-ultra, imagen-fast"),
    ("--n 2", "the prompt is empty; describe the image, e.g. a red fox in snow --ar 16:9"),
    ("fox --seed 4294967296", "seed must be a whole number from 0 to 4294967295"),
    ("fox --n 1 --n 2", "--n given twice; give each flag once"),
    ("fox --size 1024x1024 --ar 1:1", "--size and --ar both given; use one of them"),
    (
        "fox --model imagen-ultra --no text",
        "imagen-ultra does not take a negative prompt (--no); models that do: flux, sdxl",
    ),
]


@pytest.mark.parametrize(("text", "message"), REJECTED_EXACT, ids=[t for t, _ in REJECTED_EXACT])
def test_rejected_with_exact_message(text: str, message: str) -> None:
    assert rejection(text) == message


REJECTED = [
    # sizes
    ("fox --size big", ["size big is not offered by flux", SIZES]),
    ("fox --size 1024x", ["size 1024x is not offered", SIZES]),
    ("fox --model sdxl --size 512x512", ["size 512x512 is not offered by sdxl"]),
    ("fox --size", ["--size needs a value", "--size 1024x1024"]),
    ("fox --size --n 2", ["--size needs a value"]),
    # aspect ratios
    ("fox --ar 0:1", ["aspect ratio 0:1", "16:9"]),
    ("fox --ar 16:0", ["aspect ratio 16:0"]),
    ("fox --ar wide", ["aspect ratio wide"]),
    ("fox --ar 16x9", ["aspect ratio 16x9"]),
    ("fox --ar -16:9", ["aspect ratio -16:9"]),
    ("fox --ar 16:9 --aspect 1:1", ["--ar given twice"]),
    ("fox --ar 1:1 --size 1024x1024", ["--size and --ar both given"]),
    # n
    ("fox --n 0", ["n must be 1-4 for flux"]),
    ("fox --n two", ["n must be 1-4 for flux"]),
    ("fox --n 2.5", ["n must be 1-4"]),
    ("fox --n -1", ["n must be 1-4"]),
    ("fox --n ٣", ["n must be 1-4"]),
    ("fox --n 99999999999999999999", ["n must be 1-4"]),
    ("fox --n=", ["--n needs a value", "--n 2"]),
    ('fox --n ""', ["--n needs a value"]),
    # seed
    ("fox --seed -1", ["seed must be a whole number from 0 to 4294967295"]),
    ("fox --seed 1.5", ["seed must be a whole number"]),
    ("fox --seed 1_000", ["seed must be a whole number"]),
    ("fox --seed " + "9" * 5000, ["seed must be a whole number"]),
    ("fox --seed", ["--seed needs a value", "--seed 42"]),
    # model
    ("fox --model", ["--model needs a value; choose flux, sdxl, imagen-ultra, imagen-fast"]),
    ("fox --model flux --model sdxl", ["--model given twice"]),
    # --no
    ("fox --no", ["--no needs a value", '--no "text, watermark"']),
    ("fox --no --n 2", ["--no needs a value"]),
    ('fox --no "text, watermark', ["--no has an unclosed quote"]),
    ('fox --no "   "', ["--no needs a value"]),
    ("fox --model imagen-fast --no blur", ["imagen-fast does not take a negative prompt"]),
    ("fox --no a --no b", ["--no given twice"]),
    # flags
    ("fox --FOO=1", ["unknown flag --FOO;", "--model, --size, --ar, --n, --seed, --no"]),
    ("fox --n:2", ["unknown flag --n:2"]),
    ("fox --negative blur", ["unknown flag --negative"]),
    ("fox --stylize 100", ["unknown flag --stylize"]),
    ("fox —-ar 16:9 --quality hd", ["unknown flag --quality"]),
    # prompt
    ("", ["the prompt is empty"]),
    ("   \n\t\x00 ", ["the prompt is empty"]),
    ('--no "text" --ar 1:1', ["the prompt is empty"]),
    ("\u200b\u200b\u200b", ["the prompt is empty"]),  # zero-width spaces
    ("\u200d \u2060 \ufeff --n 2", ["the prompt is empty"]),  # joiner, word joiner, BOM
    ("\u0301\u20dd\ufe0f", ["the prompt is empty"]),  # combining marks alone
]


@pytest.mark.parametrize(("text", "fragments"), REJECTED, ids=[t[:40] for t, _ in REJECTED])
def test_rejected(text: str, fragments: list[str]) -> None:
    message = rejection(text)
    for fragment in fragments:
        assert fragment in message
    assert len(message) <= 200


def test_invisible_characters_stay_inside_a_visible_prompt() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one emoji joined by ZWJs
    assert parse(f"a {family} portrait").prompt == f"a {family} portrait"
    assert parse("fox --no \u200b").negative_prompt is None


def test_prompt_length_is_bounded_after_normalising() -> None:
    assert parse("ab  " * 5 + "--n 2", max_prompt_length=14).prompt == "ab ab ab ab ab"
    assert rejection("a" * 15, max_prompt_length=14) == (
        "the prompt is 15 characters; the limit is 14"
    )
    assert parse("a" * 4000).prompt == "a" * 4000
    assert "4001 characters; the limit is 4000" in rejection("a" * 4001)
    assert "the --no text is 15 characters" in rejection(
        "fox --no " + "b" * 15, max_prompt_length=14
    )


def test_unknown_model_is_its_own_error_and_the_message_stays_short() -> None:
    with pytest.raises(UnknownModelError) as info:
        parse("fox --model " + "z" * 500)
    assert info.value.available == ("flux", "sdxl", "imagen-ultra", "imagen-fast")
    assert len(str(info.value)) < 120


@pytest.mark.parametrize(
    ("ratio", "size"),
    [
        ("16:9", "1792x1024"),
        ("9:16", "1024x1792"),
        ("1:1", "1024x1024"),  # a tie with 2048x2048: the smaller area wins
        ("4:3", "1792x1024"),  # log(4/3) is nearer log(1.75) than log(1)
        ("3:4", "1024x1792"),
        ("21:9", "1792x1024"),
        ("100:1", "1792x1024"),  # extremes map to the nearest, not an error
        ("2.39:1", "1792x1024"),
        ("1.1:1", "1024x1024"),
    ],
)
def test_aspect_ratio_picks_the_nearest_offered_size(ratio: str, size: str) -> None:
    assert parse(f"fox --ar {ratio}").size == size


def test_aspect_ratio_uses_the_chosen_models_sizes() -> None:
    got = parse_request("fox --ar 16:9", catalog=NARROW)
    assert (got.model, got.size) == ("acme/tiny", "768x512")
    assert parse_request("fox --ar 1:3", catalog=NARROW).size == "512x512"


def test_defaults_come_from_the_catalog_and_the_model() -> None:
    got = parse_request("fox", catalog=NARROW)
    assert got == GenerationRequest("fox", "acme/tiny", "512x512", 1, None, None)


def test_limits_follow_the_model() -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_request("fox --n 2", catalog=NARROW)
    assert info.value.reason == "n must be 1 for tiny"
    with pytest.raises(InvalidRequestError) as info:
        parse_request("fox --size 1024x1024", catalog=NARROW)
    assert info.value.reason == "size 1024x1024 is not offered by tiny; choose 512x512, 768x512"
    with pytest.raises(InvalidRequestError) as info:
        parse_request("fox --no blur", catalog=NARROW)
    assert info.value.reason == (
        "tiny does not take a negative prompt (--no); models that do: flux, sdxl"
    )


# -- structured options (Discord) merged with flags in the text ----------------------------


def test_options_alone() -> None:
    options = RequestOptions(model="sdxl", size="1792x1024", n=2, seed=9, negative="blur")
    assert parse("a fox", options) == req("a fox", SDXL, "1792x1024", 2, 9, "blur")


def test_options_merge_with_flags() -> None:
    options = RequestOptions(model="sdxl", negative="  blur \n")
    assert parse("a fox --n 3 --ar 9:16", options) == req(
        "a fox", SDXL, "1024x1792", 3, negative="blur"
    )


def test_options_that_agree_with_flags_are_fine() -> None:
    options = RequestOptions(model=SDXL, size="1024*1024", n=2, seed=5, negative="blur")
    text = "a fox --model SDXL --size 1024x1024 --n 2 --seed 5 --no blur"
    assert parse(text, options) == req("a fox", SDXL, "1024x1024", 2, 5, "blur")
    # an aspect ratio in the text that lands on the option's size agrees with it
    assert parse("a fox --ar 16:9", RequestOptions(size="1792x1024")).size == "1792x1024"


def test_blank_options_count_as_not_given() -> None:
    options = RequestOptions(model="", size="  ", negative=" \t ")
    assert parse("a fox", options) == req("a fox")


def test_option_size_accepts_a_ratio() -> None:
    assert parse("a fox", RequestOptions(size="9:16")).size == "1024x1792"


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        (
            "fox --model flux",
            RequestOptions(model="sdxl"),
            "model given twice (sdxl and flux); give it once",
        ),
        (
            "fox --size 1024x1024",
            RequestOptions(size="2048x2048"),
            "size given twice (2048x2048 and 1024x1024); give it once",
        ),
        ("fox --ar 1:1", RequestOptions(size="9:16"), "size given twice (1024x1792 and 1024x1024)"),
        ("fox --n 2", RequestOptions(n=3), "n given twice (3 and 2); give it once"),
        ("fox --seed 1", RequestOptions(seed=2), "seed given twice (2 and 1); give it once"),
        ("fox --no a", RequestOptions(negative="b"), "negative prompt given twice"),
    ],
)
def test_options_that_contradict_flags_are_an_error(
    text: str, options: RequestOptions, message: str
) -> None:
    assert rejection(text, options).startswith(message)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (RequestOptions(n=0), "n must be 1-4 for flux"),
        (RequestOptions(n=5, model="sdxl"), "n must be 1-4 for sdxl"),
        (RequestOptions(seed=-1), "seed must be a whole number from 0 to 4294967295"),
        (RequestOptions(seed=MAX_SEED + 1), "seed must be a whole number"),
        (RequestOptions(size="640x480"), "size 640x480 is not offered by flux"),
        (RequestOptions(size="0:9"), "aspect ratio 0:9"),
        (RequestOptions(model="nope"), "unknown model 'nope'"),
        (RequestOptions(model="imagen-ultra", negative="blur"), "does not take a negative"),
    ],
)
def test_bad_options_are_rejected_like_flags(options: RequestOptions, fragment: str) -> None:
    assert fragment in rejection("a fox", options)


# -- property: arbitrary text never escapes as anything but InvalidRequestError -----------

FRAGMENTS = [
    "--n",
    "--ar",
    "--size",
    "--seed",
    "--no",
    "--model",
    "--aspect",
    "--foo",
    "--",
    "—",
    "—ar",
    "–n",
    "—no",
    "--n=",
    "--no=",
    "--size=",
    "=",
    ":",
    "x",
    "*",
    "×",
    "16:9",
    "0:0",
    "1:0",
    "9:16",
    "2.39:1",
    "1024x1024",
    "999x999",
    "1024*1024",
    "2048X2048",
    "0",
    "1",
    "4",
    "5",
    "-1",
    "4294967295",
    "4294967296",
    "1e3",
    "٣",
    "1_0",
    "99999999999",
    '"',
    "“",
    "”",
    "'",
    '""',
    "flux",
    "sdxl",
    "imagen-ultra",
    "IMAGEN-FAST",
    "nope",
    "a red fox",
    "  ",
    "\n",
    "\t",
    "\x00",
    "\u2028",
]
fragment_text = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=14
).flatmap(lambda parts: st.sampled_from([" ", ""]).map(lambda sep: sep.join(parts)))
option_strings = st.none() | st.sampled_from(FRAGMENTS) | st.text(max_size=10)
option_ints = st.none() | st.integers(min_value=-3, max_value=6) | st.integers()
options = st.none() | st.builds(
    RequestOptions,
    model=option_strings,
    size=option_strings,
    n=option_ints,
    seed=option_ints,
    negative=option_strings,
)


def check_valid(got: GenerationRequest, catalog: ModelCatalog, max_prompt_length: int) -> None:
    spec = catalog.get(got.model)
    assert got.size in spec.sizes
    assert 1 <= got.n <= spec.max_n
    assert got.prompt and got.prompt == got.prompt.strip() and "  " not in got.prompt
    assert len(got.prompt) <= max_prompt_length
    assert got.seed is None or 0 <= got.seed <= MAX_SEED
    if got.negative_prompt is not None:
        assert got.negative_prompt and spec.supports_negative_prompt
    # the prompt alone parses back to itself: no flag was left inside it
    again = parse_request(got.prompt, catalog=catalog, max_prompt_length=max_prompt_length)
    assert again.prompt == got.prompt


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(st.text(), fragment_text),
    options=options,
    catalog=st.sampled_from([CATALOG, NARROW]),
    max_prompt_length=st.sampled_from([12, 4000]),
)
def test_only_invalid_request_errors_escape(
    text: str, options: RequestOptions | None, catalog: ModelCatalog, max_prompt_length: int
) -> None:
    try:
        got = parse_request(
            text, catalog=catalog, options=options, max_prompt_length=max_prompt_length
        )
    except InvalidRequestError as exc:  # UnknownModelError included
        assert exc.reason and "\n" not in exc.reason and len(exc.reason) <= 200
    else:
        check_valid(got, catalog, max_prompt_length)
