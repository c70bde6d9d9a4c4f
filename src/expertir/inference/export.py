"""ONNX export of a restoration model, checked against PyTorch with ONNX Runtime.

Design choices:

* **One graph for any image size.** Batch, height and width are dynamic (named ``batch``,
  ``height``, ``width`` in the file). The padding to the model's ``size_multiple``
  (reflection, bottom and right) and the crop back are in the graph: a caller feeds an
  N×3×H×W float32 RGB batch in [0, 1] and gets the restored batch of the same shape.
  Smallest side: ``size_multiple`` pixels (16 for SLER-IR, 8 for the others); below that
  PyTorch switches to replicate padding, which the graph does not have.
* **Exporter: ``torch.export`` in strict mode (TorchDynamo), then ``torch.onnx`` on the
  exported program.** The two usual routes failed on the shipped models: the TorchScript
  exporter (``dynamo=False``) stops at ``LayerNorm2d``, whose normalised shape is read
  from the input's shape and becomes a non-constant list under dynamic axes;
  ``torch.onnx.export(module, dynamo=True)`` captures with non-strict ``torch.export``,
  where SLER-IR's degradation encoder (``len(tokens)``, ``min(h, window)``) turns into
  Python ints, so its graph fails at any other token count. Dynamo keeps them symbolic.
* **Export-time stand-ins, same outputs** (the model files are not changed):
  :class:`PaddedForward` replaces ``model.forward`` (the same pad / ``restore_padded`` /
  crop, written so torch's symbolic shapes see that the padded side is a multiple; see
  there), and :func:`adaptive_avg_pool2d_by_matmul` replaces torch's decomposition of
  adaptive average pooling (CEA's hyper-adapter), whose gather indices are sized at trace
  time.
* **The trace input exercises every shape branch.** SLER-IR's encoder pads its token grid
  to whole windows under a Python ``if`` on the shape, and the graph keeps the branch the
  trace input took. So the trace input is larger than the training patch (128 px, the
  encoder window) and not a multiple of 16: the padded branches are traced, and they are
  exact with zero padding too. :data:`CHECK_SIZES` covers both regimes.
* **SLER-IR is exported with ``expert_compute="dense"``.** The default sparse path runs an
  expert only on the images of the batch that choose it (``index_add`` over a data-dependent
  index list), which has no static graph; dense runs every expert on every image and
  weights it by its routing weight (zero where not chosen), which gives the same output
  (:mod:`expertir.models.experts`). The model is rebuilt with that option and given the
  same weights; the top-k routing itself exports as ONNX ``TopK``.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from expertir import __version__
from expertir.atomic import atomic_path
from expertir.errors import ExpertirError
from expertir.models.blocks import ForwardContext

#: Trace input (N, C, H, W): batch 2 so the batch stays dynamic (torch specialises size 1),
#: sides above 128 px and not multiples of 16 (see the module docstring).
TRACE_SHAPE = (2, 3, 149, 163)
#: Image sizes of :func:`check_onnx`: a multiple of 16 inside one encoder window, and a size
#: that is not a multiple of 8 or 16 and spans several windows.
CHECK_SIZES = ((64, 96), (141, 187))
INPUT_NAME, OUTPUT_NAME = "image", "restored"
SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples" / "input"
CHECK_SAMPLE = "mixed_cbsd68_102061.png"


def _need_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExpertirError(f"ONNX export needs the 'export' extra ({exc.name} is missing): "
                            f"pip install 'expertir[export]'") from None


class PaddedForward(nn.Module):
    """``model.forward`` for export: pad to the size multiple, ``restore_padded``, crop.

    The same computation as :meth:`RestorationModel.forward` for images of at least
    ``size_multiple`` pixels a side, with the padding written as
    ``m * ceil(h / m) - h`` instead of ``(-h) % m``. Both are equal, but only the first
    lets torch's symbolic shapes see that the padded side is a multiple of ``m``: with the
    second, every later halving of the image (the U-Net's pixel-unshuffle) leaves sizes
    such as ``Hp // (Hp // 2)`` for the factor 2, channel counts become symbolic and CEA's
    ``1 / sqrt(C)`` becomes a ``sym_sqrt`` node that has no ONNX translation."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.multiple = int(getattr(model, "size_multiple", 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        pad_h, pad_w = m * ((h + m - 1) // m) - h, m * ((w + m - 1) // m) - w
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        return self.model.restore_padded(padded, ForwardContext())[..., :h, :w]


def _bin_means(bins: int, size, like: torch.Tensor) -> torch.Tensor:
    """(bins × size) matrix whose row i averages adaptive pooling's bin i,
    ``[floor(i·size/bins), ceil((i+1)·size/bins))``."""
    i = torch.arange(bins, device=like.device)
    start, end = (i * size) // bins, ((i + 1) * size + bins - 1) // bins
    pos = torch.arange(size, device=like.device)
    inside = ((pos[None] >= start[:, None]) & (pos[None] < end[:, None])).to(like.dtype)
    return inside / inside.sum(1, keepdim=True)


def adaptive_avg_pool2d_by_matmul(x: torch.Tensor, output_size) -> torch.Tensor:
    """``F.adaptive_avg_pool2d`` as two products with bin-averaging matrices.

    torch's own decomposition sizes its gather indices from the trace input, so the ONNX
    graph of CEA's hyper-adapter (which pools features to a fixed grid) fails on other image
    sizes; this one builds the bins from the runtime size (ONNX ``Range``, comparisons and
    ``MatMul``) and gives the same averages."""
    gh, gw = output_size
    return _bin_means(gh, x.shape[-2], x) @ x @ _bin_means(gw, x.shape[-1], x).transpose(0, 1)


#: Operators replaced before conversion, and by what.
DECOMPOSITIONS = {
    torch.ops.aten._adaptive_avg_pool2d.default: adaptive_avg_pool2d_by_matmul,
    torch.ops.aten.adaptive_avg_pool2d.default: adaptive_avg_pool2d_by_matmul,
}


def exportable(model: nn.Module, name: str) -> nn.Module:
    """``model`` (registered as ``name``) in a form that exports to one graph with the same
    outputs: SLER-IR rebuilt with ``expert_compute="dense"`` and the same weights (see the
    module docstring), wrapped in :class:`PaddedForward`. ``model`` itself is unchanged."""
    from expertir.models import build_model

    config = getattr(model, "config", {})
    if config.get("attention_window"):
        # The graph would keep the windowed branch of the trace input for every image size.
        raise ExpertirError(f"cannot export {name} with attention_window={config['attention_window']}: "
                            f"the ONNX graph attends over the whole image; build it with attention_window=0")
    if config.get("expert_compute", "dense") != "dense":
        dense = build_model(name, **{**config, "expert_compute": "dense"})
        dense.load_state_dict(model.state_dict(), strict=True)
        model = dense
    return PaddedForward(model).cpu().eval()


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's internal warnings (missing torchvision ops, sympy deprecations)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _root_cause(exc: BaseException) -> str:
    """The first line of the innermost exception: the exporter wraps the useful one."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def export_onnx(model: nn.Module, path: str | Path, name: str, source: str = "") -> Path:
    """Export ``model`` (registered as ``name``) to the ONNX file ``path``, written
    atomically; returns ``path``.

    Input ``image`` (N×3×H×W float32 RGB in [0, 1]), output ``restored`` (same shape),
    N, H and W dynamic. ``name`` and ``source`` (where the weights came from) go into the
    file's metadata with ``size_multiple`` and the expertir version.
    """
    _need_onnx()
    import onnx

    path = Path(path)
    if path.is_dir():
        raise ExpertirError(f"{path}: is a folder; give the ONNX file to write (e.g. model.onnx)")
    net = exportable(model, name)
    example = torch.rand(*TRACE_SHAPE)
    dim = torch.export.Dim.DYNAMIC
    try:
        with _quiet():
            program = torch.export.export(net, (example,), strict=True,
                                          dynamic_shapes={"x": {0: dim, 2: dim, 3: dim}})
            if any(node.target in DECOMPOSITIONS for node in program.graph.nodes):
                program = program.run_decompositions(DECOMPOSITIONS)
            onnx_program = torch.onnx.export(program, (example,), dynamo=True, optimize=True,
                                             input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                             verbose=False)
    except Exception as exc:  # torch raises many types; all mean "this model does not export"
        raise ExpertirError(f"cannot export {name} to ONNX: {_root_cause(exc)}") from exc
    proto = _tidy(onnx_program.model_proto)
    proto.metadata_props.extend(onnx.StringStringEntryProto(key=k, value=v) for k, v in {
        "expertir.model": name, "expertir.weights": source,
        "expertir.size_multiple": str(int(getattr(model, "size_multiple", 8))),
        "expertir.version": __version__,
        "expertir.io": "image: N×3×H×W float32 RGB in [0,1] -> restored: same shape",
    }.items())
    with atomic_path(path) as tmp:
        onnx.save(proto, tmp)
    return path


#: Per-node notes of the exporter that are dropped: Python stack traces and FX text hold the
#: exporting machine's file paths. Module scopes (``namespace``) are kept for graph viewers.
DROPPED_NODE_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")


def _tidy(proto):
    """Name the dynamic dimensions ``batch``, ``height``, ``width`` (torch calls them s6,
    s37, ...; derived sizes such as ``((s37 + 7)//8)`` are renamed alike) and drop
    :data:`DROPPED_NODE_METADATA`."""
    import re

    dims = proto.graph.input[0].type.tensor_type.shape.dim
    rename = {dims[i].dim_param: new for i, new in ((0, "batch"), (2, "height"), (3, "width"))
              if dims[i].dim_param}
    if rename:
        symbol = re.compile(r"\b(" + "|".join(map(re.escape, rename)) + r")\b")
        graph = proto.graph
        for info in [*graph.input, *graph.output, *graph.value_info]:
            for dim in info.type.tensor_type.shape.dim:
                if dim.dim_param:
                    dim.dim_param = symbol.sub(lambda m: rename[m.group(1)], dim.dim_param)
    for node in proto.graph.node:
        keep = [p for p in node.metadata_props if p.key not in DROPPED_NODE_METADATA]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    return proto


def onnx_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session (``threads`` intra-op threads; default: ORT's choice)."""
    _need_onnx()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: constant-folding notes are not for users
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0]
        raise ExpertirError(f"{path}: ONNX Runtime cannot load it ({first})") from None


def check_image(h: int, w: int) -> np.ndarray:
    """A bundled degraded sample (noise + haze) as a 1×3×h×w float32 batch: cropped, or
    mirrored beyond its borders where it is smaller; the input of checks and timings."""
    from expertir.imageio import load_rgb

    img = load_rgb(SAMPLES_DIR / CHECK_SAMPLE)[:h, :w]
    img = np.pad(img, ((0, h - img.shape[0]), (0, w - img.shape[1]), (0, 0)), mode="symmetric")
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)


@dataclass
class Parity:
    """ONNX Runtime vs PyTorch on one image: PSNR of one output against the other."""

    height: int
    width: int
    psnr: float  # dB; inf when the outputs are identical
    max_abs_diff: float


def parity_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB, data range 1) of ``a`` against ``b``; inf for identical arrays."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


