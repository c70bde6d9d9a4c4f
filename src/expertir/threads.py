"""CPU thread defaults that stay fast when other programs share the cores (README, Training).

torch runs its CPU kernels on an OpenMP thread pool (GNU libgomp in the pip wheels). After
each parallel region, libgomp's threads by default *spin* for a while before they sleep, to
start the next region a few microseconds sooner. On a machine whose cores are shared with
another busy process that backfires: a spinning thread holds a core the other process
needs, while the thread it waits for is descheduled, and every one of the thousands of
parallel regions of a training step pays for it (measured on 2 cores: README, "A busy
machine"). :func:`set_openmp_defaults` therefore makes idle threads sleep at once
(``OMP_WAIT_POLICY=PASSIVE``) unless the user chose a policy. An *empty* value
(``OMP_WAIT_POLICY= expertir train …``) asks for libgomp's own default: the variable is
removed, since libgomp rejects an empty value with a warning.

libgomp reads the variable once, when torch loads it, so this must run before the first
``import torch``: the ``expertir`` command does it first thing, and the test suite in its
``conftest.py``. A program that imports torch itself can set the variable in its own
environment.
"""

from __future__ import annotations

import os
import sys

#: Environment defaults for OpenMP; a value the user set is kept.
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def set_openmp_defaults() -> bool:
    """Set :data:`OPENMP_DEFAULTS` where unset; False (and nothing set) if torch is already loaded."""
    if "torch" in sys.modules:
        return False
    for name, value in OPENMP_DEFAULTS.items():
        if os.environ.get(name) == "":
            del os.environ[name]  # the library's own default
        else:
            os.environ.setdefault(name, value)
    return True
