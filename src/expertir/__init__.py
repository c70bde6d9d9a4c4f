"""expertir: all-in-one image restoration (SLER-IR, CEA and baselines on one backbone)."""

__version__ = "0.1.0"

from expertir.errors import ExpertirError  # noqa: E402

__all__ = ["ExpertirError", "build_model", "explain", "list_models", "__version__"]


def __getattr__(name: str):
    """``expertir.build_model``, ``expertir.list_models`` and ``expertir.explain`` (see
    :mod:`expertir.explanation`) load torch on first use, so that ``import expertir`` stays
    light and the command line can set its thread defaults (:mod:`expertir.threads`) before
    torch starts."""
    if name in ("build_model", "list_models"):
        from expertir import models

        return getattr(models, name)
    if name == "explain":
        from expertir.explanation import explain

        return explain
    raise AttributeError(f"module 'expertir' has no attribute {name!r}")
