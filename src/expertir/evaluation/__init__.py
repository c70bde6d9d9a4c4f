"""Evaluation: benchmark tables (``runner``, ``tables``), classical baselines (``classical``)
and the efficiency report (``efficiency``)."""

from expertir.evaluation.classical import CLASSICAL_METHODS, make_classical, noise_sigma
from expertir.evaluation.runner import EvalReport, ModelMethod, evaluate
from expertir.evaluation.tables import to_csv, to_dict, to_markdown, write_tables

__all__ = ["CLASSICAL_METHODS", "EvalReport", "ModelMethod", "evaluate", "make_classical",
           "noise_sigma", "to_csv", "to_dict", "to_markdown", "write_tables"]
