"""Training engine: LR schedule, configs, sampler, DDP equivalence, exact resume."""

import csv
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from expertir.errors import ExpertirError
from expertir.training.config import load_config
from expertir.training.data import StepSampler
from expertir.training.schedule import lr_at, warmup_cosine

# A tiny run: restormer with dim 8 on 32-px patches of generated images, one thread per process.
TINY = ["model.name=restormer_tiny", "model.options={dim: 8}", "data.procedural=6", "data.patch=32",
        "data.val_images=1", "data.val_patch=32", "data.tasks=[denoise_25, derain, dehaze]",
        "train.batch_size=2", "train.warmup_steps=2", "train.threads=1", "log.every=1",
        "log.tensorboard=false", "log.progress=false", "log.val_every=1000"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _train_cmd(run_dir, *overrides):
    return [sys.executable, "-m", "expertir.cli.main", "train", "--config", os.devnull,
            "--out", str(run_dir), *TINY, *overrides]


def _losses(run_dir):
    with open(run_dir / "train.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if k not in ("images_per_s",)} for row in csv.DictReader(f)]


# --------------------------------------------------------------------------- schedule
def test_lr_warms_up_linearly_then_reaches_min_exactly_at_last_step():
    steps, warmup, lr, min_lr = 50, 5, 2e-4, 1e-6
    lrs = [lr_at(i, steps, lr, min_lr, warmup) for i in range(steps)]
    assert lrs[:warmup] == pytest.approx([lr * (i + 1) / warmup for i in range(warmup)])
    assert lrs[warmup] == pytest.approx(lr)
    assert lrs[-1] == min_lr and lrs[-2] > min_lr
    assert all(a > b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))
    mid = warmup + (steps - 1 - warmup) / 2  # cosine half-way point
    assert lr_at(int(mid), steps, lr, min_lr, warmup) == pytest.approx(
        min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * (int(mid) - warmup) / (steps - 1 - warmup))))
    # The scheduler drives the optimizer through the same values, one per optimizer step.
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = warmup_cosine(opt, steps, min_lr, warmup)
    seen = []
    for _ in range(steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx(lrs, rel=1e-12, abs=0)
    assert [lr_at(i, 3, 1.0, 0.0, 0) for i in range(3)] == pytest.approx([1.0, 0.5, 0.0])


def test_psnr_loss_is_minus_the_mean_psnr_of_the_images():
    from expertir.metrics import psnr
    from expertir.training.trainer import psnr_loss

    gen = torch.Generator().manual_seed(0)
    target = torch.rand(3, 3, 16, 16, generator=gen)
    out = (target + torch.randn(3, 3, 16, 16, generator=gen) * torch.tensor([0.01, 0.05, 0.2])[:, None, None, None]).clamp(0, 1)
    want = [psnr(o.permute(1, 2, 0).double().numpy(), t.permute(1, 2, 0).double().numpy(), crop=0)
            for o, t in zip(out, target)]
    assert psnr_loss(out, target).item() == pytest.approx(-sum(want) / 3, abs=1e-3)


# --------------------------------------------------------------------------- configs
def test_config_file_inherit_and_dotted_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  name: restormer_tiny\ntrain:\n  steps: 100\n  lr: 3.0e-4\n")
    (tmp_path / "run.yaml").write_text("inherit: base.yaml\ntrain:\n  steps: 200\n")
    cfg = load_config(tmp_path / "run.yaml", ["train.lr=1e-4", "train.compile=true", "model.options.num_experts=8",
                                              "data.tasks=[derain, dehaze]", "loss.aux.balance=0.5"])
    assert cfg["train"]["steps"] == 200                       # file over its parent
    assert cfg["train"]["lr"] == 1e-4 and isinstance(cfg["train"]["lr"], float)
    assert cfg["train"]["compile"] is True
    assert cfg["model"] == {"name": "restormer_tiny", "options": {"num_experts": 8}}
    assert cfg["data"]["tasks"] == ["derain", "dehaze"] and cfg["loss"]["aux"] == {"balance": 0.5}
    assert cfg["train"]["batch_size"] == 8                    # untouched default
    for bad, match in [("train.lrr=1", "unknown config key 'train.lrr'"), ("train", "KEY=VALUE"),
                       ("train=3", "is a section"), ("train.steps=0", "positive integer"),
                       ("train.precision=fp8", "precision")]:
        with pytest.raises(ExpertirError, match=match):
            load_config(tmp_path / "run.yaml", [bad])
    (tmp_path / "typo.yaml").write_text("trian:\n  steps: 3\n")
    with pytest.raises(ExpertirError, match="unknown config key 'trian'"):
        load_config(tmp_path / "typo.yaml")


def test_config_inherits_from_a_list_of_files_in_order(tmp_path):
    (tmp_path / "model.yaml").write_text("model:\n  name: cea_tiny\ntrain:\n  steps: 100\n  lr: 1.0e-3\n")
    (tmp_path / "stage.yaml").write_text("train:\n  steps: 200\ndata:\n  patch: 64\n")
    (tmp_path / "run.yaml").write_text("inherit: [model.yaml, stage.yaml]\ntrain:\n  lr: 2.0e-4\n")
    cfg = load_config(tmp_path / "run.yaml")
    assert cfg["model"]["name"] == "cea_tiny" and cfg["data"]["patch"] == 64
    assert cfg["train"]["steps"] == 200 and cfg["train"]["lr"] == 2e-4   # later parents, then the file, win
    (tmp_path / "bad.yaml").write_text("inherit: {a: 1}\n")
    with pytest.raises(ExpertirError, match="bad.yaml: inherit names a config file"):
        load_config(tmp_path / "bad.yaml")


def test_cli_prints_resolved_config_and_reports_bad_override_in_one_line(tmp_path):
    from expertir.cli.main import main

    assert main(["train", "--config", os.devnull, "--print-config", "train.steps=700"]) == 0
    out = subprocess.run(_train_cmd(tmp_path / "r", "train.nope=1"), capture_output=True, text=True, env=_env())
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "unknown config key 'train.nope'" in out.stderr


def test_bad_options_are_checked_naming_the_key():
    for override, key in (("train.lr=0", "train.lr"),
                          ("data.rain_intensity=[1.0,0.5]", "data.rain_intensity"),
                          ("data.rain_intensity=0.8", "data.rain_intensity"),
                          ("data.rain_procedural_share=2", "data.rain_procedural_share")):
        with pytest.raises(ExpertirError, match=key):
            load_config(os.devnull, [override])
    assert load_config(os.devnull, ["data.rain_intensity=[0.8,1.6]"])["data"]["rain_intensity"] == [0.8, 1.6]


def test_shipped_configs_load():
    from pathlib import Path

    from expertir.models import resolve

    configs = sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml"))
    assert len(configs) >= 12
    for path in configs:
        cfg = load_config(path)
        resolve(cfg["model"]["name"]) if cfg["model"]["name"].startswith("restormer") else None


@pytest.mark.parametrize("shipped, plain", [
    ("shipped/sler_ir_tiny.yaml", "ablations/sler_ir_routing_plain_long.yaml"),
    ("shipped/sler_ir_tiny_stage2.yaml", "ablations/sler_ir_routing_plain_long_stage2.yaml"),
])
def test_routing_comparison_run_differs_from_the_shipped_recipe_only_in_the_routing_fix(shipped, plain):
    from pathlib import Path

    root = Path(__file__).parents[1] / "configs"
    a, b = load_config(root / shipped), load_config(root / plain)
    for cfg in (a, b):  # what the fix is, and the run's name and paths
        del cfg["name"], cfg["out_dir"], cfg["train"]["init"]
        del cfg["model"]["options"]["routing_smoothing"], cfg["model"]["options"]["local_margin"]
        cfg["data"]["ratios"].pop("clean")
    assert b["data"]["tasks"] + ["clean"] == a["data"]["tasks"]
    del a["data"]["tasks"], b["data"]["tasks"]
    assert a == b

# --------------------------------------------------------------------------- data order
def test_sampler_gives_the_same_global_batches_for_any_world_size_and_resume_point():
    one = list(StepSampler(7, steps=5, batch_size=4))
    per_step = [one[i * 4:(i + 1) * 4] for i in range(5)]
    ranks = [list(StepSampler(7, steps=5, batch_size=1, world_size=2, rank=r, accum=2)) for r in range(2)]
    for s in range(5):
        # micro-batch m of rank r holds global slot m * 2 + r
        merged = [ranks[r][s * 2 + m] for m in range(2) for r in range(2)]
        assert merged == per_step[s]
    assert list(StepSampler(7, steps=5, batch_size=4, start_step=3)) == one[12:]
    assert one[7] == (1, 0) and one[6] == (0, 6)  # draw p is item p mod L of epoch p // L


def test_data_workers_do_not_change_the_batches(tmp_path):
    runs = {}
    for workers in (0, 2):
        out = subprocess.run(_train_cmd(tmp_path / f"w{workers}", "train.steps=3", f"data.workers={workers}"),
                             capture_output=True, text=True, env=_env(), timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        runs[workers] = _losses(tmp_path / f"w{workers}")
    assert runs[0] == runs[2] and len(runs[0]) == 3


def test_a_data_worker_starts_after_opencv_ran_threaded_in_the_trainer(tmp_path):
    """OpenCV's thread pool is not copied into a forked worker: had the training process
    started it, the worker's first parallel OpenCV call would wait forever."""
    warm_pool = ("import cv2, numpy, sys; cv2.setNumThreads(2); "
                 "cv2.GaussianBlur(numpy.ones((1500, 1500, 3), numpy.float32), (31, 31), 5); "
                 "from expertir.cli.main import main; sys.exit(main(sys.argv[1:]))")
    cmd = [sys.executable, "-c", warm_pool] + _train_cmd(tmp_path / "w1", "train.steps=3", "data.workers=1")[3:]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(_losses(tmp_path / "w1")) == 3


# --------------------------------------------------------------------------- DDP
def test_two_process_gloo_training_matches_one_process_with_same_global_batch(tmp_path):
    steps = ["train.steps=5", "train.seed=3"]
    single = subprocess.run(_train_cmd(tmp_path / "one", "train.batch_size=4", *steps),
                            capture_output=True, text=True, env=_env(), timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd = _train_cmd(tmp_path / "two", "train.batch_size=2", *steps)
    ddp = subprocess.run(launcher + cmd[1:], capture_output=True, text=True, env=_env(), timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "effective batch 4 = 2 per device × 2 devices" in ddp.stdout
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4, 5]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for key in ra:
            assert rb[key] == pytest.approx(ra[key], abs=1e-5, rel=0), (ra["step"], key)
    assert a[-1]["loss"] != a[0]["loss"]  # it trained


# --------------------------------------------------------------------------- resume
def test_run_killed_by_sigkill_and_resumed_ends_bit_identical(tmp_path):
    args = ["train.steps=24", "log.ckpt_every=4", "log.val_every=8"]
    full = subprocess.run(_train_cmd(tmp_path / "full", *args), capture_output=True, text=True, env=_env(), timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]

    run = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(run, *args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=_env())
    try:
        for line in proc.stdout:
            if "checkpoint step 8" in line:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "final.safetensors").exists()  # it died mid-way
    assert torch.load(run / "last.pt", weights_only=True)["step"] in (8, 12, 16, 20)

    resumed = subprocess.run(_train_cmd(run, *args) + ["--resume"], capture_output=True, text=True,
                             env=_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    want, got = load_file(tmp_path / "full" / "final.safetensors"), load_file(run / "final.safetensors")
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    full_state = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    run_state = torch.load(run / "last.pt", weights_only=True)
    assert all(torch.equal(v, run_state["model"][k]) for k, v in full_state["model"].items())
    # The logs read as one run.
    assert [r["step"] for r in _losses(run)] == list(range(1, 25))
    assert _losses(run)[-1]["loss"] == _losses(tmp_path / "full")[-1]["loss"]


def test_export_run_writes_the_ema_weights_with_public_paths_and_the_training_record(tmp_path):
    """tools/export_run.py: a finished run's export is its final.safetensors (with the
    training record for the model card), a running one's the EMA weights of last.pt; the
    machine's paths are renamed in both."""
    from expertir.checkpoint import read_metadata
    from expertir.evaluation.publish import read_record

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = tmp_path / "run"
    out = subprocess.run(_train_cmd(run, "train.steps=3", "data.workers=0", "ema.decay=0.5", f"data.root={tmp_path}"),
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert str(tmp_path) in json.dumps(load_config(run / "config.yaml"))  # the run names its data root

    def export(*extra):
        return subprocess.run([sys.executable, "tools/export_run.py", str(run), "--path", f"{tmp_path}/=RUNS", *extra],
                              capture_output=True, text=True, env=_env(), timeout=300, cwd=root)

    done = export("-o", str(tmp_path / "w" / "f.safetensors"), "--command", "expertir train --config c.yaml")
    assert done.returncode == 0, done.stderr[-2000:]
    shipped, final = load_file(tmp_path / "w" / "f.safetensors"), load_file(run / "final.safetensors")
    assert shipped.keys() == final.keys() and all(torch.equal(shipped[k], final[k]) for k in final)
    meta = read_metadata(tmp_path / "w" / "f.safetensors")
    assert meta["training"]["steps"] == meta["training"]["planned_steps"] == 3 and "milestone" not in meta["training"]
    assert meta["data"]["sources"] == read_metadata(run / "final.safetensors")["data"]["sources"] != []
    assert str(tmp_path) not in json.dumps(meta) and "RUNS" in json.dumps(meta)
    record = read_record(tmp_path / "w" / "f.safetensors")
    assert record["command"] == "expertir train --config c.yaml" and record["wall_time"].endswith("of training steps")

    stage2 = subprocess.run(_train_cmd(tmp_path / "run2", "train.steps=3", "data.workers=0", f"data.root={tmp_path}",
                                       f"train.init={run / 'final.safetensors'}"),
                            capture_output=True, text=True, env=_env(), timeout=300)
    assert stage2.returncode == 0, stage2.stderr[-2000:]
    for folder, rain in ((run, 27.5), (tmp_path / "run2", 27.25)):  # each stage's validation
        (folder / "val.csv").write_text("step,task,psnr,input_psnr\n3,denoise_25,28.0,20.4\n"
                                        f"3,derain,{rain},25.0\n")
    done = subprocess.run([sys.executable, "tools/export_run.py", str(tmp_path / "run2"), "-o", str(tmp_path / "s2.safetensors"),
                           "--command", "c"], capture_output=True, text=True, env=_env(), timeout=300, cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(stage 1: " in read_record(tmp_path / "s2.safetensors")["wall_time"]  # the time of both stages
    assert "derain | 27.50 | 27.25 (worse)" in done.stdout and "denoise_25 | 28.00 | 28.00\n" in done.stdout
    assert "worse than the one before on derain 27.50 -> 27.25" in done.stderr

    (run / "final.safetensors").unlink()  # as if the run were still going: a milestone
    assert export("--command", "x").returncode != 0
    done = export("-o", str(tmp_path / "m.safetensors"))
    assert done.returncode == 0, done.stderr[-2000:]
    milestone = load_file(tmp_path / "m.safetensors")
    assert all(torch.equal(milestone[k], final[k]) for k in final)
    meta = read_metadata(tmp_path / "m.safetensors")["training"]
    assert meta["milestone"] and meta["steps"] == 3 and str(tmp_path) not in json.dumps(meta)
    bad = subprocess.run([sys.executable, "tools/export_run.py", str(tmp_path)],
                         capture_output=True, text=True, env=_env(), timeout=300, cwd=root)
    assert bad.returncode != 0 and "last.pt" in bad.stderr and "Traceback" not in bad.stderr


def test_train_init_step_goes_on_from_that_step_of_the_schedule(tmp_path):
    """train.init_step: weights exported at step 3 of a 6-step run go on at step 4 with the
    learning rate the uninterrupted run had there; init_step without init is refused."""
    full = subprocess.run(_train_cmd(tmp_path / "a", "train.steps=6", "data.workers=0"),
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]
    weights = tmp_path / "a" / "final.safetensors"
    on = subprocess.run(_train_cmd(tmp_path / "b", "train.steps=6", "data.workers=0", f"train.init={weights}",
                                   "train.init_step=3"),
                        capture_output=True, text=True, env=_env(), timeout=300)
    assert on.returncode == 0, on.stderr[-2000:]
    assert "going on from step 3 of 6" in on.stdout
    rows_a, rows_b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert [r["step"] for r in rows_b] == [4, 5, 6]
    assert [r["lr"] for r in rows_b] == pytest.approx([r["lr"] for r in rows_a[3:]], rel=1e-12, abs=0)

    bad = subprocess.run(_train_cmd(tmp_path / "c", "train.steps=6", "train.init_step=3"),
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "train.init_step needs train.init" in bad.stderr


def test_train_init_starts_from_given_weights_and_refuses_other_models_in_one_line(tmp_path):
    """train.init: a run started from another run's weights with a vanishing learning rate
    ends with them; other models' weights are refused in one line."""
    first = subprocess.run(_train_cmd(tmp_path / "a", "train.steps=3", "data.workers=0"),
                           capture_output=True, text=True, env=_env(), timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    weights = tmp_path / "a" / "final.safetensors"
    still = subprocess.run(_train_cmd(tmp_path / "b", "train.steps=3", "data.workers=0", "train.lr=1e-12",
                                      "train.min_lr=0", f"train.init={weights}"),
                           capture_output=True, text=True, env=_env(), timeout=300)
    assert still.returncode == 0, still.stderr[-2000:]
    assert f"starting from the weights of {weights}" in still.stdout
    want, got = load_file(weights), load_file(tmp_path / "b" / "final.safetensors")
    assert want.keys() == got.keys() and all(torch.allclose(want[k], got[k], rtol=0, atol=1e-9) for k in want)

    for override, message in [("model.options={dim: 16}", "weights do not fit the model"),
                              ("model.name=cea_tiny", "holds restormer_tiny weights, not cea_tiny")]:
        bad = subprocess.run(_train_cmd(tmp_path / "c", "train.steps=3", "data.workers=0", override,
                                        f"train.init={weights}"),
                             capture_output=True, text=True, env=_env(), timeout=300)
        assert bad.returncode != 0 and "Traceback" not in bad.stderr
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and str(weights) in lines[0], bad.stderr
