"""The offline preview provider draws real, labelled, deterministic images at no cost."""

from __future__ import annotations

import io

from PIL import Image

from bot.catalog import ModelCatalog, load_catalog
from bot.models import GenerationRequest, ModelSpec
from bot.provider.preview import PreviewProvider

CATALOG = load_catalog()


def named(catalog: ModelCatalog, name: str) -> ModelSpec:
    """The model ``name`` finds (an id or an alias, any case)."""
    spec = catalog.find(name)
    assert spec is not None, name
    return spec


async def test_preview_draws_decodable_images_of_the_requested_size() -> None:
    spec = named(CATALOG, "flux")
    request = GenerationRequest("a red fox", spec.id, "1024x1792", n=2, seed=7)
    images = await PreviewProvider().generate(request, spec)

    assert len(images) == 2
    for image in images:
        decoded = Image.open(io.BytesIO(image.data))
        decoded.load()
        assert decoded.format == "PNG" and image.mime_type == "image/png"
        assert decoded.size == (1024, 1792) == (image.width, image.height)
    assert images[0].data != images[1].data  # each image of a job differs


async def test_same_seed_same_picture_other_seed_other_picture() -> None:
    spec = named(CATALOG, "sdxl")
    provider = PreviewProvider()
    first = await provider.generate(GenerationRequest("a boat", spec.id, "1024x1024", seed=1), spec)
    again = await provider.generate(GenerationRequest("a boat", spec.id, "1024x1024", seed=1), spec)
    other = await provider.generate(GenerationRequest("a boat", spec.id, "1024x1024", seed=2), spec)
    assert first[0].data == again[0].data
    assert first[0].data != other[0].data


async def test_preview_is_labelled_and_not_billable() -> None:
    spec = named(CATALOG, "flux")
    provider = PreviewProvider()
    assert provider.billable is False
    request = GenerationRequest("a very distinctive prompt", spec.id, "1024x1024", seed=3)
    labelled = (await provider.generate(request, spec))[0]
    blank_prompt = GenerationRequest("x", spec.id, "1024x1024", seed=3)
    other = (await provider.generate(blank_prompt, spec))[0]
    # The prompt is drawn on the picture: a different prompt changes the pixels of the label.
    assert labelled.data != other.data
    pixels = Image.open(io.BytesIO(labelled.data)).convert("L")
    # The PREVIEW title is white text on a dark panel: some pixels are near white.
    assert pixels.getextrema()[1] > 240
