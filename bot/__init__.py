"""imagine-bot's core: models, parsing, pricing, providers, the ledger and the service.

It never imports a chat platform's SDK; adapters turn platform events into these types.
"""

from bot.catalog import ModelCatalog, load_catalog
from bot.errors import BotError, InvalidRequestError, QuotaExceededError
from bot.models import GeneratedImage, GenerationRequest, GenerationResult, ModelSpec, Requester
from bot.service import ImageService

__all__ = [
    "BotError",
    "GeneratedImage",
    "GenerationRequest",
    "GenerationResult",
    "ImageService",
    "InvalidRequestError",
    "ModelCatalog",
    "ModelSpec",
    "QuotaExceededError",
    "Requester",
    "load_catalog",
]