@torch.inference_mode()
def check_onnx(model: nn.Module, path: str | Path,
               sizes=CHECK_SIZES, session=None) -> list[Parity]:
    """Run the ONNX file with ONNX Runtime (CPU) and ``model`` with PyTorch on crops of a
    bundled sample of each size in ``sizes``; one :class:`Parity` per size."""
    session = session or onnx_session(path, threads=1)
    model = model.cpu().eval()
    results = []
    for h, w in sizes:
        x = check_image(h, w)
        ref = model(torch.from_numpy(x)).numpy()
        try:
            out = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        except Exception as exc:  # onnxruntime's errors have no common public base class
            raise ExpertirError(f"{path}: ONNX Runtime fails on a {h}×{w} image "
                                f"({_root_cause(exc)})") from None
        if out.shape != ref.shape:
            raise ExpertirError(f"{path}: ONNX output shape {out.shape} differs from "
                                f"PyTorch's {ref.shape} at {h}×{w}")
        results.append(Parity(h, w, parity_psnr(out, ref), float(np.abs(out - ref).max())))
    return results


@dataclass
class LatencyComparison:
    """Median CPU milliseconds of one forward pass, PyTorch and ONNX Runtime, same input."""

    model: str
    size: int
    threads: int
    runs: int
    torch_ms: float
    onnx_ms: float
    parity_db: float | None = None  # lowest PSNR of ONNX vs PyTorch output over CHECK_SIZES

    @property
    def speedup(self) -> float:
        return self.torch_ms / self.onnx_ms


