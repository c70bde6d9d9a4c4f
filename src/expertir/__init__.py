"""expertir: all-in-one image restoration (SLER-IR, CEA and baselines on one backbone)."""

__version__ = "0.1.0"

from expertir.errors import ExpertirError  # noqa: E402
from expertir.models import build_model, list_models  # noqa: E402

__all__ = ["ExpertirError", "build_model", "explain", "list_models", "__version__"]


def __getattr__(name: str):
    """``expertir.explain`` (see :mod:`expertir.explanation`) is imported on first use, so
    ``import expertir`` stays light."""
    if name == "explain":
        from expertir.explanation import explain

        return explain
    raise AttributeError(f"module 'expertir' has no attribute {name!r}")
