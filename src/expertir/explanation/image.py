"""Per-image explanation: what the model thinks the degradation is, and where it routes.

:func:`explain` restores one image and reads what the model recorded about it
(``model(x, return_aux=True)``) into an :class:`Explanation`. Design choices:

* **Restored output**: :func:`expertir.inference.restore` at full size, so any image size
  works with the memory bound of the restore path. The change map is ``|output - input|``,
  averaged over the colour channels.
* **Recorded maps** come from one more forward pass with ``return_aux=True``. On a large
  image that pass runs on a copy scaled down (antialiased bilinear) to at most
  ``max_aux_pixels`` pixels (default 512 x 512), so its memory is bounded too;
  :attr:`Explanation.aux_scale` records the factor and the figure states it. Scaling down
  averages noise away, so on a large noisy image the estimate can lean to a weaker noise level.
* **Blind degradation estimate**: SLER-IR compares its global embedding g with the task
  prototypes: the scores are the cosines, the probabilities ``softmax(cos / temperature)``
  with the temperature of its contrastive training loss. CEA has no prototypes: a linear
  probe on its affinities (:mod:`.probe`), fitted once per set of weights, gives the
  probabilities. Other models record nothing to estimate from, and say so.
* **SLER-IR routing**: for chosen routed blocks (default: the first of each stage), the
  expert with the largest weight in every 16 x 16 region; the mean weight of each expert in
  every routed block; the nearest prototype of every local embedding l_p; the GLGF gate
  (the weight of g in the routing embedding).
* **CEA affinities**: for chosen adapted blocks (default: the first and the last), the
  rank components with the largest contribution to the block's update. Component k adds
  ``a_ik * gamma * B_k`` to token i, so its strength is ``rms_i(a_ik) * ||gamma * B_k||``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from expertir.data.tasks import TASK_IDS
from expertir.errors import ExpertirError
from expertir.explanation.probe import has_affinities, load_or_fit_probe, probe_features

DEFAULT_MAX_AUX_PIXELS = 512 * 512
#: Strongest CEA rank components shown per block.
COMPONENTS = 4


@dataclass
class DegradationEstimate:
    """The model's blind guess of the degradation."""

    method: str  # "prototypes" (SLER-IR) or "probe" (linear probe, CEA)
    tasks: list[str]
    scores: np.ndarray  # per task: cosine to the prototype, or the probe's probability
    probabilities: np.ndarray  # per task, sums to one
    score_label: str  # what ``scores`` are, for axis labels
    note: str = ""

    @property
    def top(self) -> str:
        return self.tasks[int(np.argmax(self.scores))]

    @property
    def margin(self) -> float:
        """Top score minus the runner-up (in the units of ``scores``)."""
        best = np.sort(self.scores)[::-1]
        return float(best[0] - best[1]) if len(best) > 1 else float("nan")

    def to_dict(self) -> dict:
        return {"method": self.method, "top": self.top, "margin": round(self.margin, 4),
                "score": self.score_label, "note": self.note,
                "tasks": {t: {"score": round(float(s), 4), "probability": round(float(p), 4)}
                          for t, s, p in zip(self.tasks, self.scores, self.probabilities)}}


@dataclass
class ExpertMap:
    """SLER-IR: the expert with the largest weight in every region of one routed block."""

    layer: str
    dominant: np.ndarray  # h x w expert index
    usage: np.ndarray  # mean weight of each expert over the regions (sums to one)


@dataclass
class AffinityComponent:
    """CEA: the signed affinity map of one rank component of one adapted block."""

    layer: str
    index: int
    strength: float  # rms affinity x ||gamma * B_k||: the size of its term in the update
    map: np.ndarray  # H x W at the block's resolution
    cell: float  # image pixels per map cell along each side


