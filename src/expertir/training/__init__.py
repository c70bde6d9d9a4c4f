"""Training engine: configs (:mod:`.config`), LR schedule (:mod:`.schedule`),
EMA (:mod:`.ema`), torchrun/DDP setup (:mod:`.distributed`), step-indexed data
(:mod:`.data`), resumable state (:mod:`.state`), logs (:mod:`.logs`) and the loop
(:mod:`.trainer`). Entry point: ``expertir train --config FILE [key=value ...]``.
"""

from expertir.training.config import DEFAULTS, load_config
from expertir.training.trainer import train

__all__ = ["DEFAULTS", "load_config", "train"]
