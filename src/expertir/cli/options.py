"""Command-line options that several commands share."""

from __future__ import annotations


def add_model_options(p, untrained_note: str = "pipeline testing only") -> None:
    """``--model NAME`` | ``--weights FILE``, and ``--untrained``: which network to run
    (read by :func:`expertir.weights.load_pretrained`)."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="NAME",
                     help="registered model; uses its shipped weights (default: the shipped default model)")
    src.add_argument("--weights", metavar="FILE", help="an expertir .safetensors checkpoint")
    p.add_argument("--untrained", action="store_true",
                   help=f"run --model with random weights ({untrained_note})")


def add_self_ensemble_option(p) -> None:
    """``--self-ensemble N``: average N flipped/transposed views (:func:`expertir.inference.restore`)."""
    p.add_argument("--self-ensemble", type=int, choices=(1, 2, 4, 8), default=1, metavar="N",
                   help="restore N of the image's flips and transposes (2, 4 or 8) and average "
                        "them: N times the time for a small gain (default 1: the image once)")