@dataclass
class Explanation:
    """Everything :func:`explain` found out about one image (see the module docstring)."""

    name: str
    model: str
    source: str
    kind: str  # "sler_ir", "cea" or "plain" (nothing recorded to explain)
    input: np.ndarray  # H x W x 3 in [0, 1]
    output: np.ndarray  # H x W x 3 in [0, 1]
    estimate: DegradationEstimate | None
    no_estimate: str = ""  # why there is no estimate
    aux_scale: float = 1.0  # maps were computed on a copy scaled by this factor
    aux_size: tuple[int, int] = (0, 0)  # (height, width) of that copy
    region: float = 16.0  # image pixels per SLER-IR region along each side
    usage: dict[str, np.ndarray] = field(default_factory=dict)  # every routed block
    experts: list[ExpertMap] = field(default_factory=list)  # the chosen blocks
    nearest_prototype: np.ndarray | None = None  # h x w task index of each local embedding
    gate: np.ndarray | None = None  # h x w GLGF gate
    components: list[AffinityComponent] = field(default_factory=list)

    @property
    def change(self) -> np.ndarray:
        """``|output - input|`` averaged over the channels (H x W)."""
        return np.abs(self.output - self.input).mean(2)

    def to_dict(self) -> dict:
        """The numbers of the figure, for the JSON file (maps as nested lists)."""
        change = self.change
        h, w = self.input.shape[:2]
        d = {"image": self.name, "size": {"width": w, "height": h}, "model": self.model,
             "weights": self.source, "kind": self.kind,
             "change": {"mean_abs": round(float(change.mean()), 5),
                        "p99_abs": round(float(np.percentile(change, 99)), 5),
                        "max_abs": round(float(change.max()), 5)},
             "estimate": self.estimate.to_dict() if self.estimate else None}
        if self.estimate is None:
            d["no_estimate"] = self.no_estimate
        if self.kind != "plain":
            d["maps"] = {"scale": round(self.aux_scale, 5),
                         "size": {"width": self.aux_size[1], "height": self.aux_size[0]}}
        if self.kind == "sler_ir":
            tasks = self.estimate.tasks
            d["maps"]["region_px"] = round(self.region, 3)
            d["expert_usage"] = {k: [round(float(u), 4) for u in v] for k, v in self.usage.items()}
            d["dominant_expert"] = {e.layer: e.dominant.tolist() for e in self.experts}
            counts = np.bincount(self.nearest_prototype.ravel(), minlength=len(tasks))
            d["nearest_prototype"] = {"share": {t: round(float(c / counts.sum()), 4)
                                                for t, c in zip(tasks, counts)},
                                      "map": self.nearest_prototype.tolist()}
            if self.gate is not None:
                d["glgf_gate"] = {"mean": round(float(self.gate.mean()), 4),
                                  "map": np.round(self.gate, 4).tolist()}
        if self.kind == "cea":
            d["components"] = [{"layer": c.layer, "component": c.index,
                                "strength": round(c.strength, 6),
                                "mean": round(float(c.map.mean()), 5),
                                "rms": round(float(np.sqrt((c.map ** 2).mean())), 5),
                                "positive_share": round(float((c.map > 0).mean()), 4)}
                               for c in self.components]
        return d


def _as_pretrained(model, weights, untrained: bool, device):
    from expertir.weights import Pretrained, load_pretrained

    if isinstance(model, Pretrained):
        return model
    if isinstance(model, nn.Module):
        name = type(model).__name__
        return Pretrained(model.to(device).eval(), name, f"{name} (given model)", None, {})
    return load_pretrained(model, weights, untrained, device)


def _as_image(image) -> tuple[np.ndarray, str]:
    from expertir.imageio import read_image

    if isinstance(image, (str, Path)):
        return read_image(image).rgb, str(image)
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
        raise ExpertirError(f"explain expects an H×W×3 image, got shape {arr.shape}")
    return arr, "image"


