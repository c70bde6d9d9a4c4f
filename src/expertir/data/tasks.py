"""Task ids and benchmark definitions (docs/design.md, "Protocol").

A *task id* names one degradation the all-in-one benchmarks measure. Its position in
:data:`TASK_IDS` is the integer label carried by training batches (used only by the
training losses: the contrastive embedding loss and the balance losses). Models never see
it at test time.
"""

from __future__ import annotations

from expertir.errors import ExpertirError

#: The task ids, in label order (index = integer label in batches). ``clean`` is an
#: undegraded image whose target is itself: it teaches a model to leave clean images alone.
TASK_IDS: list[str] = [
    "denoise_15", "denoise_25", "denoise_50", "derain", "dehaze", "deblur", "lowlight", "clean",
]

#: The task ids that degrade an image (all but ``clean``).
DEGRADATION_TASKS: list[str] = [t for t in TASK_IDS if t != "clean"]

#: Noise level σ (0–255 scale) of each denoising task.
NOISE_SIGMA: dict[str, int] = {"denoise_15": 15, "denoise_25": 25, "denoise_50": 50}

#: Three-task (PromptIR) and five-task (AdaIR / MoCE-IR) settings. The five-task setting
#: evaluates denoising at σ=25 only.
BENCHMARKS: dict[str, list[str]] = {
    "aio3": ["denoise_15", "denoise_25", "denoise_50", "derain", "dehaze"],
    "aio5": ["denoise_25", "derain", "dehaze", "deblur", "lowlight"],
}

#: The test set each task is reported on in the papers.
TEST_SET_NAMES: dict[str, str] = {
    "denoise_15": "CBSD68 σ=15",
    "denoise_25": "CBSD68 σ=25",
    "denoise_50": "CBSD68 σ=50",
    "derain": "Rain100L",
    "dehaze": "SOTS-outdoor",
    "deblur": "GoPro",
    "lowlight": "LOLv1",
    "clean": "clean images",
}


def task_label(task: str) -> int:
    """Integer label of a task id (its index in :data:`TASK_IDS`)."""
    try:
        return TASK_IDS.index(task)
    except ValueError:
        raise ExpertirError(f"unknown task {task!r} (known: {', '.join(TASK_IDS)})") from None


def benchmark_tasks(name: str) -> list[str]:
    """Task ids of a benchmark setting (``aio3`` or ``aio5``)."""
    try:
        return list(BENCHMARKS[name])
    except KeyError:
        raise ExpertirError(f"unknown benchmark {name!r} (known: {', '.join(BENCHMARKS)})") from None
