"""The watch page of a survey: a FastAPI app reading Tiled, and reviews that teach the
classifier (``deepspm-bluesky watch``, ``train-classifier --from-catalog``)."""

from .app import create_app, serve_watch
from .corrections import corrections_of, export_reviewed, review_image
from .images import image_png
from .reading import CatalogReader

__all__ = ["CatalogReader", "corrections_of", "create_app", "export_reviewed", "image_png",
           "review_image", "serve_watch"]
