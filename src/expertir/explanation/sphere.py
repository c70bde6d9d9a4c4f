"""Per-dataset view of SLER-IR's degradation sphere.

:func:`embed_benchmark` embeds every test image of a benchmark and returns a
:class:`SphereReport`:

* **Blind classification**: the nearest prototype of the global embedding g of each image
  gives the guessed task. Per task: accuracy, family accuracy (the three noise levels
  count as one family), and region accuracy (the share of local embeddings l_p whose
  nearest prototype is the true task); plus the confusion matrix (true task x prototype).
* **Alignment and uniformity** (Wang & Isola, ICML 2020) of the global embeddings:
  alignment is the mean ``||u - v||^2`` over pairs of images of the same task (lower: tighter
  clusters), uniformity ``log mean exp(-2 ||u - v||^2)`` over all pairs
  (:func:`~expertir.models.sphere_losses.uniformity_loss`; lower: more evenly spread).
* **A 3-D picture** (:func:`sphere_coordinates`): the embeddings, centred and projected on
  the first three principal directions of the per-task means (each task counts once), then
  re-normalised onto the unit sphere; the prototypes go through the same map.

Only the degradation encoder runs (:func:`embed` stops the model's forward after it): the
embeddings are what ``model(x, return_aux=True)`` records as ``embedding_global`` and
``embedding_local``, about ten times faster. Images above ``max_pixels`` are scaled down
first, as in :func:`~.image.explain`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from expertir.data.layouts import family
from expertir.errors import ExpertirError
from expertir.explanation.image import DEFAULT_MAX_AUX_PIXELS, bounded_copy, prototype_tasks
from expertir.models.blocks import pad_to_multiple
from expertir.models.sphere_losses import half_squared_distance, uniformity_loss


def has_prototypes(model: nn.Module) -> bool:
    return callable(getattr(model, "prototypes", None))


class _EncoderDone(Exception):
    """Raised by a forward hook to stop the model right after its degradation encoder."""

    def __init__(self, embedding):
        super().__init__("degradation encoder done")
        self.embedding = embedding


def _stop_after_encoder(module, args, output):
    raise _EncoderDone(output)


@torch.no_grad()
def embed(model: nn.Module, image: np.ndarray, max_pixels: int = DEFAULT_MAX_AUX_PIXELS,
          device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(g: d, l: d x h x w) of one H x W x 3 image, unit vectors, on the CPU.

    The model's own forward runs (its padding, its call of the encoder), and a forward hook
    on ``model.encoder`` stops it once the embedding exists: the restoration backbone, which
    the embedding does not depend on, never runs. Models without an ``encoder`` run whole.
    """
    x = bounded_copy(image, max_pixels)[0].to(device)
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        _, aux = model(x, return_aux=True)
        g, local = aux["embedding_global"], aux["embedding_local"]
    else:
        handle = encoder.register_forward_hook(_stop_after_encoder)
        try:
            model(x, return_aux=True)
            raise ExpertirError("the degradation encoder of this model never ran")
        except _EncoderDone as done:
            g, local = done.embedding.global_, done.embedding.local
        finally:
            handle.remove()
    return F.normalize(g[0].float().cpu(), dim=0), F.normalize(local[0].float().cpu(), dim=0)


