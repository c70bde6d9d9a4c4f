"""Model cards from training records, and the generated block of the results document."""

import json

import pytest

from expertir.checkpoint import save_checkpoint
from expertir.errors import ExpertirError
from expertir.evaluation.publish import (MARK_BEGIN, MARK_END, card_evaluation, data_roots, read_record,
                                         render_card, replace_marked, write_card, write_marked)
from expertir.models import build_model
from expertir.weights import list_shipped

DOC = f"# Results\n\nHand-written intro.\n\n{MARK_BEGIN}\nold table 1.23 dB\n{MARK_END}\n\n## Ablations\n\ntext\n"


def test_marked_block_is_replaced_and_the_rest_of_the_file_kept():
    new = replace_marked(DOC, "new table 4.56 dB\n")
    assert "old table" not in new and "new table 4.56 dB" in new
    head, tail = DOC.split(MARK_BEGIN)[0], DOC.split(MARK_END)[1]
    assert new.startswith(head) and new.endswith(tail)
    assert replace_marked(new, "new table 4.56 dB") == new  # rewriting is idempotent


def test_without_markers_the_block_is_appended():
    new = replace_marked("# Results\n\ntext\n", "table")
    assert new == f"# Results\n\ntext\n\n{MARK_BEGIN}\ntable\n{MARK_END}\n"
    assert replace_marked(new, "table 2").count(MARK_BEGIN) == 1


@pytest.mark.parametrize("text", [f"{MARK_BEGIN}\nx\n", f"{MARK_END}\nx\n{MARK_BEGIN}\n",
                                  f"{MARK_BEGIN}\n{MARK_END}\n{MARK_BEGIN}\n{MARK_END}\n"])
def test_broken_markers_are_refused(text, tmp_path):
    with pytest.raises(ExpertirError, match="expected one"):
        replace_marked(text, "x")
    doc = tmp_path / "results.md"
    doc.write_text(text)
    with pytest.raises(ExpertirError, match=str(doc)):
        write_marked(doc, "x")
    assert doc.read_text() == text  # left as it was


def test_write_marked_creates_and_rewrites_a_file(tmp_path):
    doc = tmp_path / "docs" / "results.md"
    write_marked(doc, "one")
    write_marked(doc, "two")
    assert doc.read_text() == f"\n\n{MARK_BEGIN}\ntwo\n{MARK_END}\n"


def _checkpoint(folder, record: dict | None):
    meta = {"training": {"steps": 7, "seed": 3, "effective_batch": 2, "precision": "fp32", "weights": "ema",
                         "config": {"name": "tiny_run", "data": {"root": "/machine/data/"}}},
            "data": {"root": ["/machine/data", "/machine/more"],
                     "sources": ["denoise_25: from /machine/data/denoise/BSD400",
                                 "lowlight: 485 pairs from /machine/more/lowlight/LOLv1-train"]}}
    path = save_checkpoint(folder / "restormer_tiny.safetensors", build_model("restormer_tiny"),
                           "restormer_tiny", meta)
    if record is not None:
        (folder / "restormer_tiny.json").write_text(json.dumps(record))
    return path


RECORD = {"command": "expertir train --config c.yaml", "device": "a 2-core CPU", "date": "2026-01-02",
          "wall_time": "3 h 4 min", "conditions": "alone"}


def test_card_takes_its_training_facts_from_the_record_and_names_no_machine_path(tmp_path):
    path = _checkpoint(tmp_path, RECORD)
    card = render_card(path, "### table\n\n| a | b |")
    assert "- command: `expertir train --config c.yaml`" in card
    assert "- device: a 2-core CPU; date: 2026-01-02; training time: 3 h 4 min (alone)" in card
    assert "- steps: 7, seed: 3, effective batch: 2" in card
    assert "DATA/denoise/BSD400" in card and "DATA2/lowlight/LOLv1-train" in card
    assert "/machine" not in card and '"root": "DATA/"' in card
    assert card_evaluation(card) == "### table\n\n| a | b |"


def test_public_root_names_are_kept_and_machine_paths_renamed():
    meta = {"data": {"root": ["DATA", "LOL_TRAIN", "/machine/extra", "data"]}}
    assert data_roots(meta) == {"/machine/extra": "DATA3", "data": "DATA4"}


def test_write_card_replaces_or_keeps_the_evaluation(tmp_path):
    path = _checkpoint(tmp_path, RECORD)
    cards = tmp_path / "cards"
    out = write_card(path, "first evaluation", cards)
    assert out == cards / "restormer_tiny.md"
    write_card(path, None, cards)  # header regenerated, evaluation kept
    assert card_evaluation(out.read_text()) == "first evaluation"
    write_card(path, "second evaluation", cards)
    assert card_evaluation(out.read_text()) == "second evaluation"


def test_missing_or_incomplete_records_are_one_line_errors(tmp_path):
    path = _checkpoint(tmp_path, None)
    with pytest.raises(ExpertirError, match=r"restormer_tiny\.json: no training record"):
        read_record(path)
    (tmp_path / "restormer_tiny.json").write_text(json.dumps({"command": "x", "date": ""}))
    with pytest.raises(ExpertirError, match="lacks device, date, wall_time"):
        read_record(path)
    (tmp_path / "restormer_tiny.json").write_text("{not json")
    with pytest.raises(ExpertirError, match="not valid JSON"):
        read_record(path)


@pytest.mark.skipif(not list_shipped(), reason="this build ships no weights")
@pytest.mark.parametrize("path", list_shipped(), ids=[p.stem for p in list_shipped()])
def test_every_shipped_card_is_generated_from_its_record(path):
    """A shipped checkpoint has a training record, and its card is what the renderer makes
    of the record, the metadata and the card's own evaluation (no hand-edited facts)."""
    record = read_record(path)
    card = path.with_suffix(".md").read_text()
    assert render_card(path, card_evaluation(card)).strip() == card.strip()
    assert f"`{record['command']}`" in card
