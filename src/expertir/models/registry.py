"""Model registry: ``build_model(name, **options)`` is the one way to make a model.

A model class registers under a family name (``restormer``) and gets one preset per
backbone size (``restormer_tiny`` = the family with ``size="tiny"``, plus any per-size
options the method declares). Keyword arguments given to :func:`build_model` override the
preset.

Every built model carries ``model.config``: its constructor arguments resolved against the
class signature (defaults filled in, ``**backbone`` overrides flattened in, tuples as
lists), so ``build_model(family, **model.config)`` rebuilds the same architecture and a
checkpoint stores it as JSON (the timm convention: the registry records the configuration,
models never write it by hand).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch.nn as nn

from expertir.models.backbone import BACKBONE_PRESETS

_FAMILIES: dict[str, type[nn.Module]] = {}
_PRESETS: dict[str, tuple[str, dict]] = {}


def register_model(name: str, preset_options: dict[str, dict] | None = None) -> Callable:
    """Class decorator: register ``cls`` as ``name`` and as ``name_<size>`` for every
    backbone size; ``preset_options[size]`` adds method options to that size's preset."""
    preset_options = preset_options or {}
    unknown = set(preset_options) - set(BACKBONE_PRESETS)
    if unknown:
        raise ValueError(f"model {name!r}: preset options for unknown size(s) {sorted(unknown)}")

    def wrap(cls):
        if name in _FAMILIES:
            raise ValueError(f"model {name!r} is registered twice")
        _FAMILIES[name] = cls
        _PRESETS[name] = (name, {})
        for size in BACKBONE_PRESETS:
            _PRESETS[f"{name}_{size}"] = (name, {"size": size, **preset_options.get(size, {})})
        return cls

    return wrap


def list_models() -> list[str]:
    """All buildable names: families and their presets."""
    return sorted(_PRESETS)


def resolve(name: str) -> tuple[str, dict]:
    """(family, preset options) of a registered name."""
    if name not in _PRESETS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    family, options = _PRESETS[name]
    return family, dict(options)


def _plain(value: Any) -> Any:
    """JSON-friendly copy: tuples become lists, recursively."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def resolved_config(cls: type, options: dict) -> dict:
    """``options`` bound to ``cls``'s constructor with its defaults filled in; the
    ``**kwargs`` catch-all (backbone overrides) is flattened into the same dict."""
    signature = inspect.signature(cls)
    bound = signature.bind(**options)
    bound.apply_defaults()
    config = {}
    for key, value in bound.arguments.items():
        if signature.parameters[key].kind is inspect.Parameter.VAR_KEYWORD:
            config.update(value)
        else:
            config[key] = value
    return _plain(config)


def build_model(name: str, **options) -> nn.Module:
    """Build a registered model; ``options`` override the preset's. Sets ``model.config``."""
    family, preset = resolve(name)
    cls = _FAMILIES[family]
    options = {**preset, **options}
    model = cls(**options)
    model.config = resolved_config(cls, options)
    return model