@dataclass
class SphereReport:
    """Embeddings of a benchmark's test images and the statistics of the module docstring."""

    model: str
    benchmark: str
    prototype_tasks: list[str]  # task of each prototype (the confusion matrix columns)
    tasks: list[str]  # true tasks found in the benchmark (the rows)
    set_names: dict[str, str]  # task -> test set name
    labels: np.ndarray  # N: index into ``tasks``
    names: list[str]  # N image names
    embeddings: np.ndarray  # N x d global embeddings
    prototypes: np.ndarray  # T x d
    region_hits: np.ndarray  # N: share of regions nearest to the true prototype
    missing: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def predicted(self) -> np.ndarray:
        """Nearest prototype of every global embedding (index into ``prototype_tasks``)."""
        d = half_squared_distance(torch.from_numpy(self.embeddings), torch.from_numpy(self.prototypes))
        return d.argmin(1).numpy()

    @property
    def true_prototype(self) -> np.ndarray:
        """N: index of each image's true task among the prototypes (-1 if it has none)."""
        idx = [self.prototype_tasks.index(t) if t in self.prototype_tasks else -1 for t in self.tasks]
        return np.array(idx)[self.labels]

    def confusion(self) -> np.ndarray:
        """Counts, rows = true task (``tasks``), columns = nearest prototype."""
        m = np.zeros((len(self.tasks), len(self.prototype_tasks)), dtype=int)
        np.add.at(m, (self.labels, self.predicted), 1)
        return m

    def alignment(self, mask: np.ndarray | None = None) -> float:
        """Mean ``||u - v||^2`` over same-task pairs (of the images in ``mask``)."""
        emb, lab = (self.embeddings, self.labels) if mask is None else (self.embeddings[mask], self.labels[mask])
        sq = 2 * half_squared_distance(torch.from_numpy(emb), torch.from_numpy(emb)).numpy()
        pairs = (lab[:, None] == lab[None]) & ~np.eye(len(lab), dtype=bool)
        return float(sq[pairs].mean()) if pairs.any() else float("nan")

    def uniformity(self) -> float:
        if len(self.embeddings) < 2:
            return float("nan")
        return float(uniformity_loss(torch.from_numpy(self.embeddings)))

    def rows(self) -> list[dict]:
        """One dict per task, then the overall row."""
        pred, true = self.predicted, self.true_prototype
        fam = np.array([family(t) for t in self.prototype_tasks])
        true_fam = np.array([family(t) for t in self.tasks])[self.labels]
        out = []
        for i, task in enumerate(self.tasks):
            m = self.labels == i
            out.append({"task": task, "test_set": self.set_names.get(task, ""), "images": int(m.sum()),
                        "accuracy": float((pred[m] == true[m]).mean()),
                        "family_accuracy": float((fam[pred[m]] == true_fam[m]).mean()),
                        "region_accuracy": float(self.region_hits[m].mean()),
                        "alignment": self.alignment(m)})
        out.append({"task": "all", "test_set": "", "images": len(self.labels),
                    "accuracy": float((pred == true).mean()),
                    "family_accuracy": float((fam[pred] == true_fam).mean()),
                    "region_accuracy": float(self.region_hits.mean()), "alignment": self.alignment()})
        return out

    def to_markdown(self) -> str:
        lines = ["| task | test set | images | accuracy (nearest prototype) | family accuracy | "
                 "region accuracy | alignment ↓ |", "|---|---|---:|---:|---:|---:|---:|"]
        for r in self.rows():
            task = f"**{r['task']}**" if r["task"] == "all" else r["task"]
            lines.append(f"| {task} | {r['test_set']} | {r['images']} | {100 * r['accuracy']:.1f} % | "
                         f"{100 * r['family_accuracy']:.1f} % | {100 * r['region_accuracy']:.1f} % | "
                         f"{r['alignment']:.3f} |")
        lines.append("")
        lines.append(f"Uniformity ↓ of all {len(self.labels)} global embeddings: {self.uniformity():.3f} "
                     "(log of the mean of exp(−2‖u−v‖²) over pairs; about −4 for points spread evenly "
                     "over a high-dimensional sphere, higher when they cluster by task). Alignment: mean "
                     "‖u−v‖² over pairs of images of the same task.")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"model": self.model, "benchmark": self.benchmark, "rows": self.rows(),
                "uniformity": self.uniformity(), "prototype_tasks": self.prototype_tasks,
                "tasks": self.tasks, "confusion": self.confusion().tolist(),
                "images": [{"name": n, "task": self.tasks[lab], "predicted": self.prototype_tasks[p],
                            "region_accuracy": round(float(r), 4)}
                           for n, lab, p, r in zip(self.names, self.labels, self.predicted, self.region_hits)],
                "missing": self.missing, "errors": self.errors}


