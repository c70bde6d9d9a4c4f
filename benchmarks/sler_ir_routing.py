"""Where SLER-IR's region routing goes on images that need little or no restoration.

For every image: the nearest task prototype of the global embedding g and of each region's
routing embedding e_p, the GLGF gate, and the top-1 expert of every routed block for e_p
and for g alone. Reported per image set:

* ``disagree_prototype``: share of regions whose nearest prototype differs from g's;
* ``disagree_expert``: share of (region, routed block) pairs whose top-1 expert differs
  from the one g alone would pick;
* ``gate``: mean GLGF gate (weight of g; 1 = the global token decides everywhere);
* ``psnr``: restore(image) against the clean target;
* ``expert_j``: PSNR of the output against the clean target when every routed block is
  forced to expert j alone: what each expert does to these images by itself.

Usage::

    python benchmarks/sler_ir_routing.py --data-root DATA [--weights FILE ...] [-o DIR]
        [--routing SMOOTHING:MARGIN ...]

With several checkpoints, ``routing.json`` has one entry per checkpoint (named by its file, or by
its run folder for a ``final.safetensors``) and the figure shows every example image once per checkpoint, one under the other.
``--routing 5:0.1 3:1e9`` also measures every checkpoint with its routing options changed at
inference (``routing_smoothing``, ``local_margin`` of
:class:`~expertir.models.degradation_encoder.DegradationEncoder`; a huge margin routes every
region on the global embedding): what larger routing regions or a stricter gate would give
without retraining. Their entries leave out ``expert_j``, which a forced expert makes
independent of the routing (the checkpoint's own entry has it).

Image sets: the clean McMaster images, the clean CBSD68 images, and the 12 Rain100L inputs
closest to their targets (light real rain). Writes ``routing.json`` and a figure
``routing.png`` (input, output, nearest-prototype map, gate, dominant expert of one block).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from expertir.data.tasks import TASK_IDS
from expertir.imageio import list_images, load_rgb
from expertir.metrics import crop_to_multiple, psnr
from expertir.weights import load_pretrained


def image_sets(root: Path, light_rain: int = 12) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    sets = {}
    for name, folder in (("clean McMaster", root / "denoise/McMaster"), ("clean CBSD68", root / "denoise/CBSD68")):
        sets[name] = [(p.stem, img, img) for p in list_images(folder, recursive=False)
                      for img in [crop_to_multiple(load_rgb(p))]]
    rain = []
    for p in list_images(root / "derain/Rain100L/rain", recursive=False):
        target = root / "derain/Rain100L/norain" / p.name.replace("rain-", "norain-")
        x, y = crop_to_multiple(load_rgb(p)), crop_to_multiple(load_rgb(target))
        rain.append((psnr(x, y), p.stem, x, y))
    sets[f"light rain (Rain100L, {light_rain} closest to target)"] = \
        [(n, x, y) for _, n, x, y in sorted(rain, key=lambda r: -r[0])[:light_rain]]
    return sets


@torch.no_grad()
def forced_expert_output(model, x: torch.Tensor, expert: int) -> torch.Tensor:
    """The model's output with every routed block sending every region to ``expert``."""
    originals = {}
    for ffn in model.routed.values():
        router = ffn.router
        originals[router] = router.forward

        def one_hot(emb, router=router):
            weights, probs = originals[router](emb)
            forced = torch.zeros_like(weights)
            forced[:, expert] = 1.0
            return forced, probs

        router.forward = one_hot
    try:
        return model(x)
    finally:
        for router, forward in originals.items():
            router.forward = forward


@torch.no_grad()
def analyse(model, img: np.ndarray) -> dict:
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    out, aux = model(x, return_aux=True)
    protos = model.prototypes()
    g = aux["embedding_global"]  # 1×d
    e = aux["routing_embedding"][0]  # d×h×w
    d, h, w = e.shape
    near_g = int((g @ protos.T).argmax())
    near_e = (protos @ e.reshape(d, -1)).argmax(0).reshape(h, w)
    disagree_expert = []
    for name, ffn in model.routed.items():
        top_e = aux["routing"][name][0].argmax(0)
        top_g = ffn.router(g[:, :, None, None].expand(1, d, h, w))[0][0].argmax(0)
        disagree_expert.append(float((top_e != top_g).float().mean()))
    gate = aux["glgf_gate"]
    first_block = next(iter(model.routed))
    return {
        "output": out[0].permute(1, 2, 0).clamp(0, 1).numpy(),
        "global_prototype": TASK_IDS[near_g] if near_g < len(TASK_IDS) else str(near_g),
        "prototype_map": near_e.numpy(),
        "disagree_prototype": float((near_e != near_g).float().mean()),
        "disagree_expert": float(np.mean(disagree_expert)),
        "gate_map": None if gate is None else gate[0, 0].numpy(),
        "gate": None if gate is None else float(gate.mean()),
        "expert_map": aux["routing"][first_block][0].argmax(0).numpy(),
        "num_experts": int(aux["routing"][first_block].shape[1]),
        "expert_block": first_block,
    }


