"""``fit_within``: images over a platform's upload limit come back smaller and still decode;
``conform``: a provider's image is checked against the asked size before it is decoded."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from bot.models import GeneratedImage
from bot.provider.imaging import MIN_FIT_BYTES, ImageTooLargeError, conform, fit_within
from tests.fakes.image_api import bomb_png


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _generated(image: Image.Image, **extra: object) -> GeneratedImage:
    return GeneratedImage(
        data=_png(image),
        mime_type="image/png",
        width=image.width,
        height=image.height,
        **extra,  # type: ignore[arg-type]
    )


def _noise(width: int, height: int, mode: str = "RGB", seed: int = 7) -> Image.Image:
    """Incompressible pixels: the worst case for any encoder."""
    rng = random.Random(seed)
    channels = len(mode)
    return Image.frombytes(mode, (width, height), rng.randbytes(width * height * channels))


def _scene(width: int, height: int) -> Image.Image:
    """Smooth shapes with film grain, like a generated picture: large as a PNG, much smaller
    once lossily encoded."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    for index in range(6):
        box = (index * width // 8, index * height // 9, width // 2 + index * 20, height // 2)
        image.paste((40 * index, 200 - 25 * index, 90), box)
    grain = Image.effect_noise((width, height), 12).convert("RGB")
    return Image.blend(image, grain, 0.15)


def _decode(data: bytes) -> Image.Image:
    """Fully decoded (a truncated file fails here), keeping the detected format."""
    opened = Image.open(io.BytesIO(data))
    opened.load()
    return opened


def test_an_image_that_fits_is_returned_untouched() -> None:
    image = _generated(_scene(64, 64), seed=5)
    assert fit_within(image, len(image.data)) is image


def test_a_large_png_is_re_encoded_at_full_size_when_quality_suffices() -> None:
    image = _generated(_scene(768, 512), seed=42, revised_prompt="a scene")
    cap = len(image.data) // 3
    fitted = fit_within(image, cap)
    assert len(fitted.data) <= cap
    decoded = _decode(fitted.data)
    assert decoded.size == (768, 512) == (fitted.width, fitted.height)
    assert decoded.format in ("WEBP", "JPEG")
    assert fitted.mime_type == Image.MIME[decoded.format]
    assert fitted.extension in ("webp", "jpg")
    # What the adapter shows next to the image survives the re-encoding.
    assert (fitted.seed, fitted.revised_prompt) == (42, "a scene")


@pytest.mark.parametrize("cap", [MIN_FIT_BYTES, 9_000, 60_000])
def test_noise_is_downscaled_until_it_fits_keeping_the_aspect_ratio(cap: int) -> None:
    image = _generated(_noise(600, 300))
    assert len(image.data) > cap
    fitted = fit_within(image, cap)
    assert len(fitted.data) <= cap
    decoded = _decode(fitted.data)
    assert decoded.size == (fitted.width, fitted.height)
    assert decoded.width < 600
    assert decoded.width / decoded.height == pytest.approx(2.0, rel=0.05)


def test_transparency_survives_when_webp_is_available() -> None:
    from PIL import features

    picture = _noise(300, 300, mode="RGBA")
    image = _generated(picture)
    fitted = fit_within(image, len(image.data) // 4)
    decoded = _decode(fitted.data)
    if features.check("webp"):
        assert decoded.mode == "RGBA"
    else:  # JPEG has no alpha: transparent areas are flattened onto white
        assert decoded.mode == "RGB"


def test_a_palette_image_is_handled() -> None:
    picture = _noise(400, 400).convert("P", palette=Image.Palette.ADAPTIVE)
    image = _generated(picture)
    fitted = fit_within(image, len(image.data) // 5)
    assert len(fitted.data) <= len(image.data) // 5
    assert _decode(fitted.data).width > 0


def test_a_cap_below_the_minimum_is_refused() -> None:
    image = _generated(_noise(64, 64))
    with pytest.raises(ValueError, match="cannot fit"):
        fit_within(image, MIN_FIT_BYTES - 1)


def test_bytes_that_are_not_an_image_are_refused() -> None:
    junk = GeneratedImage(data=b"<html>oops</html>" * 500, mime_type="image/png", width=1, height=1)
    with pytest.raises(ValueError, match="not a readable image"):
        fit_within(junk, MIN_FIT_BYTES)


# -- conform: provider images checked against the asked size --------------------------------


def _encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def test_an_image_of_the_asked_size_is_kept_as_it_is() -> None:
    data = _png(_scene(96, 48))
    assert conform(data, (96, 48)) == (data, "image/png", 96, 48)


@pytest.mark.parametrize(
    ("size", "fmt", "kept"),
    [((192, 96), "PNG", (96, 48)), ((150, 48), "JPEG", (96, 31)), ((96, 96), "WEBP", (48, 48))],
)
def test_an_image_larger_than_asked_is_scaled_down_in_its_format(
    size: tuple[int, int], fmt: str, kept: tuple[int, int]
) -> None:
    data, mime_type, width, height = conform(_encoded(_scene(*size), fmt), (96, 48))

    decoded = _decode(data)
    assert (width, height) == decoded.size == kept
    assert decoded.format == fmt and mime_type == Image.MIME[fmt]


@pytest.mark.parametrize(
    ("size", "asked"),
    [((193, 48), (96, 48)), ((96, 97), (96, 48)), ((4097, 64), (4000, 4000)), ((4097, 8), None)],
)
def test_an_image_over_twice_the_asked_size_or_4096_is_refused(
    size: tuple[int, int], asked: tuple[int, int] | None
) -> None:
    with pytest.raises(ImageTooLargeError) as caught:
        conform(_png(_noise(*size, mode="L")), asked)

    assert caught.value.size == size


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_bomb_is_refused_from_its_header() -> None:
    bomb = bomb_png(13_000, 13_000)  # 494 kB; 676 MB of pixels once decoded

    with pytest.raises(ImageTooLargeError, match="13000x13000, more than 2048x2048"):
        conform(bomb, (1024, 1024))
    with pytest.raises(ImageTooLargeError, match="decompression-bomb limit"):
        conform(bomb_png(14_000, 14_000), None)  # over twice Pillow's own limit


def test_formats_chat_platforms_do_not_show_become_png() -> None:
    data, mime_type, width, height = conform(_encoded(_scene(64, 64), "BMP"), (64, 64))

    assert (mime_type, width, height) == ("image/png", 64, 64)
    assert _decode(data).format == "PNG"


def test_an_unknown_size_is_bounded_by_4096_only() -> None:
    data = _png(_noise(300, 20, mode="L"))
    assert conform(data, None) == (data, "image/png", 300, 20)