def bounded_copy(image: np.ndarray, max_pixels: int) -> tuple[torch.Tensor, float]:
    """(1 x 3 x h x w tensor of ``image`` with at most ``max_pixels`` pixels, scale factor).
    Larger images are scaled down with antialiased bilinear interpolation."""
    h, w = image.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    scale = min(1.0, math.sqrt(max_pixels / (h * w)))
    if scale < 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        scale = size[0] / h
    return x, scale


def _recorded(model: nn.Module, image: np.ndarray, max_pixels: int, device) -> tuple[dict, float, tuple]:
    """``aux`` of one forward pass on a copy of at most ``max_pixels`` pixels, on the CPU."""
    x, scale = bounded_copy(image, max_pixels)
    _, aux = model(x.to(device), return_aux=True)
    return _to_cpu(aux), scale, tuple(x.shape[-2:])


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value


def prototype_tasks(count: int) -> list[str]:
    return list(TASK_IDS[:count]) if count <= len(TASK_IDS) else [f"prototype {i}" for i in range(count)]


@torch.no_grad()
def mapped_layers(model: nn.Module, device="cpu") -> list[str]:
    """Names of the blocks whose routing or affinities ``model`` records (from a 32 x 32 run)."""
    _, aux = model(torch.full((1, 3, 32, 32), 0.5, device=device), return_aux=True)
    return list(aux.get("routing", {}))


def _pick_layers(available: list[str], wanted: list[str] | None, default: list[str]) -> list[str]:
    if not wanted:
        return default
    unknown = [w for w in wanted if w not in available]
    if unknown:
        raise ExpertirError(f"unknown layer(s) {', '.join(unknown)}; this model has: {', '.join(available)}")
    return list(wanted)


def first_of_each_stage(layers: list[str]) -> list[str]:
    """``encoder1.0, encoder2.0, latent4.0, ...`` -> the first block of each stage."""
    seen, out = set(), []
    for name in layers:
        stage = name.rstrip("0123456789.")
        if stage not in seen:
            seen.add(stage)
            out.append(name)
    return out