@contextlib.contextmanager
def _torch_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@torch.inference_mode()
def compare_cpu_latency(model: nn.Module, path: str | Path, name: str = "", size: int = 256,
                        runs: int = 10, warmup: int = 2, threads: int = 1) -> LatencyComparison:
    """PyTorch (``model`` as loaded, e.g. SLER-IR's sparse experts) against ONNX Runtime on
    one 1×3×size×size input, interleaved in this process: each round times both, in
    alternating order, so load from other processes hits both alike. Medians of ``runs``
    rounds after ``warmup`` untimed ones; ``threads`` intra-op threads for both."""
    session = onnx_session(path, threads=threads)
    model = model.cpu().eval()
    x = torch.from_numpy(check_image(size, size))
    feed = {INPUT_NAME: x.numpy()}
    run_torch = lambda: model(x)  # noqa: E731
    run_onnx = lambda: session.run([OUTPUT_NAME], feed)  # noqa: E731
    times = {"torch": [], "onnx": []}
    with _torch_threads(threads):
        for _ in range(warmup):
            run_torch()
            run_onnx()
        for i in range(runs):
            order = [("torch", run_torch), ("onnx", run_onnx)]
            for key, fn in order if i % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                fn()
                times[key].append(1000 * (time.perf_counter() - start))
    return LatencyComparison(name or type(model).__name__, size, threads, runs,
                             statistics.median(times["torch"]), statistics.median(times["onnx"]))


