"""How much memory a model needs per pixel, and how much the machine can give.

**Measured, not guessed.** :func:`memory_profile` runs one forward pass at two sizes
(``MEASURE_SIZES``) and fits ``peak = fixed + per_pixel × pixels`` through the two peaks.
The peak is what the operating system has to give:

* **CPU (Linux)**: the growth of the process's resident set during the forward. The
  kernel's high-water mark (``VmHWM``) is reset just before it by writing ``5`` to
  ``/proc/self/clear_refs``, and glibc is asked to hand back its free heap first
  (``malloc_trim``) so the forward cannot hide in memory freed earlier. This is the number
  the out-of-memory killer and ``/usr/bin/time`` see, allocator overhead and the
  convolution library's work buffers included. ``tracemalloc`` does not see torch's
  allocator, and torch's profiler counts tensors only (not the allocator's overhead), so
  neither was used.
* **CUDA**: ``torch.cuda.max_memory_allocated`` during the forward (under the same
  autocast as :func:`~expertir.inference.restore`), minus what was allocated before.
* Elsewhere (macOS, Windows, MPS) there is no resettable peak counter, so nothing is
  measured and :mod:`expertir.inference.plan` falls back to a fixed tile.

RSS peaks are noisy by a few percent; the fit is clamped so that it never predicts less
than either measured peak (``fixed >= 0``). Results are cached per model architecture,
device type, thread count and torch version in ``memory.json`` under :func:`cache_dir`.

**Available memory** (:func:`available_memory`): on CPU, ``MemAvailable`` from
``/proc/meminfo``, lowered to the headroom of the process's cgroup when it has a limit
(containers); on CUDA, the device's free memory plus what torch holds cached but unused.
"""

from __future__ import annotations

import ctypes
import datetime
import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from expertir.cache import cache_dir
from expertir.errors import ExpertirError
from expertir.inference.device import autocast_for

#: Sides (px) of the two square inputs the per-pixel memory is measured on, per device type.
MEASURE_SIZES = {"cpu": (128, 256), "cuda": (256, 512)}
CACHE_FILE = "memory.json"


@dataclass
class MemoryProfile:
    """Peak memory of one forward pass: ``fixed_bytes + bytes_per_pixel × pixels``."""

    fixed_bytes: float
    bytes_per_pixel: float
    device: str  # device type the peaks were measured on
    sizes: tuple[int, int]  # square input sides measured
    peaks: tuple[int, int]  # measured peak bytes at those sizes
    method: str  # "rss" or "cuda_allocated"
    measured: str  # ISO date

    def need(self, pixels: float) -> float:
        """Predicted peak bytes of a forward pass over ``pixels`` pixels (batch included)."""
        return self.fixed_bytes + self.bytes_per_pixel * pixels


# ---------------------------------------------------------------------------- sizes

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


def parse_size(text: str) -> int:
    """Bytes from ``2GB``, ``1.5G``, ``800MB``, ``512MiB`` (GB = 10⁹ bytes, GiB = 2³⁰)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise ExpertirError(f"cannot read memory size {text!r} (write e.g. 2GB, 1.5GB or 800MB)")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ExpertirError(f"memory size must be positive (got {text!r})")
    return value


def format_size(n: float) -> str:
    """``1.5 GB`` / ``320 MB`` (powers of 1000)."""
    if n >= 10**9:
        return f"{n / 1e9:.1f} GB"
    if n >= 10**6:
        return f"{n / 1e6:.0f} MB"
    return f"{n / 1e3:.0f} kB"


# ---------------------------------------------------------------------------- available memory

def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_headroom() -> int | None:
    """Bytes the process's cgroup may still use (v2, then v1); None if it has no limit."""
    for limit_file, usage_file, stat_file, inactive in (
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current",
             "/sys/fs/cgroup/memory.stat", "inactive_file"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
             "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is None or usage is None or limit >= 2**60:
            continue
        reclaimable = 0
        try:
            for line in Path(stat_file).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == inactive:
                    reclaimable = int(value)
        except (OSError, ValueError):
            pass
        return max(0, limit - usage + reclaimable)
    return None


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes this process can still get on ``device``; None where it cannot be known."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type not in ("cpu", "mps"):  # MPS shares the system's memory
        return None
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    headroom = _cgroup_headroom()
    return available if headroom is None else min(v for v in (available, headroom) if v is not None)


# ---------------------------------------------------------------------------- peak of one forward

def _proc_status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"{key} not in /proc/self/status")


def _trim_heap() -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
            pass


def can_measure(device: torch.device | str) -> bool:
    """Whether :func:`forward_peak` works for ``device`` here (asked without resetting this
    process's peak: only a measurement may do that)."""
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type != "cpu" or not sys.platform.startswith("linux"):
        return False
    try:
        _proc_status("VmHWM")
    except OSError:
        return False
    return os.access("/proc/self/clear_refs", os.W_OK)


