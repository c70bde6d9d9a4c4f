"""Model registry: ``build_model(name, **cfg)`` is the one way to make a model.

A model class registers under a family name (``restormer``) with optional presets
(``restormer_tiny`` = the family with ``size="tiny"``). Keyword arguments given to
:func:`build_model` override the preset.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

_FAMILIES: dict[str, type[nn.Module]] = {}
_PRESETS: dict[str, tuple[str, dict]] = {}


def register_model(name: str, presets: dict[str, dict] | None = None) -> Callable:
    """Class decorator: register ``cls`` as ``name`` and each ``name_<preset>``."""

    def wrap(cls):
        if name in _FAMILIES:
            raise ValueError(f"model {name!r} is registered twice")
        _FAMILIES[name] = cls
        _PRESETS[name] = (name, {})
        for preset, cfg in (presets or {}).items():
            _PRESETS[f"{name}_{preset}"] = (name, dict(cfg))
        return cls

    return wrap


def list_models() -> list[str]:
    """All buildable names: families and their presets."""
    return sorted(_PRESETS)


def resolve(name: str) -> tuple[str, dict]:
    """(family, preset config) of a registered name."""
    if name not in _PRESETS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    family, cfg = _PRESETS[name]
    return family, dict(cfg)


def build_model(name: str, **cfg) -> nn.Module:
    """Build a registered model; ``cfg`` overrides the preset's options."""
    family, preset = resolve(name)
    return _FAMILIES[family](**{**preset, **cfg})
