"""Data: degradation synthesis, benchmark readers and the training dataset.

- :mod:`.tasks` — task ids (label order) and the three-/five-task benchmark definitions;
- :mod:`.degradations` — noise, rain, haze, motion blur, low light, compositions and
  spatially varying mixtures, each a pure function of (image, parameters, seed);
- :mod:`.layouts` — the PromptIR, MoCE-IR, by-task and paired folder layouts;
- :mod:`.benchmarks` — :func:`load_benchmark` for evaluation;
- :mod:`.train` — the task-balanced training dataset and its loader;
- :mod:`.synthetic` — writers of mixed and synthetic paired test sets, and the contact sheet.
"""

from expertir.data.benchmarks import Benchmark, Sample, TaskSet, load_benchmark
from expertir.data.tasks import BENCHMARKS, TASK_IDS

__all__ = ["BENCHMARKS", "Benchmark", "Sample", "TASK_IDS", "TaskSet", "load_benchmark"]
