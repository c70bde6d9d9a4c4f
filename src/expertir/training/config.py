"""Training configs: YAML files with defaults, inheritance and dotted overrides.

A config is a nested dict. :data:`DEFAULTS` lists every key the trainer reads; a YAML file
changes some of them, may start from another file with ``inherit: other.yaml`` (a path
relative to the file; a list of files is merged in order, later ones winning), and the command line overrides single keys with dotted paths
(``train.lr=1e-4 model.options.num_experts=8``). Values are parsed as YAML scalars, so
``1e-4`` is a float, ``true`` a bool and ``[a, b]`` a list. Unknown keys are an error
(except under ``model.options``, which go to the model's constructor), so a typo never
trains silently with a default. The resolved config is written beside every run.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from expertir.errors import ExpertirError

DEFAULTS: dict = {
    "name": "run",
    "out_dir": "runs",
    "model": {"name": "restormer_tiny", "options": {}},
    "data": {
        # Training sources are found under data.root (one folder or a list) by
        # expertir.data.train.build_train_dataset (clean images degraded on the fly, or real
        # training pairs where the layout has them). A config or the command line names it.
        "root": None,
        "layout": "auto",
        "tasks": ["denoise_15", "denoise_25", "denoise_50", "derain", "dehaze"],
        "ratios": {},             # task -> weight; empty: equal
        "patch": 128,
        "synth_context": 0,       # px around a synthesised patch that its degradation sees (0: the patch alone)
        "length": 10000,          # items per dataset epoch
        "skimage_photos": False,  # add scikit-image's bundled colour photos to the clean images
        "colour_share": None,     # share of draws given to colour images: a number, or task -> number
                                  # (key "default" for the rest); None: every image equally likely
        "rain": "auto",           # auto | layers (real streak layers) | procedural
        "rain_intensity": [0.5, 1.0],  # range of the streak-layer weight (uniform)
        "rain_procedural_share": 0.0,  # with layers: share of rain draws that use procedural streaks
        "dark_scene_share": 0.0,  # share of the clean task's draws that show a dark scene (left alone too)
        "procedural": 0,          # >0: train on that many generated images instead (tests, smoke runs)
        "val_images": 4,          # clean images (or pairs) per task held out for validation
        "val_patch": 128,
        "workers": 1,             # processes that synthesise training patches beside the compute threads (0: inline)
        "worker_nice": 0,         # niceness added to those processes (above 0 they starve on a busy machine)
    },
    "train": {
        "steps": 1000,
        "batch_size": 8,          # per device
        "accum": 1,               # gradient accumulation (micro-batches per step)
        "lr": 2e-4,
        "min_lr": 1e-6,
        "warmup_steps": 100,
        "weight_decay": 1e-4,
        "betas": [0.9, 0.999],
        "grad_clip": 1.0,         # max gradient norm; 0 turns clipping off
        "precision": "fp32",      # fp32 | bf16 | fp16 | fp64 (autocast only on GPU)
        "channels_last": False,
        "compile": False,
        "seed": 0,
        "init": None,             # weights to start from (.safetensors or plain state dict): fine-tuning,
                                  # or continuing exported weights with a fresh optimizer and schedule
        "init_step": 0,           # with init: the step of this run those weights were taken at (a
                                  # milestone of it): the run goes on from there on its own schedule
                                  # and data order, with a fresh optimizer (last.pt lost)
        "device": None,           # None: cuda if available (LOCAL_RANK under torchrun), else cpu
        "threads": 0,             # CPU threads per process; 0 keeps torch's default
        "deterministic": False,
    },
    "loss": {
        "l1": 1.0,
        "fft": 0.0,               # weight of the L1 loss between 2-D FFTs (0 = off)
        "psnr": 0.0,              # weight of minus the PSNR in dB per image (NAFNet; 0 = off)
        "aux": {},                # name -> weight multiplying a model's auxiliary loss (default 1)
    },
    "ema": {"enabled": True, "decay": 0.999},
    "log": {"every": 10, "val_every": 200, "ckpt_every": 500, "tensorboard": True,
            "grid_images": 1, "progress": True},
}


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-4`` (no dot) as a string; accept it as a float, like YAML 1.2."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def _merge(base: dict, update: dict, where: str, strict: bool) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{where}{key}"
        if strict and key not in base and not where.startswith("model.options"):
            raise ExpertirError(f"unknown config key {path!r}")
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            free = not strict or path in ("model.options", "loss.aux", "data.ratios") or where.startswith("model.options")
            out[key] = _merge(base[key], value, f"{path}.", strict=not free)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ExpertirError(f"{path}: config inherits from itself")
    try:
        data = _yaml(path.read_text()) or {}
    except FileNotFoundError:
        raise ExpertirError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ExpertirError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ExpertirError(f"{path}: a config must be a mapping of keys")
    parents = data.pop("inherit", None)
    if parents is None:
        return data
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ExpertirError(f"{path}: inherit names a config file or a list of them")
    base: dict = {}
    for parent in parents:
        base = _merge(base, _read_yaml(path.parent / parent, (*seen, path)), "", strict=False)
    return _merge(base, data, "", strict=False)


def parse_override(text: str) -> tuple[list[str], object]:
    """``"train.lr=1e-4"`` -> (["train", "lr"], 1e-4)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ExpertirError(f"override {text!r}: write KEY=VALUE with a dotted key, e.g. train.lr=1e-4")
    try:
        value = _yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """A copy of ``cfg`` with each ``KEY=VALUE`` applied (unknown keys are an error)."""
    cfg = copy.deepcopy(cfg)
    for text in overrides:
        keys, value = parse_override(text)
        node = cfg
        for i, key in enumerate(keys[:-1]):
            if not isinstance(node.get(key), dict):
                raise ExpertirError(f"override {text!r}: {'.'.join(keys[:i + 1])} is not a section")
            node = node[key]
        free = keys[:2] in (["model", "options"], ["loss", "aux"], ["data", "ratios"]) and len(keys) > 2
        if keys[-1] not in node and not free:
            raise ExpertirError(f"override {text!r}: unknown config key {'.'.join(keys)!r}")
        if isinstance(node.get(keys[-1]), dict) and not isinstance(value, dict):
            raise ExpertirError(f"override {text!r}: {'.'.join(keys)} is a section, not a value")
        node[keys[-1]] = value
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """Defaults <- YAML file (with its ``inherit`` chain) <- dotted overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        cfg = _merge(cfg, _read_yaml(Path(path)), "", strict=True)
    cfg = apply_overrides(cfg, list(overrides or []))
    check_config(cfg)
    return cfg


def check_config(cfg: dict) -> None:
    """Reject values the trainer cannot run with, naming the key."""
    t = cfg["train"]
    for key in ("steps", "batch_size", "accum"):
        if not isinstance(t[key], int) or t[key] < 1:
            raise ExpertirError(f"train.{key} must be a positive integer, got {t[key]!r}")
    if not isinstance(t["init_step"], int) or not 0 <= t["init_step"] < t["steps"]:
        raise ExpertirError(f"train.init_step must be an integer in [0, train.steps), got {t['init_step']!r}")
    if t["init_step"] and not t["init"]:
        raise ExpertirError("train.init_step needs train.init: the weights taken at that step")
    if not isinstance(t["warmup_steps"], int) or not 0 <= t["warmup_steps"] < t["steps"]:
        raise ExpertirError(f"train.warmup_steps must be an integer in [0, train.steps), got {t['warmup_steps']!r}")
    if t["precision"] not in ("fp32", "bf16", "fp16", "fp64"):
        raise ExpertirError(f"train.precision must be fp32, bf16, fp16 or fp64, got {t['precision']!r}")
    if not float(t["lr"]) > 0:
        raise ExpertirError(f"train.lr must be positive, got {t['lr']!r}")
    if not 0 <= float(t["min_lr"]) <= float(t["lr"]):
        raise ExpertirError("train.min_lr must be between 0 and train.lr")
    d = cfg["data"]
    if not d["tasks"]:
        raise ExpertirError("data.tasks is empty")
    lo_hi = d["rain_intensity"]
    if (not isinstance(lo_hi, (list, tuple)) or len(lo_hi) != 2
            or not all(isinstance(v, (int, float)) for v in lo_hi) or not 0 < lo_hi[0] <= lo_hi[1]):
        raise ExpertirError(f"data.rain_intensity must be a range [lo, hi] with 0 < lo <= hi, got {lo_hi!r}")
    for key in ("rain_procedural_share", "dark_scene_share"):
        share = d[key]
        if not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise ExpertirError(f"data.{key} must be a number in [0, 1], got {share!r}")


def save_config(cfg: dict, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False))
