"""The training loop (issue 6 §2–5; recipe of ARCHITECTURE §6).

One function, :func:`train`, runs a config on one CPU/GPU or, under ``torchrun``, as one
process per device with DistributedDataParallel. Per optimizer step:

1. ``accum`` micro-batches; each computes ``loss = l1·L1(out, clean) + fft·L1(FFT(out),
   FFT(clean)) + Σ_name aux[name]·L_name``, where ``L_name`` are the auxiliary losses the
   model returns in ``aux["losses"]`` (already weighted by the model; ``loss.aux`` can
   rescale them) — the trainer knows no model specifically;
2. gradients averaged over devices (DDP) and micro-batches, clipped to ``grad_clip``;
3. AdamW step, LR from :mod:`.schedule`, EMA update (:mod:`.ema`).

Each loss term is logged separately. The effective batch (per device × devices ×
accumulation) is printed and saved. Checkpoints (:mod:`.state`) every ``log.ckpt_every``
steps and at the end; validation (:mod:`.data`, :mod:`.logs`) every ``log.val_every``;
the final (EMA) weights are exported with :func:`expertir.checkpoint.save_checkpoint`.
"""

from __future__ import annotations

import contextlib
import json
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from expertir.checkpoint import save_checkpoint
from expertir.errors import ExpertirError
from expertir.metrics import torch_psnr
from expertir.models import build_model
from expertir.training import distributed as dist_utils
from expertir.training.config import save_config
from expertir.training.data import EpochIndexed, StepSampler, build_dataset
from expertir.training.ema import EMA
from expertir.training.logs import RunLogger, plot_curves, save_grid
from expertir.training.schedule import warmup_cosine
from expertir.training.state import load_state, rng_state, save_state, set_rng_state

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def fft_l1(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance between the 2-D real FFTs (real and imaginary parts), as AdaIR's FFT loss."""
    return F.l1_loss(torch.view_as_real(torch.fft.rfft2(out)), torch.view_as_real(torch.fft.rfft2(target)))


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


def train(cfg: dict, resume: str | Path | bool | None = None, run_dir: str | Path | None = None) -> dict:
    """Run a resolved config (see :mod:`.config`); returns a summary dict.

    ``resume``: a ``last.pt`` path, or ``True`` for the run folder's ``last.pt``.
    """
    t, log_cfg = cfg["train"], cfg["log"]
    info = dist_utils.setup(t["device"])
    try:
        return _train(cfg, t, log_cfg, info, resume, run_dir)
    finally:
        dist_utils.cleanup()


def _train(cfg, t, log_cfg, info, resume, run_dir) -> dict:
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
    ckpt_path = run_dir / "last.pt"
    world, per_device, accum = info.world_size, t["batch_size"], t["accum"]
    effective = per_device * world * accum

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
    model = model.to(device=device, dtype=dtype)
    if t["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, cfg["ema"]["decay"]) if cfg["ema"]["enabled"] else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(t["lr"]), betas=tuple(t["betas"]),
                                  weight_decay=float(t["weight_decay"]))
    scheduler = warmup_cosine(optimizer, t["steps"], float(t["min_lr"]), int(t["warmup_steps"]))
    scaler = torch.amp.GradScaler("cuda", enabled=on_gpu and precision == "fp16")

    start_step = 0
    if resume:
        path = ckpt_path if resume is True else Path(resume)
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

    sampler = StepSampler(len(dataset), t["steps"], per_device, world, info.rank, accum, start_step)
    loader = DataLoader(EpochIndexed(dataset), batch_size=per_device, sampler=sampler, num_workers=int(cfg["data"]["workers"]),
                        pin_memory=on_gpu, drop_last=False)

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
    logger = RunLogger(run_dir, start_step, bool(log_cfg["tensorboard"])) if info.is_main else None

    def autocast():
        if precision in AUTOCAST:
            return torch.autocast(device.type, dtype=AUTOCAST[precision])
        return contextlib.nullcontext()

    def to_device(batch: dict) -> dict:
        x = batch["degraded"].to(device, dtype, non_blocking=True)
        if t["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        return {"degraded": x, "clean": batch["clean"].to(device, dtype, non_blocking=True),
                "task": batch["task"].to(device)}

    def checkpoint(step: int) -> None:
        rngs = _collect_rng(info)
        if info.is_main:
            save_state(ckpt_path, {
                "step": step, "model": model.state_dict(), "ema": ema.state_dict() if ema else None,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": rngs, "world_size": world,
                "effective_batch": effective, "config": json.dumps(cfg)})
            print(f"expertir: checkpoint step {step} -> {ckpt_path}", flush=True)
        dist_utils.barrier(info)

    last_val: dict = {}

    def run_validation(step: int) -> None:
        nonlocal last_val
        if info.is_main and val:
            results, rows = validate(ema.model if ema else model, val, device, dtype, t["channels_last"],
                                     grid_images=int(log_cfg["grid_images"]))
            logger.log_val(step, results)
            if rows:
                save_grid(run_dir / "samples" / f"step{step:07d}.png", rows)
            last_val = {task: {"psnr": round(p, 4), "input_psnr": round(q, 4)} for task, (p, q) in results.items()}
            text = ", ".join(f"{task} {p:.2f} (input {q:.2f})" for task, (p, q) in results.items())
            tqdm.write(f"expertir: step {step} validation PSNR dB: {text}")
        dist_utils.barrier(info)

    data_iter = iter(loader)
    bar = tqdm(total=t["steps"], initial=start_step, disable=not (info.is_main and log_cfg["progress"]),
               dynamic_ncols=True, desc="train")
    sums: dict[str, torch.Tensor] = {}
    counted, tick = 0, time.perf_counter()
    net.train()
    for step in range(start_step, t["steps"]):
        for micro in range(accum):
            batch = to_device(next(data_iter))
            sync = micro == accum - 1 or not info.distributed
            with (contextlib.nullcontext() if sync else ddp.no_sync()):
                total, terms = loss_terms(net, batch, cfg["loss"], autocast)
                scaler.scale(total / accum).backward()
            for name, value in {"loss": total, **terms}.items():
                sums[name] = sums.get(name, 0.0) + value.detach().double() / accum
        if t["grad_clip"]:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(t["grad_clip"]))
        lr = optimizer.param_groups[0]["lr"]
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if ema is not None:
            ema.update(model)
        counted += 1
        done = step + 1
        bar.update(1)

        if done % int(log_cfg["every"]) == 0 or done == t["steps"]:
            names = sorted(sums)
            means = dist_utils.mean_across(info, torch.stack([sums[n] for n in names]) / counted)
            values = dict(zip(names, means.tolist()))
            if on_gpu:
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            values.update(lr=lr, images_per_s=counted * effective / (now - tick))
            if logger:
                logger.log_train(done, {k: values[k] for k in ["loss", *[n for n in names if n != "loss"], "lr", "images_per_s"]})
                bar.set_postfix(loss=f"{values['loss']:.4f}", img_s=f"{values['images_per_s']:.1f}")
            sums, counted, tick = {}, 0, time.perf_counter()
        if done % int(log_cfg["val_every"]) == 0 and done != t["steps"]:
            run_validation(done)
            tick = time.perf_counter()
        if done % int(log_cfg["ckpt_every"]) == 0 and done != t["steps"]:
            checkpoint(done)
            tick = time.perf_counter()
    bar.close()

    final_step = max(start_step, t["steps"])
    if start_step < t["steps"]:
        run_validation(final_step)
        checkpoint(final_step)
    summary = {"run_dir": str(run_dir), "steps": final_step, "effective_batch": effective, "metrics": last_val}
    if info.is_main:
        exported = ema.model if ema else model
        metadata = {"training": {"config": cfg, "steps": final_step, "seed": seed, "effective_batch": effective,
                                 "devices": world, "precision": precision, "weights": "ema" if ema else "raw"},
                    "data": data_summary, "metrics": {"validation_psnr": last_val}}
        final = save_checkpoint(run_dir / "final.safetensors", exported.float(), cfg["model"]["name"], metadata)
        summary["checkpoint"] = str(final)
        if (run_dir / "train.csv").is_file():
            summary["curves"] = str(plot_curves(run_dir, title=f"{cfg['model']['name']} — {cfg['name']}"))
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        logger.close()
        print(f"expertir: done: {final}")
    return summary
