"""expertir: all-in-one image restoration (SLER-IR, CEA and baselines on one backbone)."""

__version__ = "0.1.0"

from expertir.errors import ExpertirError  # noqa: E402
from expertir.models import build_model, list_models  # noqa: E402

__all__ = ["ExpertirError", "build_model", "list_models", "__version__"]
