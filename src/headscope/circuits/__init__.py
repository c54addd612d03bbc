"""Causal circuits: which heads feed which, measured by patching (tasks, activation patching,
path patching, edge attribution, faithfulness)."""

from .tasks import CircuitTask, induction_task, load_pairs, task_metric

__all__ = ["CircuitTask", "induction_task", "load_pairs", "task_metric"]
