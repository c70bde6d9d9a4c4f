"""``expertir demo``: restore the bundled samples with the shipped models; write a figure and a table.

The samples (``expertir/samples``: crops of test images, one per task, with their clean
versions, and one clean image that should be left alone) are restored blind by every
shipped all-in-one model. Written to the output
folder: the restored images, ``demo.png`` (input | each model | clean, PSNR in the titles),
and ``demo.md`` / ``demo.json`` (PSNR/SSIM per image, with the protocol line).
"""

from __future__ import annotations

import json
from pathlib import Path

from expertir.errors import ExpertirError

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples"
#: Columns of the figure, in order, when their weights are shipped.
DEMO_MODELS = ("sler_ir", "cea", "restormer")
LABELS = {"sler_ir": "SLER-IR", "cea": "CEA", "restormer": "Restormer"}


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="restore the bundled samples with the shipped weights",
                       description="Restore the bundled sample images (noise, rain, haze, blur, "
                                   "low light, a spatially varying mix) with every shipped model, "
                                   "and write the results, a side-by-side figure and a PSNR/SSIM table.")
    p.add_argument("-o", "--output", default="demo_output", metavar="DIR",
                   help="output folder (default: demo_output)")
    p.add_argument("--device", metavar="D", help="cpu, cuda, cuda:N or mps (default: best available)")
    p.set_defaults(func=run)


def load_samples() -> list[dict]:
    """The manifest entries, each with ``input`` and ``target`` arrays loaded."""
    from expertir.imageio import load_rgb

    manifest = SAMPLES_DIR / "manifest.json"
    if not manifest.is_file():
        raise ExpertirError(f"{manifest}: sample manifest missing; reinstall the package")
    entries = json.loads(manifest.read_text())
    for e in entries:
        e["input"] = load_rgb(SAMPLES_DIR / "input" / e["name"])
        e["target"] = load_rgb(SAMPLES_DIR / "target" / e["name"])
    return entries


def demo_models(device) -> list[tuple[str, object, str]]:
    """(label, model, description) for each shipped model."""
    from expertir.weights import load_pretrained, shipped_weights

    models = [(LABELS[name], loaded.model, loaded.source)
              for name in DEMO_MODELS if shipped_weights(name) is not None
              for loaded in [load_pretrained(name, device=device)]]
    if not models:
        raise ExpertirError("no trained weights are shipped in this build; nothing to demo")
    return models


def write_figure(path: Path, samples: list[dict], labels: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["Input"] + labels + ["Clean"]
    fig, axes = plt.subplots(len(samples), len(cols), figsize=(2.2 * len(cols), 2.3 * len(samples)),
                             squeeze=False)
    for r, s in enumerate(samples):
        images = [s["input"]] + [s["outputs"][lab] for lab in labels] + [s["target"]]
        scores = [s["scores"]["Input"]] + [s["scores"][lab] for lab in labels] + [None]
        for c, (img, score) in enumerate(zip(images, scores)):
            ax = axes[r, c]
            ax.imshow(img.clip(0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            title = cols[c] if r == 0 else ""
            if score is not None:
                title = f"{title}\n{score[0]:.2f} dB" if title else f"{score[0]:.2f} dB"
            ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel(s["task"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    from tqdm import tqdm

    from expertir.imageio import save_rgb
    from expertir.inference import restore, select_device
    from expertir.metrics import protocol_line, psnr, ssim

    device = select_device(args.device)
    out = Path(args.output)
    samples = load_samples()
    models = demo_models(device)
    labels = [label for label, _, _ in models]
    for label, _, desc in models:
        print(f"model {label}: {desc}")
    for s in tqdm(samples, desc="demo", unit="img"):
        s["outputs"], s["scores"] = {}, {"Input": (psnr(s["input"], s["target"]), ssim(s["input"], s["target"]))}
        for label, net, _ in models:
            restored = restore(net, s["input"], device=device, on_measure=tqdm.write)
            s["outputs"][label] = restored
            s["scores"][label] = (psnr(restored, s["target"]), ssim(restored, s["target"]))
            save_rgb(out / label.split()[0].lower().replace("-", "_") / s["name"], restored)

    cols = ["Input"] + labels
    lines = ["| Sample | Task | " + " | ".join(cols) + " |", "|---|---|" + ":---:|" * len(cols)]
    for s in samples:
        cells = [f"{s['scores'][c][0]:.2f}/{s['scores'][c][1]:.3f}" for c in cols]
        lines.append(f"| {s['name']} | {s['task']} | " + " | ".join(cells) + " |")
    degraded = [s for s in samples if s["task"] != "clean"]
    means = [sum(s["scores"][c][0] for s in degraded) / len(degraded) for c in cols]
    lines.append("| **mean PSNR** (degraded samples) | | " + " | ".join(f"{m:.2f}" for m in means) + " |")
    table = "\n".join(lines)
    protocol = protocol_line()
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.md").write_text(f"Cells: PSNR (dB) / SSIM.\n\n{table}\n\nProtocol: {protocol}.\n")
    (out / "demo.json").write_text(json.dumps(
        {"protocol": protocol, "models": {lab: d for lab, _, d in models},
         "samples": [{"name": s["name"], "task": s["task"], "source": s["source"],
                      "scores": {c: {"psnr": s["scores"][c][0], "ssim": s["scores"][c][1]} for c in cols}}
                     for s in samples]}, indent=1) + "\n")
    write_figure(out / "demo.png", samples, labels)
    print()
    print(table)
    print(f"\nProtocol: {protocol}.")
    print(f"\nwrote {out}/demo.png (figure), {out}/demo.md and demo.json (table), "
          f"restored images under {out}/<model>/")
    return 0
