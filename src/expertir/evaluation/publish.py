"""Publishing measured results: model cards, the generated part of the results document,
and the line that says where and when a table was measured.

**Model cards** (``<model>.md`` beside each shipped ``<model>.safetensors``) are generated,
never edited by hand: :func:`render_card` writes one from three sources —

* the checkpoint's metadata (model, steps, seed, batch, precision, training config, data
  sources, validation PSNR), written by the trainer;
* the **training record** ``<model>.json`` beside it (:func:`read_record`), committed with
  the weights: the facts the checkpoint cannot know about itself — the command that trained
  it, the device, the date and the wall time;
* the evaluation section: tables measured by ``make results`` (or ``expertir eval``).

**The results document** keeps its hand-written text; the generated part lies between
:data:`MARK_BEGIN` and :data:`MARK_END` (:func:`replace_marked`) and is rewritten whole on
every run, so no stale number survives beside a new one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from expertir.atomic import atomic_path
from expertir.errors import ExpertirError

MARK_BEGIN = "<!-- results:begin -->"
MARK_END = "<!-- results:end -->"
EVALUATION_HEADING = "## Evaluation"

#: Keys every training record must have, and what they say.
RECORD_KEYS = {
    "command": "the training command (from the repository root; DATA is the data folder)",
    "device": "where it trained",
    "date": "when the training finished (YYYY-MM-DD)",
    "wall_time": "wall-clock training time",
}


def replace_marked(text: str, body: str, begin: str = MARK_BEGIN, end: str = MARK_END) -> str:
    """``text`` with everything between the ``begin`` and ``end`` marker lines replaced by
    ``body``; the markers and the rest of the text are kept. Without markers, the marked
    block is appended at the end."""
    body = body.strip("\n")
    block = f"{begin}\n{body}\n{end}"
    nb, ne = text.count(begin), text.count(end)
    if nb == 0 and ne == 0:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    if nb != 1 or ne != 1 or text.index(begin) > text.index(end):
        raise ExpertirError(f"expected one {begin} line followed by one {end} line "
                            f"(found {nb} and {ne})")
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    return head + block + tail


def write_marked(path: str | Path, body: str) -> Path:
    """Rewrite the marked block of the Markdown file ``path`` (created if absent), atomically."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    try:
        new = replace_marked(old, body)
    except ExpertirError as exc:
        raise ExpertirError(f"{path}: {exc}") from None
    with atomic_path(path) as tmp:
        Path(tmp).write_text(new, encoding="utf-8")
    return path


def machine_line(device: str = "cpu") -> str:
    """The machine a table was measured on: CPU model and cores (and the GPU, if used)."""
    from expertir.evaluation.efficiency import cpu_name

    line = f"{cpu_name()}, {os.cpu_count()} cores"
    if str(device).startswith("cuda"):
        import torch

        line += f", GPU {torch.cuda.get_device_name(torch.device(device))}"
    return line


def record_path(checkpoint: str | Path) -> Path:
    return Path(checkpoint).with_suffix(".json")


def read_record(checkpoint: str | Path) -> dict:
    """The training record of ``checkpoint`` (``<stem>.json`` beside it): :data:`RECORD_KEYS`,
    and optionally ``conditions`` (e.g. what shared the machine while it trained)."""
    path = record_path(checkpoint)
    if not path.is_file():
        keys = ", ".join(RECORD_KEYS)
        raise ExpertirError(f"{path}: no training record for {Path(checkpoint).name} "
                            f"(a JSON object with {keys})")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ExpertirError(f"{path}: not valid JSON ({exc})") from None
    missing = [k for k in RECORD_KEYS if not isinstance(record, dict) or not record.get(k)]
    if missing:
        raise ExpertirError(f"{path}: training record lacks {', '.join(missing)}")
    return record


def card_path(checkpoint: str | Path, cards_dir: str | Path | None = None) -> Path:
    checkpoint = Path(checkpoint)
    return Path(cards_dir or checkpoint.parent) / f"{checkpoint.stem}.md"


def card_evaluation(card: str) -> str:
    """The body of a card's Evaluation section ('' if it has none)."""
    marker = f"\n{EVALUATION_HEADING}\n"
    return card.split(marker, 1)[1].strip("\n") if marker in card else ""


def data_roots(meta: dict) -> dict[str, str]:
    """The data folders a checkpoint was trained from → their public names (``DATA``, then
    ``DATA2`` …): a card names no path of the machine that trained it. Roots that already
    are public names (upper-case words such as ``DATA`` or ``LOL_TRAIN``, written by
    ``tools/export_run.py --path``) are kept."""
    roots = meta.get("data", {}).get("root") or \
        meta.get("training", {}).get("config", {}).get("data", {}).get("root") or []
    roots = [roots] if isinstance(roots, str) else list(roots)
    return {r: "DATA" if i == 0 else f"DATA{i + 1}" for i, r in enumerate(roots)
            if r and not re.fullmatch(r"[A-Z][A-Z0-9_]*", r)}


def _public(text: str, names: dict[str, str]) -> str:
    for path in sorted(names, key=len, reverse=True):
        text = text.replace(path.rstrip("/"), names[path])
    return text


def render_card(checkpoint: str | Path, evaluation: str) -> str:
    """The model card of ``checkpoint``: metadata + training record + ``evaluation``. The
    training data folders appear as ``DATA`` (:func:`data_roots`)."""
    from expertir.checkpoint import read_metadata

    checkpoint = Path(checkpoint)
    meta, record = read_metadata(checkpoint), read_record(checkpoint)
    roots = data_roots(meta)
    training = meta.get("training", {})
    wall = record["wall_time"] + (f" ({record['conditions']})" if record.get("conditions") else "")
    lines = [f"# {meta['model']} — shipped weights", "",
             f"- file: `{checkpoint.name}` ({checkpoint.stat().st_size / 1e6:.1f} MB, safetensors)",
             f"- command: `{record['command']}`",
             f"- device: {record['device']}; date: {record['date']}; training time: {wall}",
             f"- steps: {training.get('steps')}, seed: {training.get('seed')}, effective batch: "
             f"{training.get('effective_batch')}, precision: {training.get('precision')}, "
             f"weights: {training.get('weights')}",
             "", "## Training config", "", "```json", json.dumps(training.get("config"), indent=1),
             "```", "", "## Data", ""]
    lines += [f"- {s}" for s in meta.get("data", {}).get("sources", [])]
    val = meta.get("metrics", {}).get("validation_psnr")
    if val:
        lines += ["", "## Validation PSNR at the end of training (held-out training images, dB)", "",
                  "```json", json.dumps(val, indent=1), "```"]
    lines = [_public(line, roots) for line in lines]
    lines += ["", EVALUATION_HEADING, "", evaluation.strip("\n")]
    return "\n".join(lines) + "\n"


def write_card(checkpoint: str | Path, evaluation: str | None = None,
               cards_dir: str | Path | None = None) -> Path:
    """(Re)write the card of ``checkpoint`` in ``cards_dir`` (default: beside it). With
    ``evaluation`` None the card's current Evaluation section is kept."""
    out = card_path(checkpoint, cards_dir)
    if evaluation is None:
        evaluation = card_evaluation(out.read_text(encoding="utf-8")) if out.is_file() else ""
    text = render_card(checkpoint, evaluation)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return out
