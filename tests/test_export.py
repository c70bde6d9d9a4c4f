"""ONNX export: `expertir export` on every shipped model, checked with ONNX Runtime."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="ONNX export tests need the 'export' extra")
onnx = pytest.importorskip("onnx", reason="ONNX export tests need the 'export' extra")

import expertir  # noqa: E402
from expertir.cli.main import main  # noqa: E402
from expertir.inference.export import (  # noqa: E402
    adaptive_avg_pool2d_by_matmul, check_image, check_onnx, compare_cpu_latency, exportable,
    onnx_session, parity_psnr,
)
from expertir.weights import list_shipped, load_pretrained  # noqa: E402

SHIPPED = [p.stem for p in list_shipped()]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every shipped model exported by ``expertir export`` as a user runs it: one process per
    model, all at once (tracing takes minutes and most of this file's time; on several cores
    they overlap). Returns ``name -> (path, stdout)``."""
    folder = tmp_path_factory.mktemp("onnx")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(expertir.__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    bench = {"restormer_tiny": ["--bench", "--size", "32", "--runs", "1"]}  # --bench on one
    procs = {name: subprocess.Popen([sys.executable, "-m", "expertir", "export", name, "-o",
                                     str(folder / f"{name}.onnx"), *bench.get(name, [])],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for name in SHIPPED}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=3600)
        assert proc.returncode == 0, f"expertir export {name} failed:\n{err[-3000:]}"
        results[name] = (folder / f"{name}.onnx", out)
    return results


def test_every_shipped_model_is_tested():
    assert {"sler_ir_tiny", "cea_tiny", "restormer_tiny"} <= set(SHIPPED)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_onnxruntime_matches_pytorch(name, exported):
    """Two sizes the trace never saw: a multiple of 16 and one of neither 8 nor 16, larger
    than SLER-IR's 128-px encoder window; outputs within 50 dB PSNR of each other."""
    path, stdout = exported[name]
    # the command checked its file at the default sizes, above the default 50 dB
    assert stdout.count("ONNX Runtime vs PyTorch at ") == 2
    model = load_pretrained(name).model
    results = check_onnx(model, path, sizes=((48, 80), (130, 171)))
    assert [(r.height, r.width) for r in results] == [(48, 80), (130, 171)]
    for r in results:
        assert r.psnr >= 50, f"{name} at {r.height}×{r.width}: {r.psnr:.1f} dB"
    # the restoration is not the identity: the check compares real work
    x = check_image(130, 171)
    out = onnx_session(path).run(None, {"image": x})[0]
    assert parity_psnr(out, x) < 45


@pytest.mark.slow
def test_batch_is_dynamic(exported):
    path = exported["restormer_tiny"][0]
    model = load_pretrained("restormer_tiny").model
    x = np.concatenate([check_image(40, 56), check_image(40, 56)[..., ::-1].copy()])
    out = onnx_session(path).run(None, {"image": x})[0]
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    assert out.shape == (2, 3, 40, 56)
    assert parity_psnr(out, ref) >= 50


@pytest.mark.slow
def test_file_records_model_and_io(exported):
    path = exported["cea_tiny"][0]
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["expertir.model"] == "cea_tiny"
    assert meta["expertir.size_multiple"] == "8"
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["restored"]
    for value in (proto.graph.input[0], proto.graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    # the exporter's stack traces (file paths of the exporting machine) are dropped
    source_dir = str(Path(expertir.__file__).resolve().parent).encode()
    assert source_dir not in path.read_bytes()


@pytest.mark.slow
def test_latency_comparison_runs_both(exported):
    path = exported["restormer_tiny"][0]
    model = load_pretrained("restormer_tiny").model
    row = compare_cpu_latency(model, path, "restormer_tiny", size=32, runs=2, warmup=0)
    assert row.model == "restormer_tiny" and row.runs == 2
    assert row.torch_ms > 0 and row.onnx_ms > 0
    stdout = exported["restormer_tiny"][1]  # the command's --bench table
    assert "| restormer_tiny |" in stdout and "ONNX Runtime CPU (ms)" in stdout


@pytest.mark.parametrize("name", SHIPPED)
def test_export_form_gives_the_same_output(name):
    """What is traced (SLER-IR dense, the export's pad/crop) computes what the model does."""
    pre = load_pretrained(name)
    net = exportable(pre.model, pre.name)
    if name.startswith("sler_ir"):
        assert pre.model.config["expert_compute"] == "sparse"
        assert net.model.config["expert_compute"] == "dense"
    x = torch.from_numpy(np.concatenate([check_image(37, 83), check_image(37, 83)[..., ::-1]]))
    with torch.inference_mode():
        assert torch.allclose(net(x), pre.model(x), atol=1e-5)


@pytest.mark.parametrize("size", [(8, 8), (19, 21), (141, 187), (5, 300)])
def test_adaptive_pool_stand_in_matches_torch(size):
    x = torch.rand(2, 4, *size)
    expected = torch.nn.functional.adaptive_avg_pool2d(x, 8)
    assert torch.allclose(adaptive_avg_pool2d_by_matmul(x, (8, 8)), expected, atol=1e-6)


def test_check_image_mirrors_beyond_the_sample():
    x = check_image(300, 20)
    assert x.shape == (1, 3, 300, 20) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 1


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["export", "no_such_model", "-o", str(tmp_path / "m.onnx")]) == 2
    assert main(["export", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "m.onnx")]) == 2
    assert main(["export", "restormer_tiny", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("expertir: error: ") for line in err)
    assert "no_such_model" in err[0] and "missing.safetensors" in err[1] and "folder" in err[2]
    assert not (tmp_path / "m.onnx").exists()


def test_windowed_attention_is_refused_in_one_line():
    from expertir.errors import ExpertirError
    from expertir.models import build_model

    with pytest.raises(ExpertirError, match="attention_window=64"):
        exportable(build_model("restormer_tiny", attention_window=64), "restormer_tiny")
