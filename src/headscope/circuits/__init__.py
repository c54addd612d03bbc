"""Causal circuits: which heads feed which, measured by patching (tasks, activation patching,
path patching, edge attribution, faithfulness)."""

from .eap import edge_attribution
from .edges import EdgeGraph, patched_metric
from .faithfulness import edge_circuit, faithfulness_curve, rank_agreement, top_overlap
from .tasks import CircuitTask, induction_task, load_pairs, task_metric

__all__ = [
    "CircuitTask",
    "EdgeGraph",
    "edge_attribution",
    "edge_circuit",
    "faithfulness_curve",
    "induction_task",
    "load_pairs",
    "patched_metric",
    "rank_agreement",
    "task_metric",
    "top_overlap",
]
