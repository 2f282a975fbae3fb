"""tracklens: per-person age, gender and expression from video streams.

Subpackages: ``tracklens.trackers`` (numpy/scipy) <- ``tracklens.pipeline`` (no ray) <-
``tracklens.serve`` (ray, fastapi); they live in the repository's top-level folders.
"""

__version__ = "0.1.0"