def _padded(size: int, model: nn.Module) -> int:
    """``size`` rounded up to the model's size multiple (what the network actually ran on)."""
    m = int(getattr(model, "size_multiple", 8))
    return -(-size // m) * m


def _explain_sler(model, aux: dict, ex: Explanation, layers: list[str] | None) -> None:
    protos = F.normalize(model.prototypes().detach().float().cpu(), dim=1)
    tasks = prototype_tasks(len(protos))
    cos = (F.normalize(aux["embedding_global"][0], dim=0) @ protos.T).numpy()
    temperature = float(getattr(model, "config", {}).get("temperature", getattr(model, "temperature", 0.1)))
    ex.estimate = DegradationEstimate(
        "prototypes", tasks, cos, torch.tensor(cos / temperature).softmax(0).numpy(),
        "cosine of g to the prototype", f"probabilities: softmax(cos / {temperature:g}), "
        "the temperature of the contrastive training loss")
    local = F.normalize(aux["embedding_local"][0], dim=0)
    ex.region = _padded(ex.aux_size[0], model) / local.shape[1] / ex.aux_scale
    ex.nearest_prototype = torch.einsum("dhw,td->thw", local, protos).argmax(0).numpy()
    gate = aux.get("glgf_gate")
    ex.gate = None if gate is None else gate[0, 0].numpy()
    routing = aux.get("routing", {})
    ex.usage = {k: v[0].mean((1, 2)).numpy() for k, v in routing.items()}
    for layer in _pick_layers(list(routing), layers, first_of_each_stage(list(routing))):
        ex.experts.append(ExpertMap(layer, routing[layer][0].argmax(0).numpy(), ex.usage[layer]))


def _branch_gains(model: nn.Module) -> dict[str, torch.Tensor]:
    """gamma of each adapted block's assembly branch, by block name."""
    backbone = getattr(model, "backbone", None)
    blocks = backbone.blocks() if hasattr(backbone, "blocks") else []
    return {b.site.name: b.branch.gamma.detach().float().flatten().cpu()
            for b in blocks if getattr(getattr(b, "branch", None), "gamma", None) is not None}


def _explain_cea(model, name: str, aux: dict, ex: Explanation, layers: list[str] | None,
                 device, progress: bool) -> None:
    probe = load_or_fit_probe(model, name, device, progress)
    p = probe.probabilities(probe_features(aux))[0].numpy()
    ex.estimate = DegradationEstimate(
        "probe", probe.tasks, p, p, "probe probability",
        f"linear probe on the affinities, fitted on {probe.samples} synthetic patches; "
        f"held-out accuracy {100 * probe.heldout_accuracy:.0f} % (one photo left out)")
    gains = _branch_gains(model)
    available = list(aux["routing"])
    default = [available[0], available[-1]] if len(available) > 1 else available
    padded_h = _padded(ex.aux_size[0], model)
    for layer in _pick_layers(available, layers, default):
        a, directions = aux["routing"][layer][0], aux["directions"][layer][0]
        gain = gains.get(layer, torch.ones(directions.shape[1]))
        strength = a.pow(2).mean((1, 2)).sqrt() * (directions * gain).norm(dim=1)
        cell = padded_h / a.shape[1] / ex.aux_scale
        for k in strength.argsort(descending=True)[:COMPONENTS].tolist():
            ex.components.append(AffinityComponent(layer, k, float(strength[k]), a[k].numpy(), cell))


@torch.no_grad()
def explain(image, model=None, weights: str | Path | None = None, *, untrained: bool = False,
            device: str | torch.device | None = None, layers: list[str] | None = None,
            max_aux_pixels: int = DEFAULT_MAX_AUX_PIXELS, name: str | None = None,
            progress: bool = False, restore_options: dict | None = None) -> Explanation:
    """Restore ``image`` and explain what the model did (see the module docstring).

    ``image``: a file path, or an H x W x 3 float array in [0, 1]. ``model``: a registered
    name (with its shipped weights, or random ones with ``untrained``), a loaded model, or a
    :class:`~expertir.weights.Pretrained`; ``weights``: a checkpoint file instead.
    ``layers``: the blocks whose routing (SLER-IR) or affinities (CEA) to map.
    ``progress`` shows a bar while CEA's probe is fitted the first time.
    ``restore_options``: keyword arguments for :func:`expertir.inference.restore` (e.g.
    ``max_memory``, ``progress``, ``on_plan``).
    """
    from expertir.inference import restore, select_device

    if max_aux_pixels < 1:
        raise ExpertirError(f"max_aux_pixels must be positive, got {max_aux_pixels}")
    device = select_device(device) if not isinstance(device, torch.device) else device
    rgb, label = _as_image(image)
    loaded = _as_pretrained(model, weights, untrained, device)
    net = loaded.model
    output = restore(net, rgb, device=device, **(restore_options or {}))
    ex = Explanation(name or label, loaded.name, loaded.source, "plain", rgb, output, None)
    aux, ex.aux_scale, ex.aux_size = _recorded(net, rgb, max_aux_pixels, device)
    if "embedding_global" in aux and callable(getattr(net, "prototypes", None)):
        ex.kind = "sler_ir"
        _explain_sler(net, aux, ex, layers)
    elif has_affinities(aux):
        ex.kind = "cea"
        _explain_cea(net, loaded.name, aux, ex, layers, device, progress)
    else:
        ex.no_estimate = (f"{loaded.name} records no degradation embedding or routing, "
                          "so there is no estimate to show")
        if layers:
            raise ExpertirError(f"{loaded.name} has no routed or adapted layers to map")
    return ex


def write_json(ex: Explanation, path: str | Path) -> None:
    """Write :meth:`Explanation.to_dict` to ``path`` (atomically)."""
    import json

    from expertir.atomic import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(ex.to_dict(), indent=1, ensure_ascii=False) + "\n")
