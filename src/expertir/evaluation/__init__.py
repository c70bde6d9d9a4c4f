"""Evaluation: benchmark tables (``runner``, ``tables``), their rows (``methods``), classical
baselines (``classical``), the acceptance verdict (``verdict``), result figures
(``figures``), model cards and the results document (``publish``) and the efficiency report
(``efficiency``)."""

from expertir.evaluation.classical import CLASSICAL_METHODS, make_classical, noise_sigma
from expertir.evaluation.methods import build_methods
from expertir.evaluation.runner import EvalReport, ModelMethod, evaluate
from expertir.evaluation.tables import average, to_csv, to_dict, to_markdown, write_tables

__all__ = ["CLASSICAL_METHODS", "EvalReport", "ModelMethod", "average", "build_methods", "evaluate",
           "make_classical", "noise_sigma", "to_csv", "to_dict", "to_markdown", "write_tables"]
