"""The training loop (recipe: docs/design.md, "Protocol").

:func:`train` runs a config on one CPU/GPU or, under ``torchrun``, as one process per
device with DistributedDataParallel. It is four steps, each a function of this module:

* :func:`setup` builds a :class:`Run` — data, model, EMA, optimizer, schedule, logs —
  starts the model from ``train.init`` weights if given (:func:`init_weights`; with
  ``train.init_step`` the run goes on from that step of its schedule and data order, for a
  run whose ``last.pt`` is lost but whose milestone is kept) and restores a checkpoint when
  resuming;
* :func:`train_step` runs one optimizer step:

  1. ``accum`` micro-batches; each computes ``loss = l1·L1(out, clean) + fft·L1(FFT(out),
     FFT(clean)) − psnr·PSNR(out, clean) + Σ_name aux[name]·L_name``, where ``L_name`` are the auxiliary losses the
     model returns in ``aux["losses"]`` (already weighted by the model; ``loss.aux`` can
     rescale them) — the trainer knows no model specifically;
  2. gradients averaged over devices (DDP) and micro-batches, clipped to ``grad_clip``;
  3. AdamW step, LR from :mod:`.schedule`, EMA update (:mod:`.ema`);

* :func:`run_validation` and :func:`save_training_state`, every ``log.val_every`` and
  ``log.ckpt_every`` steps (:func:`fit` is the loop that calls them and logs);
* :func:`export` writes the final (EMA) weights with :func:`expertir.checkpoint.save_checkpoint`.

Each loss term is logged separately. The effective batch (per device × devices ×
accumulation) is printed and saved.

Speed on CPU (measured in docs/training.md): the training patches are synthesised in
``data.workers`` worker processes (:func:`training_batches`), one thread each, at the
training's priority (``data.worker_nice`` lowers it; a worker below the other processes of
a busy machine starves and the step waits for it); AdamW runs fused (one kernel per
parameter instead of about ten) and the EMA update as one multi-tensor ``lerp``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from expertir.checkpoint import load_weights, read_metadata, save_checkpoint
from expertir.errors import CheckpointError, ExpertirError
from expertir.metrics import torch_psnr
from expertir.models import build_model, list_models, resolve
from expertir.training import distributed as dist_utils
from expertir.training.config import save_config
from expertir.training.data import EpochIndexed, StepSampler, build_dataset
from expertir.training.distributed import DistInfo
from expertir.training.ema import EMA
from expertir.training.logs import RunLogger, plot_curves, save_grid
from expertir.training.schedule import warmup_cosine
from expertir.training.state import load_state, rng_state, save_state, set_rng_state

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def fft_l1(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance between the 2-D real FFTs (real and imaginary parts), as AdaIR's FFT loss."""
    return F.l1_loss(torch.view_as_real(torch.fft.rfft2(out)), torch.view_as_real(torch.fft.rfft2(target)))


def psnr_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Minus the PSNR in dB (images in [0, 1]), averaged over the images, as NAFNet's PSNR
    loss: it weighs each image's squared error by the inverse of its mean, so the well
    restored images count as much as the badly degraded ones."""
    mse = (out - target).pow(2).flatten(1).mean(1)
    return 10.0 / math.log(10.0) * torch.log(mse + 1e-8).mean()


def loss_terms(model, batch: dict, loss_cfg: dict, autocast) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total weighted loss of one micro-batch and each (unweighted by the trainer) term."""
    with autocast():
        out, aux = model(batch["degraded"], return_aux=True, labels=batch["task"])
    out = out.to(batch["clean"].dtype)
    terms = {"l1": F.l1_loss(out, batch["clean"])}
    total = loss_cfg["l1"] * terms["l1"]
    if loss_cfg["fft"]:
        terms["fft"] = fft_l1(out, batch["clean"])
        total = total + loss_cfg["fft"] * terms["fft"]
    if loss_cfg["psnr"]:
        terms["psnr"] = psnr_loss(out, batch["clean"])
        total = total + loss_cfg["psnr"] * terms["psnr"]
    for name, value in aux.get("losses", {}).items():
        terms[name] = value.float()
        total = total + float(loss_cfg["aux"].get(name, 1.0)) * value.to(total.dtype)
    return total, terms