def load_test_sets(specs: list[str], data_root, layout: str = "auto"):
    """Several benchmark specs (e.g. ``["aio3", "aio5"]``) as one benchmark in which each
    task appears once: aio3 + aio5 hold denoise_25, derain and dehaze once each. A part
    missing from one spec but found through another is not reported missing."""
    from expertir.data.benchmarks import Benchmark, load_benchmarks

    names = [s.strip() for s in specs if s.strip()]
    if not names:
        raise ExpertirError("name a benchmark, e.g. aio5, or aio3 aio5")
    loaded = load_benchmarks(names, data_root, layout)
    tasks, seen = [], set()
    for ts in loaded.tasks:
        if ts.task not in seen:
            seen.add(ts.task)
            tasks.append(ts)
    missing = list(dict.fromkeys(m for m in loaded.missing if m.split(":")[0] not in seen))
    return Benchmark(" + ".join(names), tasks, missing)


def embed_benchmark(model: nn.Module, name: str, benchmark, max_pixels: int = DEFAULT_MAX_AUX_PIXELS,
                    device="cpu", progress: bool = True) -> SphereReport:
    """Embed every image of a loaded :class:`~expertir.data.benchmarks.Benchmark`."""
    from tqdm import tqdm

    if not has_prototypes(model):
        raise ExpertirError(f"{name} has no degradation prototypes: the embedding sphere needs SLER-IR")
    protos = F.normalize(model.prototypes().detach().float().cpu(), dim=1)
    proto_tasks = prototype_tasks(len(protos))
    tasks = [ts.task for ts in benchmark]
    if not tasks:
        raise ExpertirError("no test set of the benchmark was found:\n  " + "\n  ".join(benchmark.missing))
    labels, names, embeddings, hits = [], [], [], []
    bar = tqdm(total=sum(len(ts) for ts in benchmark), desc="embedding", unit="img",
               disable=not progress, dynamic_ncols=True)
    errors = []
    for i, ts in enumerate(benchmark):
        true = proto_tasks.index(ts.task) if ts.task in proto_tasks else -1
        for sample in ts:
            g, local = embed(model, sample.degraded, max_pixels, device)
            nearest = torch.einsum("dhw,td->thw", local, protos).argmax(0)
            labels.append(i)
            names.append(sample.name)
            embeddings.append(g.numpy())
            hits.append(float((nearest == true).float().mean()))
            bar.update()
        errors += ts.errors
        bar.update(len(ts.errors))
    bar.close()
    if not embeddings:
        raise ExpertirError("no test image could be read:\n  " + "\n  ".join(errors))
    return SphereReport(name, benchmark.spec, proto_tasks, tasks, {ts.task: ts.name for ts in benchmark},
                        np.array(labels), names, np.stack(embeddings), protos.numpy(), np.array(hits),
                        list(benchmark.missing), errors)


def _extend_basis(basis: np.ndarray, candidates: np.ndarray, size: int = 3) -> np.ndarray:
    """Add the ``candidates`` directions, made orthogonal to ``basis``, until it has ``size`` rows."""
    rows = list(basis)
    for v in candidates:
        for b in rows:
            v = v - (v @ b) * b
        if np.linalg.norm(v) > 1e-6 and len(rows) < size:
            rows.append(v / np.linalg.norm(v))
    return np.array(rows)


def sphere_coordinates(embeddings: np.ndarray, labels: np.ndarray,
                       prototypes: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(N x 3 points, T x 3 prototypes on the unit sphere, share of the task means' variance
    kept).

    The directions are the principal directions of the per-task mean embeddings, so each task
    counts once however many images it has (a plain PCA of 100 rain images and 2 hazy ones
    would spend its directions on the rain); with fewer than four tasks the principal
    directions of the images, then of the prototypes, complete the basis.
    """
    means = np.stack([embeddings[labels == i].mean(0) for i in np.unique(labels)])
    centre = means.mean(0)
    _, s, vt = np.linalg.svd(means - centre, full_matrices=False)
    basis = _extend_basis(np.zeros((0, embeddings.shape[1])), vt[s > 1e-9][:3])
    for extra in (embeddings - embeddings.mean(0), prototypes - prototypes.mean(0)):
        if len(basis) < 3 and len(extra) > 1:
            basis = _extend_basis(basis, np.linalg.svd(extra, full_matrices=False)[2])

    def onto_sphere(v):
        p = (v - centre) @ basis.T
        return p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)

    share = float((s[:3] ** 2).sum() / (s ** 2).sum()) if (s ** 2).sum() > 0 else 1.0
    return onto_sphere(embeddings), onto_sphere(prototypes), share
