"""``headscope circuit``: a task, its two cached runs, then a list of steps that each add results.

The steps are named functions in :data:`STEPS`, run in order on one :class:`CircuitContext`
(the model, the task, the clean and corrupted caches, the settings, the analysis being filled).
A new measurement (edge attribution, a faithfulness curve) is one more function registered with
:func:`register_step`: it reads what earlier steps left (``ctx.analysis``, ``ctx.receivers``) and
appends its result to ``ctx.analysis.extra`` (or ``activation``/``paths``), where the page and the
files find it by its type.

The clean - corrupted gap is measured with its interval before any step
(:func:`~headscope.circuits.tasks.clean_corrupt_gap`); when it is no gap (its interval includes 0,
or the wrong sign) the first note says so and the views show changes in the metric instead.

Default steps:

- ``activation``: activation patching of every head and MLP, in the asked direction(s);
- ``edges`` (asked for with ``--steps``): EAP or EAP-IG over every edge, the top edges'
  faithfulness measured by patching, attribution against single-edge patches, two-seed overlap;
  a model it cannot measure is refused before any step runs (:func:`~headscope.circuits.edges.check_edge_graph`);
- ``paths``: path patching; by default every earlier head -> the top induction heads' keys and
  queries, and each top induction head -> the logits directly and through each later head.
  On a user's task (pairs file) with no receivers named: every head -> the logits directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..circuits.activation_patching import DIRECTIONS, activation_patching
from ..circuits.eap import DEFAULT_IG_STEPS, METHODS
from ..circuits.edges import check_edge_graph
from ..circuits.faithfulness import edge_circuit
from ..circuits.path_patching import ANY_SIZE, Receiver, path_patching, paths_through
from ..circuits.runs import RunCache, cache_run
from ..circuits.tasks import CircuitTask, clean_corrupt_gap, induction_task
from ..errors import BadInput
from ..head_labels import head_label, parse_head, parse_heads
from ..models.model import as_model
from ..results.patching_results import CircuitAnalysis
from ..settings import DEFAULT_MEMORY_GB

Step = Callable[["CircuitContext"], None]


@dataclass
class CircuitSettings:
    """What ``headscope circuit`` measures (each field is one command-line option)."""

    direction: str = "both"  # activation patching: denoise, noise or both
    per_position: bool = False
    senders: list[str] | None = None  # head specs; None = every earlier head
    receivers: list[str] | None = None  # "L18H6.k", "logits"; None = the defaults above
    top: int = 2  # top induction heads used as default receivers
    path_direction: str = "noise"
    max_memory_gb: float = DEFAULT_MEMORY_GB
    fused: bool | None = None
    steps: tuple[str, ...] = ("activation", "paths")
    method: str = "eap-ig"  # edges step: eap or eap-ig
    ig_steps: int = DEFAULT_IG_STEPS
    top_edges: int = 20  # the circuit: this many edges by |score|
    edge_sample: int = 50  # edges patched one at a time to check the attribution's ranking (0: skip)

    def check(self) -> None:
        if self.direction not in (*DIRECTIONS, "both"):
            raise BadInput(f"unknown --direction {self.direction!r}", hint="use denoise, noise or both")
        if not self.steps:
            raise BadInput("--steps names no step: nothing would be measured", hint=f"use some of {', '.join(STEPS)}")
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown:
            raise BadInput(f"unknown step(s) {unknown}", hint=f"use some of {', '.join(STEPS)}")
        twice = sorted({s for s in self.steps if self.steps.count(s) > 1})
        if twice:
            raise BadInput(
                f"--steps names {', '.join(twice)} more than once: each step would run again, for the same numbers",
                hint="name each step once, e.g. --steps activation,paths",
            )
        receivers = [parse_receiver(spec, None) for spec in self.receivers or []]
        senders = parse_heads(self.senders, ANY_SIZE, ANY_SIZE) if self.senders else None
        check_path_order(senders, receivers)
        if self.method not in METHODS:
            raise BadInput(f"unknown --method {self.method!r}", hint=f"use one of {', '.join(METHODS)}")
        if self.ig_steps < 1 or self.top_edges < 1 or self.edge_sample < 0:
            raise BadInput(
                f"--ig-steps {self.ig_steps}, --top-edges {self.top_edges}, --edge-sample {self.edge_sample}",
                hint="--ig-steps and --top-edges must be at least 1, --edge-sample at least 0",
            )

    def check_model_heads(self, n_layers: int, n_heads: int, model_name: str = "the model") -> None:
        """Every ``--senders`` and ``--receivers`` head exists in a model of ``n_layers`` x ``n_heads``
        (run as soon as the model is loaded, before anything is patched).

        >>> CircuitSettings(receivers=["logits", "L9H9.q"]).check_model_heads(30, 9, "SmolLM2")
        Traceback (most recent call last):
        ...
        headscope.errors.BadInput: --receivers L9H9.q: head 9 does not exist; SmolLM2 has 30 layers x 9 heads, L0H0 to L29H8 (layers 0..29, heads 0..8); nothing was patched or written
          hint: name heads of this model (a head name from another model, such as GPT-2's L9H9, needs that model: --model gpt2)
        """
        for option, specs in (("--senders", self.senders), ("--receivers", self.receivers)):
            for spec in (x.strip() for item in specs or [] for x in item.split(",") if x.strip()):
                try:
                    if option == "--senders":
                        parse_head(spec, n_layers, n_heads)
                    else:
                        parse_receiver(spec, n_layers, n_heads)
                except BadInput as exc:
                    problem = exc.message.split(";")[0].split(": ", 1)[-1]
                    raise BadInput(
                        f"{option} {spec}: {problem}; {model_name} has {n_layers} layers x {n_heads} heads, "
                        f"L0H0 to {head_label(n_layers - 1, n_heads - 1)} (layers 0..{n_layers - 1}, heads "
                        f"0..{n_heads - 1}); nothing was patched or written",
                        hint="name heads of this model (a head name from another model, such as GPT-2's L9H9, "
                        "needs that model: --model gpt2)",
                    ) from None


MIN_EXAMPLES = 2  # every number's interval is a bootstrap over the examples


def check_examples(n_examples: int, task: str | None = None) -> None:
    """Refuse a task of fewer than :data:`MIN_EXAMPLES` examples (``task``: its name; None: ``--examples``):
    a bootstrap over one example is that example's value at both ends, an interval of zero width that
    claims a certainty one sample cannot give.

    >>> check_examples(1)
    Traceback (most recent call last):
    ...
    headscope.errors.BadInput: --examples 1: every number's 95% interval is a bootstrap over the examples, and one example gives none (a zero-width interval from a single sample)
      hint: intervals need at least 2 examples: use --examples 2 or more (the default is 10)
    """
    if n_examples >= MIN_EXAMPLES:
        return
    what = f"--examples {n_examples}" if task is None else f"the task {task!r} has {n_examples} example(s)"
    fix = "use --examples 2 or more (the default is 10)" if task is None else "give it more examples"
    raise BadInput(
        f"{what}: every number's 95% interval is a bootstrap over the examples, and one example gives none "
        "(a zero-width interval from a single sample)",
        hint=f"intervals need at least {MIN_EXAMPLES} examples: {fix}",
    )


def check_path_order(senders: list[tuple[int, int]] | None, receivers: list[Receiver]) -> list[str]:
    """Refuse named receivers no path can reach: a head receiver in layer 0 (no head lies before it), a
    receiver with none of ``senders`` in an earlier layer, a sender in no layer before any receiver.
    Returns the pairs that are skipped (a sender not below one receiver but below another), as notes.

    A receiver's senders must sit in layers before its own (``logits``: any layer).

    >>> check_path_order([(20, 0)], [Receiver("k", 18, 6)])
    Traceback (most recent call last):
    ...
    headscope.errors.BadInput: no path to compute: senders must be in layers before the receiver's, and L20H0 (layer 20) -> L18H6.k (layer 18) is not; nothing was patched or written
      hint: name senders in layers before each receiver's (L18H6.k: layers 0..17), or a later receiver (logits takes any sender)
    >>> print(*check_path_order([(0, 1), (5, 3)], [Receiver("k", 18, 6), Receiver("q", 3, 0)]))
    path L5H3 -> L3H0.q skipped: senders must be in layers before the receiver's (L3H0.q is in layer 3)
    """
    heads = [r for r in receivers if r.input != "logits"]
    first = [r.label for r in heads if r.depth(ANY_SIZE) == 0]
    if first:
        raise BadInput(
            f"no path to compute into {', '.join(first)}: senders must be in layers before the receiver's, and "
            "layer 0 has no earlier head; nothing was patched or written",
            hint="name receivers in layer 1 or above, or logits",
        )
    if not senders or not receivers:
        return []
    depth = {r.label: r.depth(ANY_SIZE) for r in receivers}
    empty = [r for r in heads if not any(layer < depth[r.label] for layer, _ in senders)]
    useless = [s for s in senders if not any(s[0] < d for d in depth.values())]
    if empty or useless:
        bad = [
            f"{head_label(*s)} (layer {s[0]}) -> {r.label} (layer {depth[r.label]})"
            for r in heads
            for s in senders
            if s[0] >= depth[r.label] and (r in empty or s in useless)
        ]
        where = ", ".join(f"{r.label}: layers 0..{depth[r.label] - 1}" for r in heads if r in empty or useless)
        raise BadInput(
            "no path to compute: senders must be in layers before the receiver's, and "
            + ", ".join(bad[:8])
            + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
            + (" is" if len(bad) == 1 else " are")
            + " not; nothing was patched or written",
            hint=f"name senders in layers before each receiver's ({where}), or a later receiver "
            "(logits takes any sender)",
        )
    return [
        f"path {head_label(*s)} -> {r.label} skipped: senders must be in layers before the receiver's "
        f"({r.label} is in layer {depth[r.label]})"
        for r in heads
        for s in senders
        if s[0] >= depth[r.label]
    ]


def parse_receiver(spec: str, n_layers: int | None, n_heads: int | None = None) -> Receiver:
    """``logits`` or ``L18H6.k`` (``q``, ``k``, ``v``, ``qkv``; ``18.6.k`` too): :meth:`Receiver.parse`.

    >>> parse_receiver("L18H6.k", None), parse_receiver("logits", None).label
    (Receiver(input='k', layer=18, head=6), 'logits')
    """
    return Receiver.parse(spec, n_layers, n_heads)


@dataclass
class CircuitContext:
    """What every step reads and fills."""

    model: Any
    task: CircuitTask
    settings: CircuitSettings
    clean: RunCache
    corrupt: RunCache
    analysis: CircuitAnalysis
    progress: Callable = lambda *a: None
    #: The top induction heads (layer, head) when the task is the induction task (for default receivers).
    induction_heads: list[tuple[int, int]] = field(default_factory=list)

    @property
    def caches(self) -> tuple[RunCache, RunCache]:
        return self.clean, self.corrupt


def step_activation(ctx: CircuitContext) -> None:
    dirs = DIRECTIONS if ctx.settings.direction == "both" else (ctx.settings.direction,)
    for d in dirs:
        ctx.analysis.activation.append(
            activation_patching(
                ctx.model,
                ctx.task,
                d,
                ctx.settings.per_position,
                ctx.settings.max_memory_gb,
                ctx.settings.fused,
                ctx.progress,
                ctx.caches,
            )
        )


def _top_induction_heads(ctx: CircuitContext) -> list[tuple[int, int]]:
    from ..scan import scan_induction

    n_tok = ctx.task.clean.shape[1]
    seq_len = (n_tok - 1) // 2
    scan = scan_induction(
        ctx.model, seq_len=seq_len, batch=ctx.task.n_examples, seed=ctx.task.seed or 0, ablate=False,
        sample=False, progress=False, top_k=ctx.settings.top,
    )  # fmt: skip
    return [(l, h) for l, h, _ in scan.top_heads("induction", ctx.settings.top)]


def step_paths(ctx: CircuitContext) -> None:
    s = ctx.settings
    n_layers, n_heads = as_model(ctx.model).n_layers, as_model(ctx.model).n_heads
    senders = parse_heads(s.senders, n_layers, n_heads) if s.senders else None
    kw: dict[str, Any] = dict(
        direction=s.path_direction, max_memory_gb=s.max_memory_gb, fused=s.fused, progress=ctx.progress,
        caches=ctx.caches,
    )  # fmt: skip
    if s.receivers:
        receivers = [parse_receiver(r, n_layers, n_heads) for r in s.receivers]
        ctx.analysis.notes.extend(check_path_order(senders, receivers))
    elif ctx.task.name == "induction":
        ctx.induction_heads = ctx.induction_heads or _top_induction_heads(ctx)
        receivers = [Receiver(w, l, h) for l, h in ctx.induction_heads for w in ("k", "q")]
    else:
        receivers = [Receiver.logits()]
    for r in receivers:
        ss = [x for x in senders if x[0] < r.depth(n_layers)] if senders else None
        if (senders and not ss) or r.depth(n_layers) == 0:
            ctx.analysis.notes.append(f"no path into {r.label}: no sender lies in a layer before it")
            continue
        ctx.analysis.paths.append(path_patching(ctx.model, ctx.task, ss, r, **kw))
    if s.receivers or ctx.task.name != "induction":
        return
    for l, h in ctx.induction_heads:  # each top induction head -> logits, directly and via each later head
        later = [Receiver("qkv", ll, hh) for ll in range(l + 1, n_layers) for hh in range(n_heads)]
        paths = [((l, h), Receiver.logits())] + [((l, h), r) for r in later]
        ctx.analysis.paths.append(
            paths_through(
                ctx.model, ctx.task, paths, title=f"{head_label(l, h)} -> logits: direct and via each later head", **kw
            )
        )


def step_edges(ctx: CircuitContext) -> None:
    """EAP or EAP-IG over every edge, the top edges' faithfulness by patching, rank agreement, and (on the
    induction task) the overlap with the circuit found on the next seed of the task data."""
    s, t = ctx.settings, ctx.task
    second = None
    if t.name == "induction":
        seq_len = (int(t.clean.shape[1]) - 1) // 2
        second = induction_task(ctx.model, t.n_examples, seq_len, (t.seed or 0) + 1, t.metric)
    ctx.analysis.extra.append(
        edge_circuit(
            ctx.model,
            t,
            s.method,
            s.ig_steps,
            s.top_edges,
            n_sample=s.edge_sample,
            second_task=second,
            progress=ctx.progress,
            max_memory_gb=s.max_memory_gb,
        )
    )


#: The steps, in the order they run; add one with :func:`register_step`.
STEPS: dict[str, Step] = {"activation": step_activation, "paths": step_paths, "edges": step_edges}


def register_step(name: str, fn: Step) -> None:
    """Add a step (it runs after the ones before it when named in ``CircuitSettings.steps``)."""
    STEPS[name] = fn


def analyze_circuit(
    model, task: CircuitTask, settings: CircuitSettings | None = None, progress: Callable | None = None
) -> CircuitAnalysis:
    """Cache the clean and corrupted runs, then run ``settings.steps`` in order; returns the filled analysis.

    >>> from headscope.circuits import induction_task
    >>> a = analyze_circuit(model, induction_task(model, n_examples=3, seq_len=5),
    ...                     CircuitSettings(direction="denoise", receivers=["L1H0.k", "logits"]))
    >>> [p.receiver for p in a.paths], a.activation[0].values.shape
    (['L1H0.k', 'logits'], (2, 5))
    """
    s = settings or CircuitSettings()
    s.check()
    m = as_model(model)
    s.check_model_heads(m.n_layers, m.n_heads, m.name)
    check_examples(task.n_examples, None if task.name == "induction" else task.name)
    if "edges" in s.steps:  # refused now, not after the other steps have run
        check_edge_graph(m, task)
    t0 = time.perf_counter()
    clean, corrupt = cache_run(m, task.clean, task, s.fused), cache_run(m, task.corrupt, task, s.fused)
    cl, co = clean.metric.double().numpy(), corrupt.metric.double().numpy()
    gap = clean_corrupt_gap(cl, co, task.metric, seed=task.seed or 0)
    analysis = CircuitAnalysis(
        model=m.info(),
        task={
            "name": task.name,
            "metric": task.metric,
            "n_examples": task.n_examples,
            "n_tokens": int(task.clean.shape[1]),
            "corruption": task.corruption,
            "seed": task.seed,
            "clean_metric": float(clean.metric.mean()),
            "corrupt_metric": float(corrupt.metric.mean()),
            "gap": gap,
        },
        settings={k: v for k, v in vars(s).items() if k != "fused"},
        notes=list(task.notes),
    )
    if abs(gap["mean"]) < 1e-6:
        raise BadInput(
            "the clean and corrupted runs give the same metric: nothing to patch",
            hint="use a corruption that changes the answer (or more examples)",
        )
    if not gap["meaningful"]:
        analysis.notes.insert(0, gap["problem"])
    analysis.timings["cache_s"] = time.perf_counter() - t0
    ctx = CircuitContext(m, task, s, clean, corrupt, analysis, progress or (lambda *a: None))
    for name in s.steps:
        t = time.perf_counter()
        STEPS[name](ctx)
        analysis.timings[f"{name}_s"] = time.perf_counter() - t
    analysis.timings["total_s"] = time.perf_counter() - t0
    return analysis


def _entries(pp, key: str, k: int, label=lambda s, r: s) -> list[dict]:
    return [{key: label(s, r), "effect": e, "low": lo, "high": hi} for s, r, e, lo, hi in pp.top(k)]


def story_paths(
    model,
    heads: list[tuple[int, int]],
    n_examples: int = 10,
    seq_len: int = 50,
    seed: int = 0,
    max_memory_gb: float = DEFAULT_MEMORY_GB,
    k: int = 3,
    progress: Callable | None = None,
) -> dict[tuple[int, int], dict]:
    """The measured paths of each induction head's story, on the induction task (noising, logit difference).

    ``{(l, h): {"k": the ``k`` strongest senders into its keys, "logits": its direct path and the ``k``
    strongest paths through a later head, "about": what they were measured on}}``, each entry with its
    effect (share of the clean - corrupted gap) and 95% interval.
    """
    from ..circuits.tasks import induction_task

    m = as_model(model)
    task = induction_task(m, n_examples=n_examples, seq_len=seq_len, seed=seed)
    caches = (cache_run(m, task.clean, task), cache_run(m, task.corrupt, task))
    about = f"induction task, {n_examples} x {task.clean.shape[1]} tokens, seed {seed}, logit difference"
    out: dict[tuple[int, int], dict] = {}
    for l, h in heads:
        entry: dict = {"about": about, "k": [], "logits": []}
        if l > 0:
            keys = path_patching(m, task, None, Receiver("k", l, h), max_memory_gb=max_memory_gb, caches=caches,
                                 progress=progress)  # fmt: skip
            entry["k"] = _entries(keys, "head", k)
        later = [((l, h), Receiver("qkv", ll, hh)) for ll in range(l + 1, m.n_layers) for hh in range(m.n_heads)]
        via = paths_through(m, task, [((l, h), Receiver.logits())] + later, max_memory_gb=max_memory_gb,
                            caches=caches, progress=progress)  # fmt: skip
        direct = [e for e in _entries(via, "via", len(via.senders), lambda s, r: r) if e["via"] == "logits"]
        others = [e for e in _entries(via, "via", k + 1, lambda s, r: r.split(".")[0]) if e["via"] != "logits"][:k]
        entry["logits"] = [{**direct[0], "via": "direct"}] + others
        out[(l, h)] = entry
    return out
