"""Figures of the explanations (PNG, matplotlib's object API with the Agg canvas).

* :func:`explanation_figure`: one image (input, restored, change, blind estimate, and the
  routing maps of SLER-IR or the affinity maps of CEA).
* :func:`sphere_figure`: the embedding sphere of a benchmark from two opposite viewpoints.
* :func:`confusion_figure`: the nearest-prototype confusion matrix.

Colours are fixed: each task has one colour in every figure (the noise levels are shades
of blue), experts use a qualitative palette, signed affinities a diverging one centred on zero.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from expertir.atomic import atomic_path
from expertir.explanation.image import Explanation

TASK_COLOURS = {
    "denoise_15": "#9ecae1", "denoise_25": "#4292c6", "denoise_50": "#08306b",
    "derain": "#2ca02c", "dehaze": "#ff7f0e", "deblur": "#9467bd", "lowlight": "#8c564b",
    "clean": "#7f7f7f",
}
EXPERT_COLOURS = ["#e41a1c", "#377eb8", "#4daf4a", "#ffd92f", "#984ea3", "#ff7f00", "#a65628", "#f781bf"]
#: Longest side of an image drawn into a figure (larger ones are shown scaled down).
DISPLAY_SIDE = 900


def task_colour(task: str, index: int = 0) -> str:
    import matplotlib

    return TASK_COLOURS.get(task, matplotlib.colormaps["tab10"](index % 10))


def expert_colour(j: int) -> str:
    return EXPERT_COLOURS[j % len(EXPERT_COLOURS)]


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _save(fig, path: str | Path, dpi: int = 100) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def _display(img: np.ndarray) -> np.ndarray:
    """``img`` scaled down (area averaging) so its longest side is at most DISPLAY_SIDE."""
    import cv2

    h, w = img.shape[:2]
    f = DISPLAY_SIDE / max(h, w)
    if f >= 1:
        return img
    return cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def _image_axes(ax, shape) -> None:
    h, w = shape[:2]
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])


def _show(ax, img, shape, **kw):
    """Draw ``img`` stretched over the original image's pixel coordinates."""
    h, w = shape[:2]
    im = ax.imshow(_display(img), extent=(0, w, h, 0), interpolation=kw.pop("interpolation", "antialiased"), **kw)
    _image_axes(ax, shape)
    return im


def _gray(img: np.ndarray) -> np.ndarray:
    """Dimmed luminance, the background of the overlays."""
    lum = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return 0.25 + 0.6 * lum


def _region_overlay(ax, ex: Explanation, index_map: np.ndarray, colours: list, cell: float) -> None:
    from matplotlib.colors import ListedColormap

    _show(ax, _gray(ex.input), ex.input.shape, cmap="gray", vmin=0, vmax=1)
    h, w = index_map.shape
    ax.imshow(index_map, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(colours) - 0.5,
              alpha=0.55, interpolation="nearest", extent=(0, w * cell, h * cell, 0))
    _image_axes(ax, ex.input.shape)


def _colourbar(fig, ax, im, label: str) -> None:
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)


