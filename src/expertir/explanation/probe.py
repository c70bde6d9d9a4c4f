"""A linear degradation probe for models without prototypes (CEA).

CEA has no degradation embedding: its hyper-adapters turn each image into low-rank bases,
and every token's signed affinities to them decide its update. Whether those affinities
tell degradations apart is measured, not assumed, by a linear probe:

* **Features**: for every adapted block and rank component, the mean and the RMS over the
  tokens of the affinity map ``aux["routing"][block]`` (2 x rank numbers per block).
* **Data**: training-style synthetic patches: crops of the scikit-image colour photos
  degraded by each task's training synthesiser (:data:`expertir.data.degradations.SYNTHESIZERS`),
  with fixed seeds, so the probe of a given model is always the same.
* **Fit**: multinomial logistic regression on standardised features (L-BFGS, L2 penalty).
  The held-out accuracy is measured leaving one photo out at a time; the stored probe is
  then fitted on all patches.
* **Cache**: fitted once per model weights (the key hashes the configuration and every
  tensor of the state dict) and stored as JSON in ``probes/`` of the user's cache folder
  (:func:`expertir.cache.cache_dir`). A damaged cache file is fitted again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from expertir.atomic import atomic_path
from expertir.cache import cache_dir
from expertir.data.tasks import TASK_IDS

#: Bump when features, data or fit change, so old cache files are not reused.
PROBE_VERSION = 1
PATCH = 64  # pixels per side of a probe patch
CROPS_PER_PHOTO = 6
L2_PENALTY = 1e-3


def model_key(model: nn.Module) -> str:
    """A short hash of the model's configuration and weights: one probe per set of weights."""
    h = hashlib.sha256(json.dumps(getattr(model, "config", {}), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def has_affinities(aux: dict) -> bool:
    """Whether a model's recorded aux holds CEA-style signed affinities (and bases)."""
    return bool(aux.get("bases")) and bool(aux.get("routing"))


def probe_features(aux: dict) -> torch.Tensor:
    """B x F features from the affinities of every adapted block (see the module docstring)."""
    feats = []
    for site in sorted(aux["routing"]):
        a = aux["routing"][site].float()
        feats += [a.mean((2, 3)), a.pow(2).mean((2, 3)).sqrt()]
    return torch.cat(feats, 1).cpu()


@dataclass
class DegradationProbe:
    """Multinomial logistic regression on standardised :func:`probe_features`."""

    tasks: list[str]
    mean: torch.Tensor  # F
    scale: torch.Tensor  # F
    weight: torch.Tensor  # F x T
    bias: torch.Tensor  # T
    heldout_accuracy: float  # leave-one-photo-out accuracy on the synthetic patches
    samples: int  # patches it was fitted on

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """B x F features -> B x T task probabilities (rows sum to one)."""
        return self.logits(features).softmax(1)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return ((features.float() - self.mean) / self.scale) @ self.weight + self.bias

    @classmethod
    def fit(cls, features: torch.Tensor, labels: torch.Tensor, tasks: list[str],
            heldout_accuracy: float = float("nan")) -> DegradationProbe:
        mean, scale = features.mean(0), features.std(0) + 1e-6
        z = (features - mean) / scale
        weight = torch.zeros(z.shape[1], len(tasks), requires_grad=True)
        bias = torch.zeros(len(tasks), requires_grad=True)
        opt = torch.optim.LBFGS([weight, bias], max_iter=100, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(z @ weight + bias, labels) + L2_PENALTY * weight.pow(2).sum()
            loss.backward()
            return loss

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a problem this small only loses time to thread hand-offs
        try:
            with torch.enable_grad():
                opt.step(closure)
        finally:
            torch.set_num_threads(threads)
        return cls(list(tasks), mean, scale, weight.detach(), bias.detach(), heldout_accuracy,
                   len(labels))

    def to_dict(self) -> dict:
        return {"version": PROBE_VERSION, "tasks": self.tasks, "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "weight": self.weight.tolist(),
                "bias": self.bias.tolist(), "heldout_accuracy": self.heldout_accuracy,
                "samples": self.samples, "patch": PATCH}

    @classmethod
    def from_dict(cls, d: dict) -> DegradationProbe:
        if d.get("version") != PROBE_VERSION:
            raise ValueError(f"probe version {d.get('version')} is not {PROBE_VERSION}")
        t = lambda key: torch.tensor(d[key], dtype=torch.float32)  # noqa: E731
        probe = cls(list(d["tasks"]), t("mean"), t("scale"), t("weight"), t("bias"),
                    float(d["heldout_accuracy"]), int(d["samples"]))
        if probe.weight.shape != (len(probe.mean), len(probe.tasks)):
            raise ValueError("probe weight has the wrong shape")
        return probe


def synthetic_patches(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N x 3 x PATCH x PATCH patches, task labels, photo index) from the scikit-image
    photos, every task applied to each crop."""
    from expertir.data.degradations import SYNTHESIZERS
    from expertir.data.train import skimage_photos

    rng = np.random.default_rng(seed)
    patches, labels, groups = [], [], []
    for p, photo in enumerate(skimage_photos()):
        for c in range(CROPS_PER_PHOTO):
            y0 = int(rng.integers(0, photo.shape[0] - PATCH + 1))
            x0 = int(rng.integers(0, photo.shape[1] - PATCH + 1))
            clean = photo[y0:y0 + PATCH, x0:x0 + PATCH]
            for t, task in enumerate(TASK_IDS):
                patches.append(SYNTHESIZERS[task](clean, 1000 * p + 10 * c + t))
                labels.append(t)
                groups.append(p)
    x = torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2).float()
    return x, torch.tensor(labels), torch.tensor(groups)


@torch.no_grad()
def fit_probe(model: nn.Module, device: torch.device | str = "cpu", progress: bool = True) -> DegradationProbe:
    """Fit the probe of ``model`` on :func:`synthetic_patches` (a few seconds for tiny models)."""
    from tqdm import tqdm

    x, labels, groups = synthetic_patches()
    feats = []
    batches = range(0, len(x), len(TASK_IDS))
    for i in tqdm(batches, desc="fitting the degradation probe (once per model)", unit="batch",
                  leave=False, disable=not progress, dynamic_ncols=True):
        _, aux = model(x[i:i + len(TASK_IDS)].to(device), return_aux=True)
        feats.append(probe_features(aux))
    feats = torch.cat(feats)
    correct = 0
    for g in groups.unique():
        held = groups == g
        probe = DegradationProbe.fit(feats[~held], labels[~held], TASK_IDS)
        correct += int((probe.logits(feats[held]).argmax(1) == labels[held]).sum())
    return DegradationProbe.fit(feats, labels, TASK_IDS, heldout_accuracy=correct / len(labels))


def load_or_fit_probe(model: nn.Module, name: str, device: torch.device | str = "cpu",
                      progress: bool = True) -> DegradationProbe:
    """The cached probe of these weights, fitted and stored on first use."""
    path = cache_dir() / "probes" / f"{name}-{model_key(model)}.json"
    if path.is_file():
        try:
            return DegradationProbe.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError):
            pass  # damaged or older cache file: fit again below
    probe = fit_probe(model, device, progress)
    try:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(probe.to_dict()))
    except OSError:
        pass  # a read-only cache only costs the fit next time
    return probe
