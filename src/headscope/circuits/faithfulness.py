"""Does the attributed circuit do the task? Measured by patching, with intervals and a second seed.

Attribution scores are first-order estimates; they can rank edges well and still pick a circuit
that does not work (Hanna et al. 2024 show EAP's circuits are often unfaithful where EAP-IG's
are not). So the circuit is checked by patching the model itself:

* the **faithfulness curve**: for each circuit size k, the metric with only the top-k edges
  clean and every other edge corrupted (:func:`headscope.circuits.edges.patched_metric`),
  normalised so 1 = clean behaviour, 0 = corrupted (mean patched - mean corrupted over mean clean
  - mean corrupted), with a bootstrap interval that resamples each example with its own gap
  (:func:`headscope.stats.bootstrap_ratio_interval`, as activation and path patching do);
* **rank agreement**: a sample of edges (the strongest half and a seeded random draw from the
  rest), each patched alone to its corrupted value; Spearman's rho between that measured change
  and the attribution score (pandas ranks);
* **stability**: the same attribution on a second seed of the task data, and the Jaccard overlap
  of the two top-k edge sets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..errors import BadInput
from ..models.model import as_model, in_eval_mode
from ..results.edge_results import EdgeCircuit, EdgeScores
from ..settings import whole_number
from .eap import DEFAULT_IG_STEPS, edge_attribution
from .edges import EdgeGraph, clean_corrupt_metric, corrupt_run, patched_metric
from .tasks import CircuitTask, clean_corrupt_gap, normalised_rows

#: Circuit sizes the faithfulness curve is measured at (those up to the model's edge count, plus all edges).
CURVE_POINTS = (0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def faithfulness_curve(
    model, task: CircuitTask, scores: EdgeScores, points: Sequence[int] = CURVE_POINTS, seed: int = 0
) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """``(rows, clean, corrupt)``: one row per circuit size (``n_edges``, ``faithfulness``, ``low``, ``high``, ``metric``).

    ``clean``/``corrupt`` are the per-example metrics the rows are normalised by. Every point
    is a patched forward pass; the last point keeps every edge (it must give 1).
    """
    graph = EdgeGraph.of(model)
    clean, corrupt = clean_corrupt_metric(model, task)
    ranked = scores.ranked()
    sizes = sorted({min(int(k), len(ranked)) for k in points} | {len(ranked)})
    rows = []
    run = corrupt_run(model, task, graph)
    for k in sizes:
        per = patched_metric(model, task, [tuple(e) for e in ranked[:k]], keep=True, graph=graph, corrupt=run)
        (value,), (lo,), (hi,) = normalised_rows([per], clean, corrupt, seed=seed)
        rows.append(
            {
                "n_edges": k,
                "faithfulness": float(value),
                "low": float(lo),
                "high": float(hi),
                "metric": float(per.mean()),
            }
        )
    return rows, clean, corrupt


def sample_edges(scores: EdgeScores, n: int = 50, seed: int = 0) -> np.ndarray:
    """``n`` edges: the ``n // 2`` strongest by ``|score|`` and a seeded uniform draw from the others."""
    ranked = scores.ranked()
    top = ranked[: n // 2]
    rest = ranked[n // 2 :]
    pick = np.random.default_rng(seed).choice(len(rest), size=min(n - len(top), len(rest)), replace=False)
    return np.concatenate([top, rest[np.sort(pick)]])


def rank_agreement(model, task: CircuitTask, scores: EdgeScores, n: int = 50, seed: int = 0) -> dict:
    """Attribution against each sampled edge patched alone (corrupted, the rest clean): Spearman's rho and the pairs."""
    import pandas as pd

    graph = EdgeGraph.of(model)
    clean, _ = clean_corrupt_metric(model, task)
    edges = sample_edges(scores, n, seed)
    run = corrupt_run(model, task, graph)
    patched = [
        float((patched_metric(model, task, [(u, v)], keep=False, graph=graph, corrupt=run) - clean).mean())
        for u, v in edges
    ]
    attr = [float(scores.scores[u, v]) for u, v in edges]
    frame = pd.DataFrame({"attribution": attr, "patched": patched})
    return {
        "n": len(edges),
        "spearman": spearman(frame["attribution"], frame["patched"]),
        "sign_agreement": float(np.mean(np.sign(frame["attribution"]) == np.sign(frame["patched"]))),
        "edges": [
            {"edge": graph.edge_name(u, v), "attribution": a, "patched": p}
            for (u, v), a, p in zip(edges, attr, patched)
        ],
    }


def spearman(a, b) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks (pandas ``rank``; no scipy needed).

    >>> spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 40.0, 30.0])
    0.8
    """
    import pandas as pd

    ra, rb = pd.Series(a, dtype=float).rank().to_numpy(), pd.Series(b, dtype=float).rank().to_numpy()
    return round(float(np.corrcoef(ra, rb)[0, 1]), 12)


def top_overlap(a: EdgeScores, b: EdgeScores, ks: Sequence[int] = (10, 50, 100)) -> dict[int, float]:
    """Jaccard overlap of the top-k edge sets of two attributions, per ``k``.

    >>> import numpy as np
    >>> s = np.array([[3.0, -2.0, 1.0]])
    >>> A = EdgeScores({}, {}, "eap", None, ["u"], ["a", "b", "c"], s)
    >>> B = EdgeScores({}, {}, "eap", None, ["u"], ["a", "b", "c"], s[:, [0, 2, 1]])
    >>> top_overlap(A, B, ks=(1, 2))
    {1: 1.0, 2: 0.3333333333333333}
    """
    out = {}
    for k in ks:
        ea = {tuple(e) for e in a.ranked()[:k].tolist()}
        eb = {tuple(e) for e in b.ranked()[:k].tolist()}
        out[int(k)] = len(ea & eb) / len(ea | eb) if ea | eb else float("nan")
    return out


@in_eval_mode
def edge_circuit(
    model,
    task: CircuitTask,
    method: str = "eap-ig",
    ig_steps: int = DEFAULT_IG_STEPS,
    top_edges: int = 20,
    points: Sequence[int] = CURVE_POINTS,
    n_sample: int = 50,
    second_task: CircuitTask | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    max_memory_gb: float | None = None,
) -> EdgeCircuit:
    """Attribute every edge, then measure the circuit by patching (module docstring).

    ``second_task`` (the same task on another seed of its data) adds the top-k overlap;
    ``n_sample=0`` skips the rank agreement; ``max_memory_gb`` sizes the attribution's passes
    (:func:`headscope.circuits.eap.chunk_for`).

    >>> from headscope.circuits import induction_task, edge_circuit
    >>> res = edge_circuit(model, induction_task(model, n_examples=3, seq_len=5), ig_steps=2,
    ...                    top_edges=5, points=(0, 5), n_sample=4)
    >>> [row["n_edges"] for row in res.curve], round(res.curve[-1]["faithfulness"], 4)
    ([0, 5, 110], 1.0)
    """
    for name, value in (("top_edges", top_edges), ("n_sample", n_sample), *(("points", p) for p in points)):
        if whole_number(name, value) < 0:
            raise BadInput(f"{name} must be at least 0 (got {value})", hint="a number of edges counts from 0")
    say = progress or (lambda stage, done, total: None)
    say("attribution", 0, 1)
    scores = edge_attribution(model, task, method=method, ig_steps=ig_steps, max_memory_gb=max_memory_gb)
    say("faithfulness", 0, 1)
    curve, clean, corrupt = faithfulness_curve(model, task, scores, points=sorted(set(points) | {top_edges}))
    agreement = rank_agreement(model, task, scores, n=n_sample) if n_sample else {}
    stability: dict = {}
    if second_task is not None:
        say("second seed", 0, 1)
        other = edge_attribution(model, second_task, method=method, ig_steps=ig_steps, max_memory_gb=max_memory_gb)
        stability = {
            "seeds": [task.seed, second_task.seed],
            "jaccard": top_overlap(scores, other, (10, top_edges, 100)),
        }
    return EdgeCircuit(
        attribution=scores,
        top_edges=top_edges,
        clean=float(clean.mean()),
        corrupt=float(corrupt.mean()),
        curve=curve,
        agreement=agreement,
        stability=stability,
        notes=[f"model {as_model(model).name}; metric {task.metric}; {task.n_examples} examples"],
        gap=clean_corrupt_gap(clean, corrupt, task.metric, seed=task.seed or 0),
    )
