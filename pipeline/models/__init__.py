"""Model provisioning: the catalog of default weights and the verified local cache."""

from .cache import ModelCache, sha256_file
from .catalog import CATALOG, ModelSpec

__all__ = ["CATALOG", "ModelCache", "ModelSpec", "sha256_file"]
