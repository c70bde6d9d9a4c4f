import importlib.util
import os
import sys
from pathlib import Path

from expertir.threads import set_openmp_defaults

set_openmp_defaults()  # before torch loads: the suite shares the cores with other work

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from expertir.models import build_model

# Small, steady CPU runs.
torch.set_num_threads(min(2, os.cpu_count() or 1))

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True, scope="session")
def _memory_cache(tmp_path_factory):
    """Measured memory per model goes to a fresh cache folder, not the user's."""
    old = os.environ.get("EXPERTIR_CACHE_DIR")
    os.environ["EXPERTIR_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("EXPERTIR_CACHE_DIR", None)
    else:
        os.environ["EXPERTIR_CACHE_DIR"] = old


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is faster than two fighting for shared cores, and steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour image (float32 H×W×3 in [0,1]) — natural-ish statistics."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, max(2, h // 8), max(2, w // 8), generator=g)
    img = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    return img.clamp(0, 1)[0].permute(1, 2, 0).numpy().astype(np.float32)


def seeded_model(name: str, seed: int = 0, **options) -> torch.nn.Module:
    """``build_model(name, **options)`` with weights drawn from ``seed``, in eval mode."""
    torch.manual_seed(seed)
    return build_model(name, **options).eval()


def load_benchmark(name: str):
    """The script ``benchmarks/<name>.py`` imported as a module (benchmarks are no package)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