@torch.no_grad()
def validate(model: torch.nn.Module, val: dict[str, dict], device: torch.device, dtype: torch.dtype,
             channels_last: bool, batch_size: int = 4, grid_images: int = 1):
    """Per-task mean PSNR of the restored and of the input images, and grid rows."""
    was_training = model.training
    model.eval()
    results, rows = {}, []
    for task, data in val.items():
        psnrs, inputs = [], []
        for i in range(0, len(data["clean"]), batch_size):
            x = data["degraded"][i:i + batch_size].to(device, dtype)
            y = data["clean"][i:i + batch_size].to(device, dtype)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = model(x).to(dtype)
            psnrs.append(torch_psnr(out.float(), y.float()).cpu())
            inputs.append(torch_psnr(x.float(), y.float()).cpu())
            if i == 0:
                rows += [(x[k].cpu(), out[k].cpu(), y[k].cpu()) for k in range(min(grid_images, len(x)))]
        results[task] = (float(torch.cat(psnrs).mean()), float(torch.cat(inputs).mean()))
    model.train(was_training)
    return results, rows


def _collect_rng(info) -> list[dict]:
    """Every process's RNG states (index = rank)."""
    state = rng_state()
    if not info.distributed:
        return [state]
    gathered: list = [None] * info.world_size
    torch.distributed.all_gather_object(gathered, state)
    return gathered


def _describe_batch(per_device: int, world: int, accum: int) -> str:
    return (f"effective batch {per_device * world * accum} = {per_device} per device × {world} "
            f"device{'s' if world > 1 else ''} × {accum} accumulation step{'s' if accum > 1 else ''}")


def _init_data_worker(nice: int, worker_id: int) -> None:
    """Data workers run one thread each, ``data.worker_nice`` below the training's priority.
    (OpenCV is already single-threaded: :func:`setup` made it so before the fork.)"""
    with contextlib.suppress(OSError):
        os.nice(nice)
    torch.set_num_threads(1)


def training_batches(dataset, cfg: dict, info: DistInfo, start_step: int) -> Iterator[dict]:
    """This process's batches of steps ``start_step ..`` (the order of :class:`StepSampler`),
    on the device. With ``data.workers`` > 0 they are made in that many worker processes
    (:func:`_init_data_worker`) while the model computes; the items do not depend on which
    process makes them, so the batches are the same for any number of workers."""
    t = cfg["train"]
    device, on_gpu = info.device, info.device.type == "cuda"
    dtype = torch.float64 if t["precision"] == "fp64" else torch.float32
    sampler = StepSampler(len(dataset), t["steps"], t["batch_size"], info.world_size, info.rank,
                          t["accum"], start_step)
    workers = int(cfg["data"]["workers"])
    loader = DataLoader(EpochIndexed(dataset), batch_size=t["batch_size"], sampler=sampler,
                        num_workers=workers, pin_memory=on_gpu, drop_last=False,
                        worker_init_fn=partial(_init_data_worker, int(cfg["data"]["worker_nice"])) if workers else None)
    cpu_batches = iter(loader)  # starts the workers now, so they work while setup finishes

    def on_device() -> Iterator[dict]:
        for batch in cpu_batches:
            x = batch["degraded"].to(device, dtype, non_blocking=True)
            if t["channels_last"]:
                x = x.contiguous(memory_format=torch.channels_last)
            yield {"degraded": x, "clean": batch["clean"].to(device, dtype, non_blocking=True),
                   "task": batch["task"].to(device)}

    return on_device()


@dataclass
class Run:
    """One training run: what :func:`setup` builds and the other steps use."""

    cfg: dict
    info: DistInfo
    run_dir: Path
    precision: str              # what actually runs (bf16/fp16 fall back to fp32 on CPU)
    dtype: torch.dtype
    model: nn.Module            # the bare model (its weights are saved)
    net: nn.Module              # what a step calls: the model, wrapped in DDP and/or compiled
    ddp: nn.Module              # the model or its DDP wrapper (for ``no_sync``)
    ema: EMA | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    batches: Iterator[dict]
    val: dict[str, dict]
    data_summary: dict
    start_step: int
    logger: RunLogger | None
    last_val: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(self.cfg["train"]["steps"])

    @property
    def effective_batch(self) -> int:
        t = self.cfg["train"]
        return t["batch_size"] * self.info.world_size * t["accum"]

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "last.pt"

    def autocast(self):
        if self.precision in AUTOCAST:
            return torch.autocast(self.info.device.type, dtype=AUTOCAST[self.precision])
        return contextlib.nullcontext()