def figure(rows: list[tuple[str, np.ndarray, dict]], path: Path, num_tasks: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 5, figsize=(15, 3.0 * len(rows)), squeeze=False)
    cmap = plt.get_cmap("tab10", num_tasks)
    for r, (name, img, res) in enumerate(rows):
        panels = [(img, f"{name}\ninput"), (res["output"], "output")]
        for ax, (im, title) in zip(axes[r][:2], panels):
            ax.imshow(im)
            ax.set_title(title, fontsize=8)
        im = axes[r][2].imshow(res["prototype_map"], cmap=cmap, vmin=-0.5, vmax=num_tasks - 0.5)
        axes[r][2].set_title(f"nearest prototype per region (global: {res['global_prototype']})", fontsize=8)
        cbar = fig.colorbar(im, ax=axes[r][2], ticks=range(num_tasks), fraction=0.046)
        cbar.ax.set_yticklabels([TASK_IDS[i] if i < len(TASK_IDS) else str(i) for i in range(num_tasks)], fontsize=6)
        if res["gate_map"] is not None:
            im = axes[r][3].imshow(res["gate_map"], cmap="viridis", vmin=0, vmax=1)
            fig.colorbar(im, ax=axes[r][3], fraction=0.046)
        axes[r][3].set_title("GLGF gate (1 = global decides)", fontsize=8)
        n = res["num_experts"]
        im = axes[r][4].imshow(res["expert_map"], cmap=plt.get_cmap("Set2", n), vmin=-0.5, vmax=n - 0.5)
        fig.colorbar(im, ax=axes[r][4], ticks=range(n), fraction=0.046)
        axes[r][4].set_title(f"top-1 expert, block {res['expert_block']}", fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def measure(model, sets: dict, limit: int | None, examples: int, experts: bool = True) -> tuple[dict, list]:
    """The per-set statistics of one model, and its analyses of the first ``examples``
    images of every set (for the figure). ``experts=False`` leaves out the forced-expert
    outputs (``expert_j``), which the routing options do not change."""
    num_experts = len(next(iter(model.routed.values())).experts) if experts else 0
    summary, shown = {}, []
    for set_name, images in sets.items():
        stats = {k: [] for k in ("disagree_prototype", "disagree_expert", "gate", "psnr")}
        stats.update({f"expert_{j}": [] for j in range(num_experts)})
        globals_ = []
        for i, (name, img, target) in enumerate(images[:limit]):
            res = analyse(model, img)
            for key in ("disagree_prototype", "disagree_expert", "gate"):
                stats[key].append(res[key])
            stats["psnr"].append(psnr(res["output"], target))
            globals_.append(res["global_prototype"])
            x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
            for j in range(num_experts):
                forced = forced_expert_output(model, x, j)[0].permute(1, 2, 0).clamp(0, 1).numpy()
                stats[f"expert_{j}"].append(psnr(forced, target))
            if i < examples:
                shown.append((f"{set_name.split(' (')[0]} {name}", img, res))
        summary[set_name] = {k: float(np.mean([v for v in vals if v is not None])) if vals else None
                             for k, vals in stats.items()}
        summary[set_name]["images"] = len(stats["psnr"])
        summary[set_name]["global_prototypes"] = {p: globals_.count(p) for p in sorted(set(globals_))}
    return summary, shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True, type=Path)
    parser.add_argument("--weights", nargs="*", default=[],
                        help="SLER-IR checkpoints, compared row by row (default: the shipped one)")
    parser.add_argument("-o", "--output", default="runs/sler_ir_routing", type=Path)
    parser.add_argument("--limit", type=int, default=None, help="images per set (default: all)")
    parser.add_argument("--examples", type=int, default=2, help="images per set in the figure")
    parser.add_argument("--routing", nargs="*", default=[], metavar="SMOOTHING:MARGIN",
                        help="also measure each checkpoint with these inference-time routing options")
    args = parser.parse_args()
    try:
        variants = [(int(s), float(m)) for s, m in (v.split(":") for v in args.routing)]
    except ValueError:
        parser.error("--routing takes SMOOTHING:MARGIN pairs, e.g. 5:0.1")
    if any(s < 1 or s % 2 == 0 or m < 0 for s, m in variants):
        parser.error("--routing: SMOOTHING is an odd number of regions, MARGIN is not negative")
    sets = image_sets(args.data_root)
    args.output.mkdir(parents=True, exist_ok=True)
    summary, rows, num_tasks = {}, {}, 0
    for path in args.weights or [None]:
        loaded = load_pretrained(None if path else "sler_ir_tiny", path)
        name = loaded.name if not path else (
            Path(path).parent.name if Path(path).stem in ("final", "best", "ema") else Path(path).stem)
        encoder = loaded.model.encoder
        trained = (encoder.smoothing, encoder.local_margin)
        for smoothing, margin in [trained] + variants:
            encoder.smoothing, encoder.local_margin = smoothing, margin
            label = name if (smoothing, margin) == trained else f"{name} (smoothing {smoothing}, margin {margin:g})"
            summary[label], shown = measure(loaded.model, sets, args.limit, args.examples,
                                            experts=(smoothing, margin) == trained)
            summary[label]["model"] = loaded.source
            num_tasks = max(num_tasks, len(loaded.model.prototypes()))
            for set_name, stats in summary[label].items():
                if isinstance(stats, dict):
                    print(label, "|", set_name, json.dumps(stats))
            for i, (img_name, img, res) in enumerate(shown):  # the same image of every model together
                rows.setdefault(i, []).append((f"{label}: {img_name}", img, res))
    (args.output / "routing.json").write_text(json.dumps(summary, indent=1) + "\n")
    figure([r for i in sorted(rows) for r in rows[i]], args.output / "routing.png", num_tasks)
    print(f"wrote {args.output / 'routing.json'} and {args.output / 'routing.png'}")


if __name__ == "__main__":
    main()