@torch.inference_mode()
def forward_peak(model: nn.Module, size: int, device: torch.device | str = "cpu") -> int:
    """Peak bytes one forward pass of ``model`` on a 1×3×size×size input adds (see module doc)."""
    device = torch.device(device)
    x = torch.rand(1, 3, size, size, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with autocast_for(device):
            y = model(x)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del y
        return int(peak)
    if not can_measure(device):
        raise ExpertirError(f"peak memory cannot be measured on {device} on this system")
    _trim_heap()
    base = _proc_status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark to the current RSS
    y = model(x)
    peak = _proc_status("VmHWM") - base
    del y
    return int(peak)


# ---------------------------------------------------------------------------- cached profile

def model_key(model: nn.Module, device: torch.device | str) -> str:
    """What the memory of a forward depends on: the architecture (class and its options, or
    parameter shapes), device type, CPU threads and torch version."""
    from expertir import __version__

    device = torch.device(device)
    cls = type(model)
    config = getattr(model, "config", None)
    if isinstance(config, dict):
        arch = json.dumps(config, sort_keys=True, default=str)
    else:
        arch = json.dumps([(n, list(p.shape)) for n, p in model.named_parameters()])
    digest = hashlib.sha256(arch.encode()).hexdigest()[:16]
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    return (f"{cls.__module__}.{cls.__qualname__}/{digest}/{device.type}/threads={threads}"
            f"/torch={torch.__version__}/expertir={__version__}")


_MEMO: dict[str, MemoryProfile] = {}


def _load_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(path: Path, key: str, profile: MemoryProfile) -> None:
    """Merge one entry into the cache file; an unwritable cache is not an error."""
    from expertir.atomic import atomic_path

    try:
        data = _load_cache(path)
        data[key] = asdict(profile)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass


def _fit(device: torch.device, sizes: tuple[int, int], peaks: tuple[int, int]) -> MemoryProfile:
    (s1, s2), (p1, p2) = sizes, peaks
    per_pixel = (p2 - p1) / (s2 * s2 - s1 * s1)
    fixed = p1 - per_pixel * s1 * s1
    if fixed < 0 or per_pixel <= 0:  # noise: never predict below a measured peak
        fixed, per_pixel = 0.0, max(p1 / (s1 * s1), p2 / (s2 * s2))
    return MemoryProfile(float(fixed), float(per_pixel), device.type, tuple(sizes), tuple(peaks),
                         "cuda_allocated" if device.type == "cuda" else "rss",
                         datetime.date.today().isoformat())


def _peaks_here(model: nn.Module, device: torch.device, sizes: tuple[int, int]) -> tuple[int, int]:
    model = model.to(device).eval()
    forward_peak(model, max(16, sizes[0] // 2), device)  # warm-up: lazy initialisation
    return tuple(forward_peak(model, s, device) for s in sizes)


def _rebuild_spec(model: nn.Module) -> dict | None:
    """How a child process can build the same architecture (a registered model's class and
    its ``config``), or None."""
    from expertir.models.backbone import RestorationModel

    if not isinstance(model, RestorationModel) or not isinstance(getattr(model, "config", None), dict):
        return None
    try:
        config = json.loads(json.dumps(model.config))
    except (TypeError, ValueError):
        return None
    return {"module": type(model).__module__, "qualname": type(model).__qualname__, "config": config}


def _peaks_in_child(spec: dict, sizes: tuple[int, int]) -> tuple[int, int] | None:
    """Peaks measured by :func:`measure_main` in a child process, on a fresh copy of the
    architecture (random weights: memory does not depend on them); None if that fails."""
    import subprocess

    job = {**spec, "sizes": list(sizes), "threads": torch.get_num_threads()}
    try:
        done = subprocess.run([sys.executable, "-c", "from expertir.inference.memory import measure_main; "
                               "measure_main()"], input=json.dumps(job),
                              capture_output=True, text=True, timeout=600)
        return tuple(json.loads(done.stdout.strip().splitlines()[-1])["peaks"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, IndexError):
        return None


def measure_profile(model: nn.Module, device: torch.device | str = "cpu",
                    sizes: tuple[int, int] | None = None) -> MemoryProfile:
    """Measure the peak of a forward at two sizes and fit ``fixed + per_pixel × pixels``.

    On CPU a registered model is measured in a fresh child process, so that this process's
    heap and its own peak-RSS record (what ``/usr/bin/time`` reports) are left untouched;
    other modules, and CUDA, are measured here.
    """
    device = torch.device(device)
    sizes = tuple(sizes or MEASURE_SIZES["cuda" if device.type == "cuda" else "cpu"])
    spec = _rebuild_spec(model) if device.type == "cpu" else None
    peaks = _peaks_in_child(spec, sizes) if spec else None
    if peaks is None:
        peaks = _peaks_here(model, device, sizes)
    return _fit(device, sizes, peaks)


def memory_profile(model: nn.Module, device: torch.device | str = "cpu", refresh: bool = False,
                   on_measure=None) -> MemoryProfile | None:
    """The model's :class:`MemoryProfile` on ``device``: from this process's memo, else the
    cache file, else measured now (and cached). ``refresh`` measures again. ``on_measure``
    (a callable taking a message) is told before a measurement starts. None where the peak
    cannot be measured (see the module doc)."""
    device = torch.device(device)
    if not can_measure(device):
        return None
    key = model_key(model, device)
    path = cache_dir() / CACHE_FILE
    if not refresh:
        if key in _MEMO:
            return _MEMO[key]
        entry = _load_cache(path).get(key)
        try:
            if entry:
                _MEMO[key] = MemoryProfile(**{**entry, "sizes": tuple(entry["sizes"]),
                                              "peaks": tuple(entry["peaks"])})
                return _MEMO[key]
        except (TypeError, KeyError):
            pass  # an entry from another version: measure again
    if on_measure is not None:
        on_measure(f"measuring the memory a forward pass needs on {device.type} "
                   f"(once per model; cached in {path})")
    profile = measure_profile(model, device)
    _MEMO[key] = profile
    _save_cache(path, key, profile)
    return profile


def measure_main() -> None:
    """The child process of :func:`measure_profile`: read a job (JSON on stdin), build the
    model, print its two peaks as JSON."""
    import importlib

    job = json.loads(sys.stdin.read())
    torch.set_num_threads(int(job["threads"]))
    cls = importlib.import_module(job["module"])
    for part in job["qualname"].split("."):
        cls = getattr(cls, part)
    model = cls(**job["config"])
    peaks = _peaks_here(model, torch.device("cpu"), tuple(job["sizes"]))
    print(json.dumps({"peaks": list(peaks)}))