def init_weights(model: nn.Module, path: str | Path, name: str) -> None:
    """Load ``train.init`` into a new model: another run's weights (fine-tuning, or going on
    from exported weights whose ``last.pt`` is gone; optimizer and schedule start afresh).
    The file must hold the weights of the same model; nothing in it is executed."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            saved = read_metadata(path).get("model")
        except CheckpointError:
            saved = None  # a plain safetensors state dict: the keys and shapes are checked below
        if saved in list_models() and resolve(saved)[0] != resolve(name)[0]:
            raise ExpertirError(f"train.init: {path} holds {saved} weights, not {name}")
    try:
        load_weights(model, path)
    except CheckpointError as exc:
        raise ExpertirError(f"train.init: {exc}") from None


def setup(cfg: dict, info: DistInfo, resume: str | Path | bool | None = None,
          run_dir: str | Path | None = None) -> Run:
    """Seed, build data, model, EMA, optimizer and schedule; resume from a checkpoint."""
    t = cfg["train"]
    if t["threads"]:
        torch.set_num_threads(int(t["threads"]))
    if t["deterministic"]:
        torch.use_deterministic_algorithms(True)
    device = info.device
    on_gpu = device.type == "cuda"
    precision = t["precision"]
    if precision in AUTOCAST and not on_gpu:
        print(f"expertir: note: train.precision={precision} uses autocast on GPU only; training in fp32 on CPU")
        precision = "fp32"
    dtype = torch.float64 if precision == "fp64" else torch.float32
    run_dir = Path(run_dir or Path(cfg["out_dir"]) / cfg["name"])
    world, per_device, accum = info.world_size, t["batch_size"], t["accum"]
    effective = per_device * world * accum

    # OpenCV synthesises patches on one thread, beside torch's: its own thread pool would
    # compete with torch's threads, and a data worker forked from a process whose pool has
    # started hangs in its first parallel OpenCV call (the pool's threads are not copied).
    cv2.setNumThreads(1)

    # Seeds: model init and anything random in the model.
    seed = int(t["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)

    # Data.
    data = build_dataset(cfg["data"], seed)
    dataset = data.dataset
    for line in data.report:
        print(line)
    val = data.validation if info.is_main else {}
    data_summary = {
        "root": cfg["data"]["root"], "tasks": list(cfg["data"]["tasks"]), "sources": list(data.report),
        "ratios": dataset.ratios, "patch": int(cfg["data"]["patch"]), "epoch_length": len(dataset),
        "val_images_per_task": {task: len(v["clean"]) for task, v in val.items()},
        "samples_seen": effective * t["steps"],
    }

    # Model, EMA, optimizer, schedule.
    try:
        model = build_model(cfg["model"]["name"], **cfg["model"]["options"])
    except (ValueError, TypeError) as exc:
        raise ExpertirError(f"model.name/model.options: {exc}") from None
    if t["init"] and not resume:
        init_weights(model, t["init"], cfg["model"]["name"])
        if info.is_main:
            print(f"expertir: starting from the weights of {t['init']}")
    model = model.to(device=device, dtype=dtype)
    if t["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, cfg["ema"]["decay"]) if cfg["ema"]["enabled"] else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(t["lr"]), betas=tuple(t["betas"]),
                                  weight_decay=float(t["weight_decay"]), fused=True)
    scheduler = warmup_cosine(optimizer, t["steps"], float(t["min_lr"]), int(t["warmup_steps"]))
    scaler = torch.amp.GradScaler("cuda", enabled=on_gpu and precision == "fp16")

    start_step = 0
    if t["init_step"] and not resume:
        # Weights exported at step init_step of this run: go on from that step of its
        # schedule and data order (the optimizer's moments start afresh).
        start_step = int(t["init_step"])
        scheduler.last_epoch = start_step
        for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas):
            group["lr"] = group["initial_lr"] * factor(start_step)
        if info.is_main:
            print(f"expertir: going on from step {start_step} of {t['steps']} with a fresh optimizer")
    if resume:
        path = run_dir / "last.pt" if resume is True else Path(resume)
        state = load_state(path)
        model.load_state_dict(state["model"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_step = int(state["step"])
        rngs = state["rng"]
        set_rng_state(rngs[info.rank] if len(rngs) == world else rngs[0])
        if state.get("world_size") != world or state.get("effective_batch") != effective:
            print(f"expertir: warning: resuming with {world} device(s), effective batch {effective} "
                  f"(checkpoint: {state.get('world_size')}, {state.get('effective_batch')}); "
                  f"the run will not match an uninterrupted one")
        if start_step >= t["steps"]:
            print(f"expertir: {path} already finished {start_step} of {t['steps']} steps")

    net = ddp = model
    if info.distributed:
        # Routed models leave unused experts in a step: let DDP look for them.
        net = ddp = DistributedDataParallel(model, device_ids=[device.index] if on_gpu else None,
                                            find_unused_parameters=True)
    if t["compile"]:
        net = torch.compile(ddp)

    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        params = sum(p.numel() for p in model.parameters())
        run_info = {"model": cfg["model"]["name"], "parameters": params, "effective_batch": effective,
                    "batch_per_device": per_device, "devices": world, "accum": accum,
                    "device": str(device), "precision": precision, "torch": torch.__version__,
                    "python": platform.python_version(), "data": data_summary}
        (run_dir / "run.json").write_text(json.dumps(run_info, indent=2))
        print(f"expertir: training {cfg['model']['name']} ({params / 1e6:.3f} M parameters) on {device}"
              f"{f' ×{world} processes' if world > 1 else ''}, {precision}; {_describe_batch(per_device, world, accum)}; "
              f"{t['steps']} steps; run folder {run_dir}")
    logger = RunLogger(run_dir, start_step, bool(cfg["log"]["tensorboard"])) if info.is_main else None
    return Run(cfg, info, run_dir, precision, dtype, model, net, ddp, ema, optimizer, scheduler, scaler,
               training_batches(dataset, cfg, info, start_step), val, data_summary, start_step, logger)


def train_step(run: Run) -> dict[str, torch.Tensor]:
    """One optimizer step; returns its loss terms (detached, float64, averaged over the
    micro-batches) under ``"loss"`` and each term's name."""
    t = run.cfg["train"]
    accum = int(t["accum"])
    sums: dict[str, torch.Tensor] = {}
    for micro in range(accum):
        batch = next(run.batches)
        sync = micro == accum - 1 or not run.info.distributed
        with (contextlib.nullcontext() if sync else run.ddp.no_sync()):
            total, terms = loss_terms(run.net, batch, run.cfg["loss"], run.autocast)
            run.scaler.scale(total / accum).backward()
        for name, value in {"loss": total, **terms}.items():
            sums[name] = sums.get(name, 0.0) + value.detach().double() / accum
    if t["grad_clip"]:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), float(t["grad_clip"]))
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update(run.model)
    return sums


