"""The rows of an evaluation table: classical baselines and networks, built from names.

:func:`build_methods` is what ``expertir eval --method/--model/--weights`` and the results
pipeline (``make results``) both use, so one run can hold classical baselines, shipped
models and any number of checkpoint files, each image read once for all of them.

Row names: a classical method by its name, a shipped model by its registered name, a
checkpoint by the model named in its metadata. When one model has several rows (its shipped
weights and a candidate file, or several files), every file row also names its file
(``sler_ir_tiny (run0/final)``), so no two rows share a name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from expertir.errors import ExpertirError
from expertir.evaluation.classical import make_classical
from expertir.evaluation.runner import ModelMethod


def build_methods(methods: Sequence[str] = (), models: Sequence[str] = (),
                  weights: Sequence[str | Path] = (), untrained: bool = False,
                  sigma: float | None = None, tile: int | str | None = None,
                  device="cpu", exposure_guard: bool = True, self_ensemble: int = 1) -> list:
    """Classical ``methods``, then registered ``models`` with their shipped weights (random
    weights with ``untrained``), then checkpoint files ``weights``, in that order.

    ``sigma`` is the fallback noise level of bm3d/nlm, ``tile`` restores the networks in
    tiles (``"auto"``: only where a whole image does not fit the memory budget);
    ``exposure_guard=False`` measures the networks without the exposure guard of
    :func:`expertir.inference.restore`; ``self_ensemble`` averages that many flipped and
    transposed views (:func:`expertir.inference.restore`).
    """
    from expertir.checkpoint import read_metadata
    from expertir.weights import load_pretrained

    methods, models = list(dict.fromkeys(methods)), list(dict.fromkeys(models))
    weights = [str(w) for w in dict.fromkeys(weights)]
    if not (methods or models or weights):
        raise ExpertirError("say what to evaluate: --weights FILE, --model NAME or --method M")
    if untrained and not models:
        raise ExpertirError("--untrained goes with --model")
    rows = [make_classical(n, sigma=sigma) for n in methods]
    networks: list[tuple[str, str | None]] = [(name, None) for name in models]
    for path in weights:
        stem = Path(path).stem
        name = read_metadata(path).get("model", stem) if path.endswith(".safetensors") else stem
        networks.append((name, path))
    counts = Counter([m.name for m in rows] + [name for name, _ in networks])
    tiles = {None: "", "auto": ", tiled where needed (auto)"}.get(tile, f", tiles of {tile}")
    tiles += ", with the exposure guard" if exposure_guard else ", without the exposure guard"
    tiles += f", self-ensemble of {self_ensemble} views" if self_ensemble > 1 else ""
    for name, path in networks:
        if counts[name] > 1 and path:  # several rows of one model: every file row names its file
            name = f"{name} ({Path(path).parent.name}/{Path(path).stem})"
        loaded = load_pretrained(None if path else name, path, untrained, device)
        rows.append(ModelMethod(name, loaded.model, f"{loaded.source}, on {device}{tiles}", tile, device,
                                pretrained=loaded, exposure_guard=exposure_guard,
                                self_ensemble=self_ensemble))
    return rows