def latency_markdown(rows: list[LatencyComparison]) -> str:
    """The side-by-side CPU latency table (one row per model) and how it was measured."""
    parity = any(r.parity_db is not None for r in rows)
    lines = ["| Model | PyTorch CPU (ms) | ONNX Runtime CPU (ms) | PyTorch / ORT |"
             + (" ORT vs PyTorch (dB) |" if parity else ""),
             "|---|---:|---:|---:|" + ("---:|" if parity else "")]
    for r in rows:
        cells = [r.model, f"{r.torch_ms:.0f}", f"{r.onnx_ms:.0f}", f"{r.speedup:.2f}×"]
        if parity:
            cells.append("–" if r.parity_db is None else f"{r.parity_db:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    if rows:
        r = rows[0]
        lines.append(f"\n1×3×{r.size}×{r.size} float32 (a bundled sample, mirrored), median of "
                     f"{r.runs} interleaved runs, {r.threads} thread(s) each; PyTorch runs the "
                     f"model as loaded (SLER-IR: sparse experts), ONNX Runtime its CPU provider."
                     + (" ORT vs PyTorch: lowest PSNR of one output against the other over "
                        f"{' and '.join(f'{h}×{w}' for h, w in CHECK_SIZES)}." if parity else ""))
    return "\n".join(lines) + "\n"


def onnx_latency_rows(names: list[str] | None = None, size: int = 256, runs: int = 10,
                      threads: int = 1, workdir: str | Path | None = None,
                      progress=None) -> list[LatencyComparison]:
    """Export each model with its shipped weights (default: every shipped model), check it
    and compare its CPU latency: the ONNX columns of the efficiency report. ``workdir``
    keeps the ONNX files; ``progress`` (a tqdm bar) advances once per model."""
    import tempfile

    from expertir.weights import list_shipped, load_pretrained

    names = names or [p.stem for p in list_shipped()]
    rows = []
    with contextlib.ExitStack() as stack:
        folder = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for name in names:
            pre = load_pretrained(name)
            path = export_onnx(pre.model, folder / f"{name}.onnx", pre.name, pre.source)
            row = compare_cpu_latency(pre.model, path, pre.name, size, runs, threads=threads)
            row.parity_db = min(r.psnr for r in check_onnx(pre.model, path))
            rows.append(row)
            if progress is not None:
                progress.update(1)
    return rows