def run_validation(run: Run, step: int) -> None:
    """Validate the EMA (or raw) weights, log per-task PSNR and save a sample grid."""
    if run.info.is_main and run.val:
        log_cfg = run.cfg["log"]
        results, rows = validate(run.ema.model if run.ema else run.model, run.val, run.info.device, run.dtype,
                                 run.cfg["train"]["channels_last"], grid_images=int(log_cfg["grid_images"]))
        run.logger.log_val(step, results)
        if rows:
            save_grid(run.run_dir / "samples" / f"step{step:07d}.png", rows)
        run.last_val = {task: {"psnr": round(p, 4), "input_psnr": round(q, 4)} for task, (p, q) in results.items()}
        text = ", ".join(f"{task} {p:.2f} (input {q:.2f})" for task, (p, q) in results.items())
        tqdm.write(f"expertir: step {step} validation PSNR dB: {text}")
    dist_utils.barrier(run.info)


def save_training_state(run: Run, step: int) -> None:
    """Write ``last.pt`` (everything an exact resume needs; :mod:`.state`)."""
    rngs = _collect_rng(run.info)
    if run.info.is_main:
        save_state(run.checkpoint_path, {
            "step": step, "model": run.model.state_dict(), "ema": run.ema.state_dict() if run.ema else None,
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(), "rng": rngs, "world_size": run.info.world_size,
            "effective_batch": run.effective_batch, "config": json.dumps(run.cfg)})
        print(f"expertir: checkpoint step {step} -> {run.checkpoint_path}", flush=True)
    dist_utils.barrier(run.info)


