"""Watch an induction head form: train a small attention-only transformer here, then take its checkpoints apart.

>>> from headscope.toy import train_toy, analyse_run
>>> run = train_toy("toy-run")                 # doctest: +SKIP
>>> phase = analyse_run("toy-run")             # doctest: +SKIP
>>> phase.window.before, phase.window.after    # doctest: +SKIP
"""

from .data import CopyBatch, CopyRecipe, copy_batch
from .phase import PhaseWindow, detect_phase_change
from .phase_analysis import PhaseAnalysis, analyse_run, save_phase
from .train import ToyConfig, ToyRun, build_model, build_tokenizer, train_toy

__all__ = [
    "CopyBatch",
    "CopyRecipe",
    "PhaseAnalysis",
    "PhaseWindow",
    "ToyConfig",
    "ToyRun",
    "analyse_run",
    "build_model",
    "build_tokenizer",
    "copy_batch",
    "detect_phase_change",
    "save_phase",
    "train_toy",
]