def _estimate_panel(ax, ex: Explanation) -> None:
    est = ex.estimate
    if est is None:
        ax.axis("off")
        ax.text(0.5, 0.5, "no degradation estimate\n\n" + textwrap.fill(ex.no_estimate, 34),
                ha="center", va="center", fontsize=10, transform=ax.transAxes)
        return
    order = np.arange(len(est.tasks))[::-1]
    y = np.arange(len(order))
    top = int(np.argmax(est.scores))
    colours = [task_colour(est.tasks[i], i) for i in order]
    bars = ax.barh(y, est.scores[order], color=colours,
                   edgecolor=["black" if i == top else "none" for i in order], linewidth=1.5)
    ax.set_yticks(y, [est.tasks[i] for i in order], fontsize=9)
    for bar, i in zip(bars, order):
        value = est.scores[i]
        text = f"{value:+.2f}" if est.method == "prototypes" else f"{value:.2f}"
        if est.method == "prototypes":
            text += f"  (p={est.probabilities[i]:.2f})"
        ax.text(max(value, 0) + 0.02, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=7.5)
    if est.method == "prototypes":
        ax.set_xlim(min(-0.5, float(est.scores.min()) - 0.05), 1.6)
        ax.axvline(0, color="gray", lw=0.8)
    else:
        ax.set_xlim(0, 1.45)
    ax.set_xlabel(est.score_label, fontsize=8)
    second = est.tasks[int(np.argsort(est.scores)[-2])] if len(est.tasks) > 1 else "-"
    ax.set_title(f"blind estimate: {est.top}\nmargin {est.margin:.2f} over {second}", fontsize=10)
    ax.tick_params(axis="x", labelsize=7)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _top_row(fig, axes, ex: Explanation) -> None:
    h, w = ex.input.shape[:2]
    _show(axes[0], ex.input, ex.input.shape)
    axes[0].set_title(f"input ({w}×{h})", fontsize=10)
    _show(axes[1], ex.output, ex.input.shape)
    axes[1].set_title(f"restored ({ex.model})", fontsize=10)
    change = ex.change
    vmax = max(float(np.percentile(change, 99.5)), 1e-3)
    im = _show(axes[2], change.astype(np.float32), ex.input.shape, cmap="magma", vmin=0, vmax=vmax)
    axes[2].set_title(f"where it changed the image\nmean |output − input| = {change.mean():.3f}", fontsize=10)
    _colourbar(fig, axes[2], im, "|output − input| (0–1)")
    _estimate_panel(axes[3], ex)


def _expert_panels(fig, axes, ex: Explanation) -> None:
    from matplotlib.patches import Patch

    n_exp = max(len(e.usage) for e in ex.experts)
    colours = [expert_colour(j) for j in range(n_exp)]
    for ax, e in zip(axes, ex.experts):
        _region_overlay(ax, ex, e.dominant, colours, ex.region)
        use = " · ".join(f"{j}: {100 * u:.0f}%" for j, u in enumerate(e.usage))
        ax.set_title(f"{e.layer}: strongest expert per region\nmean weight  {use}", fontsize=9)
    handles = [Patch(color=c, alpha=0.7, label=f"expert {j}") for j, c in enumerate(colours)]
    axes[0].legend(handles=handles, loc="lower left", fontsize=7.5, framealpha=0.85, ncol=2)


def _sler_bottom(fig, ax_proto, ax_gate, ax_usage, ex: Explanation) -> None:
    from matplotlib.patches import Patch

    tasks = ex.estimate.tasks
    colours = [task_colour(t, i) for i, t in enumerate(tasks)]
    _region_overlay(ax_proto, ex, ex.nearest_prototype, colours, ex.region)
    counts = np.bincount(ex.nearest_prototype.ravel(), minlength=len(tasks))
    ax_proto.set_title("nearest prototype of each local embedding", fontsize=9)
    handles = [Patch(color=colours[i], alpha=0.7, label=f"{tasks[i]} {100 * counts[i] / counts.sum():.0f}%")
               for i in np.argsort(-counts) if counts[i]]
    ax_proto.legend(handles=handles, loc="lower left", fontsize=7.5, framealpha=0.85)
    if ex.gate is None:
        ax_gate.axis("off")
        ax_gate.text(0.5, 0.5, "no GLGF gate\n(every region routed by g)", ha="center", va="center",
                     transform=ax_gate.transAxes)
    else:
        h, w = ex.gate.shape
        im = ax_gate.imshow(ex.gate, cmap="viridis", vmin=0, vmax=1, interpolation="nearest",
                            extent=(0, w * ex.region, h * ex.region, 0))
        _image_axes(ax_gate, ex.input.shape)
        ax_gate.set_title(f"GLGF gate (mean {ex.gate.mean():.2f})\n1: routed by the global g, 0: by the local l_p",
                          fontsize=9)
        _colourbar(fig, ax_gate, im, "weight of g")
    layers = list(ex.usage)
    usage = np.stack([ex.usage[k] for k in layers])
    left = np.zeros(len(layers))
    for j in range(usage.shape[1]):
        ax_usage.bar(np.arange(len(layers)), usage[:, j], bottom=left, color=expert_colour(j),
                     alpha=0.8, label=f"expert {j}")
        left += usage[:, j]
    ax_usage.set_xticks(np.arange(len(layers)), layers, rotation=45, ha="right", fontsize=7.5)
    ax_usage.set_ylim(0, 1)
    ax_usage.set_ylabel("mean routing weight", fontsize=8)
    ax_usage.set_title("expert use in every routed block (whole image)", fontsize=9)
    ax_usage.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7.5, frameon=False)
    ax_usage.tick_params(axis="y", labelsize=7)