def fit(run: Run) -> None:
    """Steps ``start_step .. steps - 1``: log every ``log.every`` steps (mean loss terms since
    the last log, LR, images/s), validate and checkpoint on their schedules."""
    log_cfg, info = run.cfg["log"], run.info
    every, val_every, ckpt_every = int(log_cfg["every"]), int(log_cfg["val_every"]), int(log_cfg["ckpt_every"])
    bar = tqdm(total=run.steps, initial=run.start_step, disable=not (info.is_main and log_cfg["progress"]),
               dynamic_ncols=True, desc="train")
    sums: dict[str, torch.Tensor] = {}
    counted, tick = 0, time.perf_counter()
    run.net.train()
    for step in range(run.start_step, run.steps):
        lr = run.optimizer.param_groups[0]["lr"]
        for name, value in train_step(run).items():
            sums[name] = sums.get(name, 0.0) + value
        counted += 1
        done = step + 1
        bar.update(1)

        if done % every == 0 or done == run.steps:
            names = sorted(sums)
            means = dist_utils.mean_across(info, torch.stack([sums[n] for n in names]) / counted)
            values = dict(zip(names, means.tolist()))
            if info.device.type == "cuda":
                torch.cuda.synchronize(info.device)
            values.update(lr=lr, images_per_s=counted * run.effective_batch / (time.perf_counter() - tick))
            if run.logger:
                run.logger.log_train(done, {k: values[k] for k in ["loss", *[n for n in names if n != "loss"], "lr", "images_per_s"]})
                bar.set_postfix(loss=f"{values['loss']:.4f}", img_s=f"{values['images_per_s']:.1f}")
            sums, counted, tick = {}, 0, time.perf_counter()
        if done % val_every == 0 and done != run.steps:
            run_validation(run, done)
            tick = time.perf_counter()
        if done % ckpt_every == 0 and done != run.steps:
            save_training_state(run, done)
            tick = time.perf_counter()
    bar.close()
    if run.start_step < run.steps:
        run_validation(run, run.steps)
        save_training_state(run, run.steps)


def export(run: Run) -> dict:
    """Write ``final.safetensors`` (EMA weights), the curves and ``summary.json``; the summary."""
    final_step = max(run.start_step, run.steps)
    summary = {"run_dir": str(run.run_dir), "steps": final_step, "effective_batch": run.effective_batch,
               "metrics": run.last_val}
    if run.info.is_main:
        cfg = run.cfg
        exported = run.ema.model if run.ema else run.model
        metadata = {"training": {"config": cfg, "steps": final_step, "seed": int(cfg["train"]["seed"]),
                                 "effective_batch": run.effective_batch, "devices": run.info.world_size,
                                 "precision": run.precision, "weights": "ema" if run.ema else "raw"},
                    "data": run.data_summary, "metrics": {"validation_psnr": run.last_val}}
        final = save_checkpoint(run.run_dir / "final.safetensors", exported.float(), cfg["model"]["name"], metadata)
        summary["checkpoint"] = str(final)
        if (run.run_dir / "train.csv").is_file():
            summary["curves"] = str(plot_curves(run.run_dir, title=f"{cfg['model']['name']} — {cfg['name']}"))
        (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        run.logger.close()
        print(f"expertir: done: {final}")
    return summary


def train(cfg: dict, resume: str | Path | bool | None = None, run_dir: str | Path | None = None) -> dict:
    """Run a resolved config (see :mod:`.config`); returns a summary dict.

    ``resume``: a ``last.pt`` path, or ``True`` for the run folder's ``last.pt``.
    """
    info = dist_utils.setup(cfg["train"]["device"])
    try:
        run = setup(cfg, info, resume, run_dir)
        fit(run)
        return export(run)
    finally:
        dist_utils.cleanup()
