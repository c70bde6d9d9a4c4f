"""Every checkpoint shipped in the package loads and restores the bundled samples."""

import pytest

from expertir.checkpoint import load_model
from expertir.cli.demo import load_samples
from expertir.inference import restore
from expertir.metrics import psnr
from expertir.weights import list_shipped

SHIPPED = list_shipped()


@pytest.mark.skipif(not SHIPPED, reason="this build ships no weights")
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_checkpoint_restores_samples_above_input_psnr(path):
    model, meta = load_model(path)
    assert meta["model"] == path.stem and "steps" in str(meta)
    samples = {s["task"]: s for s in load_samples()}
    noisy = samples["denoise_25"]
    out = restore(model, noisy["input"], device="cpu")
    assert psnr(out, noisy["target"]) > psnr(noisy["input"], noisy["target"])
    gains = [psnr(restore(model, s["input"], device="cpu"), s["target"]) - psnr(s["input"], s["target"])
             for s in samples.values() if s["task"] != "clean"]
    assert sum(gains) / len(gains) > 0


def test_weights_folder_stays_within_the_size_budget():
    assert sum(p.stat().st_size for p in SHIPPED) <= 25 * 1024 * 1024