def _component_panels(fig, axes, ex: Explanation) -> None:
    for ax, c in zip(axes, ex.components):
        m = max(float(np.percentile(np.abs(c.map), 99.5)), 1e-6)
        h, w = c.map.shape
        im = ax.imshow(c.map, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest",
                       extent=(0, w * c.cell, h * c.cell, 0))
        _image_axes(ax, ex.input.shape)
        ax.set_title(f"{c.layer} · component {c.index}\nstrength {c.strength:.3g} · "
                     f"{100 * (c.map > 0).mean():.0f}% of tokens positive", fontsize=9)
        _colourbar(fig, ax, im, "signed affinity ⟨x, A_k⟩/√C")


def explanation_figure(ex: Explanation, path: str | Path) -> None:
    """Write the figure of one :class:`Explanation` to ``path`` (PNG)."""
    panels = {"sler_ir": len(ex.experts), "cea": len(ex.components)}.get(ex.kind, 0)
    middle = -(-panels // 4)
    rows = 1 + middle + (ex.kind == "sler_ir")
    h, w = ex.input.shape[:2]
    row = min(max(3.3 * h / w + 1.2, 3.2), 5.6)  # inches: a panel is about 3.3 inches wide
    height = row * rows + 1.6
    fig = _new_figure(18, height)
    grid = fig.add_gridspec(rows, 4, hspace=0.45, wspace=0.45, left=0.03, right=0.95,
                            top=1 - 0.95 / height, bottom=(1.05 if ex.kind == "sler_ir" else 0.45) / height)
    _top_row(fig, [fig.add_subplot(grid[0, c]) for c in range(4)], ex)
    middle_axes = [fig.add_subplot(grid[1 + i // 4, i % 4]) for i in range(panels)]
    if ex.kind == "sler_ir":
        _expert_panels(fig, middle_axes, ex)
        _sler_bottom(fig, fig.add_subplot(grid[rows - 1, 0]), fig.add_subplot(grid[rows - 1, 1]),
                     fig.add_subplot(grid[rows - 1, 2:]), ex)
    elif ex.kind == "cea":
        _component_panels(fig, middle_axes, ex)
    fig.suptitle(f"{Path(ex.name).name}  —  {ex.source}", fontsize=12, fontweight="bold", y=0.995)
    notes = []
    if ex.estimate is not None and ex.estimate.note:
        notes.append(f"Estimate: {ex.estimate.note}.")
    if ex.kind == "sler_ir":
        notes.append(f"Regions: 16×16 pixels of the network input ({ex.region:.0f} px of this image).")
    if ex.kind != "plain" and ex.aux_scale < 1:
        notes.append(f"Maps and estimate computed on a {ex.aux_size[1]}×{ex.aux_size[0]} copy "
                     f"(×{ex.aux_scale:.2f}) to bound memory; the restored image is full size.")
    if notes:
        fig.text(0.01, 0.005, textwrap.fill("  ".join(notes), 230), fontsize=8.5, va="bottom", color="#333333")
    _save(fig, path)


def sphere_figure(report, path: str | Path) -> None:
    """The global embeddings of a :class:`~expertir.explanation.sphere.SphereReport` on a
    3-D sphere (:func:`~expertir.explanation.sphere.sphere_coordinates`), from two opposite
    viewpoints."""
    from matplotlib.lines import Line2D

    from expertir.explanation.sphere import sphere_coordinates

    points, protos, share = sphere_coordinates(report.embeddings, report.labels, report.prototypes)
    fig = _new_figure(15, 7.4)
    u, v = np.mgrid[0:2 * np.pi:36j, 0:np.pi:18j]
    sphere = np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v)
    for k, azim in enumerate((35, 215)):
        ax = fig.add_subplot(1, 2, k + 1, projection="3d")
        ax.plot_wireframe(*sphere, color="#cccccc", linewidth=0.4)
        for i, task in enumerate(report.tasks):
            m = report.labels == i
            ax.scatter(*points[m].T, s=14, color=task_colour(task, i), alpha=0.9, depthshade=True)
        for i, task in enumerate(report.prototype_tasks):
            ax.scatter(*protos[i], s=260, marker="*", color=task_colour(task, i), edgecolor="black",
                       linewidth=1.0, depthshade=False)
            ax.text(*(protos[i] * 1.22), task, fontsize=8, ha="center", va="center",
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.7, "lw": 0})
        ax.view_init(elev=20, azim=azim)
        ax.set_box_aspect((1, 1, 1))
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
        ax.set_zlim(-1, 1)
        ax.set_xlabel("PC 1", fontsize=8)
        ax.set_ylabel("PC 2", fontsize=8)
        ax.set_zlabel("PC 3", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_title(f"view from azimuth {azim}°", fontsize=10)
    handles = [Line2D([], [], marker="o", ls="", color=task_colour(t, i),
                      label=f"{t}: {report.set_names.get(t, '')} ({int((report.labels == i).sum())})")
               for i, t in enumerate(report.tasks)]
    handles.append(Line2D([], [], marker="*", ls="", markersize=13, color="white", markeredgecolor="black",
                          label="task prototype (colour of its task)"))
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle(f"{report.model}: degradation embeddings of the {report.benchmark} test images, "
                 f"coloured by true task (far points drawn paler)\nprojected on the first 3 principal "
                 f"directions of the task means (each task counts once; {100 * share:.0f}% of their "
                 f"variance) and re-normalised onto the unit sphere\nstars: the prototypes, mapped the same way",
                 fontsize=11)
    fig.subplots_adjust(left=0.0, right=1.0, top=0.86, bottom=0.14, wspace=0.0)
    _save(fig, path)


def confusion_figure(report, path: str | Path) -> None:
    """Rows: true task; columns: nearest prototype; cells: image counts, coloured by row share."""
    m = report.confusion()
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig = _new_figure(1.1 * len(report.prototype_tasks) + 3.2, 0.75 * len(report.tasks) + 2.6)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for r in range(m.shape[0]):
        for c in range(m.shape[1]):
            if m[r, c]:
                ax.text(c, r, str(m[r, c]), ha="center", va="center", fontsize=10,
                        color="white" if share[r, c] > 0.6 else "black")
    ax.set_xticks(range(len(report.prototype_tasks)), report.prototype_tasks, rotation=35, ha="right")
    ax.set_yticks(range(len(report.tasks)), [f"{t} ({m[i].sum()})" for i, t in enumerate(report.tasks)])
    ax.set_xlabel("nearest prototype (blind guess)")
    ax.set_ylabel("true task (images)")
    overall = report.rows()[-1]
    ax.set_title(f"{report.model} on {report.benchmark}: nearest-prototype accuracy "
                 f"{100 * overall['accuracy']:.1f}% (family {100 * overall['family_accuracy']:.1f}%)",
                 fontsize=10)
    _colourbar(fig, ax, im, "share of the row")
    fig.tight_layout()
    _save(fig, path, dpi=110)
