"""Efficiency of every registered model: parameters, FLOPs, latency, GPU memory .

* **Parameters**: all parameters of the model (trainable or not).
* **FLOPs**: :class:`torch.utils.flop_counter.FlopCounterMode` on one forward pass of a
  1×3×S×S input. It counts matrix products and convolutions (plus attention kernels) with
  FLOPs = 2 × multiply-accumulates; element-wise operations, norms and softmax are not
  counted. Papers that quote "FLOPs" as MACs give half these numbers.
* **CPU latency**: median wall time of ``runs`` forward passes (after ``warmup`` passes)
  under ``torch.inference_mode`` with ``torch.set_num_threads(threads)``. The models are
  timed *interleaved* in one process (:func:`measure_all`): round r times one pass of every
  model, in an order that rotates from round to round, so that other work on a shared
  machine slows every model alike instead of whichever happened to run at a busy moment.
* **GPU latency / peak memory**: only when CUDA is available: the same interleaved medians
  timed with CUDA synchronisation, and ``torch.cuda.max_memory_allocated`` during each
  model's passes.
* **Memory per pixel**: :func:`expertir.inference.memory.measure_profile`: the growth of
  the peak of one forward pass between two input sizes (CPU: peak RSS), per pixel; what
  ``expertir restore`` plans its tiles from.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm


@dataclass
class EfficiencyRow:
    model: str
    params: int
    flops: int
    cpu_ms: float | None
    gpu_ms: float | None = None
    gpu_peak_mb: float | None = None
    cpu_bytes_per_px: float | None = None


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def count_flops(model: nn.Module, size: int, device="cpu") -> int:
    """FLOPs (2 × MACs) of one forward pass on a 1×3×size×size input."""
    x = torch.rand(1, 3, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def _timed_pass(model: nn.Module, x: torch.Tensor, sync) -> float:
    """Milliseconds of one forward pass."""
    start = time.perf_counter()
    model(x)
    sync()
    return (time.perf_counter() - start) * 1000


@torch.inference_mode()
def interleaved_latencies_ms(models: list[nn.Module], size: int, runs: int = 5, warmup: int = 1,
                             device="cpu", progress: bool = False) -> list[float]:
    """Median milliseconds per model of ``runs`` forward passes on a 1×3×size×size input,
    taken in rounds (one pass of every model per round, rotating order) after ``warmup``
    untimed passes of each."""
    device = torch.device(device)
    x = torch.rand(1, 3, size, size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for model in models:
        for _ in range(warmup):
            model(x)
    sync()
    times: list[list[float]] = [[] for _ in models]
    for r in tqdm(range(runs), desc=f"timing {device.type}", disable=not progress):
        for k in range(len(models)):
            i = (k + r) % len(models)
            times[i].append(_timed_pass(models[i], x, sync))
    return [statistics.median(t) for t in times]


def median_latency_ms(model: nn.Module, size: int, runs: int = 5, warmup: int = 1,
                      device="cpu") -> float:
    """Median milliseconds of ``runs`` timed forward passes after ``warmup`` untimed ones."""
    return interleaved_latencies_ms([model], size, runs, warmup, device)[0]


def cpu_name() -> str:
    """The CPU model as the OS names it (``/proc/cpuinfo`` on Linux), else the platform's."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def preset_names() -> list[str]:
    """Every registered preset (``restormer_tiny`` ...), and families that have no preset."""
    from expertir.models import list_models, resolve

    names = list_models()
    with_presets = {resolve(n)[0] for n in names if resolve(n)[1]}
    order = {"tiny": 0, "small": 1, "base": 2}
    chosen = [n for n in names if resolve(n)[1] or n not in with_presets]
    return sorted(chosen, key=lambda n: (resolve(n)[0], order.get(n.rsplit("_", 1)[-1], 3), n))


def measure_all(names: list[str], size: int = 256, runs: int = 5, warmup: int = 1, cpu: bool = True,
                gpu: bool | None = None, progress: bool = False) -> list[EfficiencyRow]:
    """Build every model of ``names`` with random weights and measure them side by side
    (latencies interleaved, see the module docstring; GPU columns only with CUDA)."""
    from expertir.models import build_model

    models = [build_model(name).eval() for name in names]
    rows = [EfficiencyRow(name, count_params(m), count_flops(m, size), None) for name, m in zip(names, models)]
    if cpu:
        for row, ms in zip(rows, interleaved_latencies_ms(models, size, runs, warmup, "cpu", progress)):
            row.cpu_ms = ms
        for row, model in zip(rows, models):
            row.cpu_bytes_per_px = _bytes_per_pixel(model)
    if gpu is None:
        gpu = torch.cuda.is_available()
    if gpu:
        models = [m.to("cuda") for m in models]
        for row, ms in zip(rows, interleaved_latencies_ms(models, size, max(runs, 10), max(warmup, 3), "cuda",
                                                          progress)):
            row.gpu_ms = ms
        for row, model in zip(rows, models):  # peak memory: each model alone
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            interleaved_latencies_ms([model], size, 1, 0, "cuda")
            row.gpu_peak_mb = torch.cuda.max_memory_allocated() / 2**20
    return rows


def measure(name: str, size: int = 256, runs: int = 5, warmup: int = 1, cpu: bool = True,
            gpu: bool | None = None) -> EfficiencyRow:
    """One model's row (:func:`measure_all` for a single model)."""
    return measure_all([name], size, runs, warmup, cpu, gpu)[0]


def _bytes_per_pixel(model: nn.Module) -> float | None:
    """Measured CPU peak memory per pixel (None where it cannot be measured), from the
    per-model cache ``expertir restore`` also reads, measured now if not there."""
    from expertir.inference.memory import memory_profile

    profile = memory_profile(model, "cpu")
    return None if profile is None else profile.bytes_per_pixel


def efficiency_markdown(rows: list[EfficiencyRow], size: int, setting: str) -> str:
    """The efficiency table; GPU columns appear only if some row has them."""
    from expertir.inference.memory import MEASURE_SIZES

    small, large = MEASURE_SIZES["cpu"]
    gpu = any(r.gpu_ms is not None for r in rows)
    header = ["Model", "Params (M)", f"GFLOPs @{size}²", "CPU latency (ms)", "CPU memory (kB/px)"]
    header += ["GPU latency (ms)", "GPU peak memory (MB)"] if gpu else []
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for r in rows:
        cells = [r.model, f"{r.params / 1e6:.2f}", f"{r.flops / 1e9:.1f}",
                 "–" if r.cpu_ms is None else f"{r.cpu_ms:.0f}",
                 "–" if r.cpu_bytes_per_px is None else f"{r.cpu_bytes_per_px / 1000:.2f}"]
        if gpu:
            cells += ["–" if r.gpu_ms is None else f"{r.gpu_ms:.1f}",
                      "–" if r.gpu_peak_mb is None else f"{r.gpu_peak_mb:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = (f"\n{setting}\nFLOPs = 2 × multiply-accumulates (torch.utils.flop_counter: "
             "convolutions and matrix products; element-wise ops not counted). "
             "Latency: median of timed runs after warm-up, batch 1, float32; the models timed "
             "interleaved in one process (one pass of each per round). "
             "CPU memory: growth of the peak RSS of one forward pass per input pixel, "
             f"between {small}² and {large}² inputs (the figure `expertir restore` plans tiles from)."
             + ("" if gpu else " No CUDA device: GPU latency and memory columns omitted."))
    return "\n".join(lines) + "\n" + notes + "\n"


def rows_to_dicts(rows: list[EfficiencyRow]) -> list[dict]:
    return [asdict(r) for r in rows]
