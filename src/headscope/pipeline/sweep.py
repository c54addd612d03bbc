"""Sweeps: the induction scan over many models or training checkpoints, resumable.

One *entry* is a model spec (built-in alias, local directory, ``.gguf`` file or hub id)
plus, for hub models published with training checkpoints (Pythia: ``step1000`` ...), a
revision. Each entry is loaded, scanned with the same settings, summarised and written to
``out/entries/<key>.json`` the moment it finishes (written to a temporary file and renamed,
so a half-written entry never exists). A rerun reads those files and skips finished
entries, so an interrupted sweep loses nothing but the entry it was on. After every entry
the sweep table (``sweep.csv``, ``sweep.json``) is rewritten, and at the end the
phase-change figure (``sweep.png``): induction score of the top head, induction score
summed over all heads, and later-repeat loss, against training step or model.

>>> from headscope.pipeline.sweep import plan_sweep, run_sweep
>>> entries = plan_sweep(["EleutherAI/pythia-70m"], ["step1000", "step3000"])  # doctest: +SKIP
>>> res = run_sweep(entries, "sweep-out", seq_len=50, batch=10)                 # doctest: +SKIP
>>> res.to_frame()[["label", "step", "induction_top", "loss_later_repeats"]]    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import re
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInput, HeadscopeError, OutputExists
from ..head_labels import head_label
from ..jsonsafe import dumps
from ..models import builtin
from ..models.fingerprint import cached_fingerprint
from ..models.loading import load_model
from ..results.scan_result import InductionResult
from ..results.sweep_result import SUMMARY_DEFINITIONS, SweepResult

__all__ = ["SUMMARY_DEFINITIONS", "SweepEntry", "SweepResult", "plan_sweep", "run_sweep"]
from ..scan.induction_scan import scan_induction
from ..settings import ScanSettings
from .outputs import (
    check_resumable,
    clean_stale_files,
    describe_os_error,
    mark_results,
    output_lock,
    probe_writable,
    refuse_special,
    write_file_atomic,
)

#: Scan settings that change the numbers: an entry computed with other values is not reused.
RESULT_SETTINGS = ("seq_len", "batch", "repeats", "seed", "top_k", "ablate", "ablation", "dtype")
#: What run_sweep scans with unless told otherwise (ablation off: a sweep wants the scores and
#: the loss; the causal check costs top_k + 1 + 10 control passes per entry).
DEFAULT_SCAN = ScanSettings(ablate=False)
#: What a sweep writes into its --out (listed in the manifest it writes there before its first file).
SWEEP_FILES = ("entries", "sweep.csv", "sweep.json", "sweep.png")

_STEP = re.compile(r"(?:^|[^a-z])(?:global_?step|step|checkpoint|ckpt|iter)[-_]?(\d+)$", re.IGNORECASE)


def step_of(name: str | None) -> int | None:
    """The training step a revision or checkpoint directory name encodes, if any.

    >>> step_of("step1000"), step_of("out/checkpoint-500"), step_of("main")
    (1000, 500, None)
    """
    if not name:
        return None
    m = _STEP.search(Path(str(name).rstrip("/")).name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class SweepEntry:
    """One model (and revision) of a sweep.

    ``step`` is the training step, when known; ``series`` names the training run it belongs
    to (the hub id for revisions, the parent directory for local checkpoint directories),
    one line in the phase-change figure.
    """

    model: str
    revision: str | None = None
    label: str = ""
    step: int | None = None
    series: str = ""

    @property
    def key(self) -> str:
        """Stable file name of this entry's result: readable label + hash of what was loaded."""
        where = str(Path(self.model).expanduser().resolve()) if _is_local(self.model) else self.model
        digest = hashlib.sha1(f"{where}|{self.revision or ''}".encode()).hexdigest()[:8]
        return f"{_slug(self.label)}-{digest}"

    def to_dict(self) -> dict:
        return {**asdict(self), "key": self.key}


def _is_local(spec: str) -> bool:
    try:
        return Path(spec).expanduser().exists()
    except RuntimeError:  # ~nosuchuser/...: load_model says so (BadInput) when the entry runs
        return False


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return s[:80] or "entry"


def _names(items: Any, what: str) -> list[str | os.PathLike]:
    """``items`` as a list of names or paths: one string (or path) alone is one item, never its characters."""
    if isinstance(items, (str, os.PathLike)):
        return [items]
    example = "revisions=['step1000', 'step2000']" if what == "revisions" else "['gpt2', './run/checkpoint-500']"
    out = list(items) if isinstance(items, Iterable) and not isinstance(items, Mapping) else [items]
    for i, item in enumerate(out):
        if not isinstance(item, (str, os.PathLike)):
            loaded = hasattr(item, "run_with_hooks")
            raise BadInput(
                f"plan_sweep's {what} must be names or paths; item {i} is "
                + ("a loaded model" if loaded else f"{item!r:.40} ({type(item).__name__})"),
                hint=("a sweep loads each entry itself: pass the name or path it was loaded from, " if loaded else "")
                + f"e.g. {example}",
            )
    return out


def plan_sweep(
    models: Iterable[str | os.PathLike] | str | os.PathLike, revisions: Iterable[str] | str | None = None
) -> list[SweepEntry]:
    """Entries for every model x revision (or every model alone when there are no revisions).

    Revisions are hub branches or tags (Pythia publishes ``step0`` ... ``step143000``); they
    apply to hub ids only. Local checkpoints are given as directories, one ``--model`` each;
    a step in a revision or directory name (``step1000``, ``checkpoint-500``) becomes the
    entry's ``step``, the x axis of the phase-change figure. One name or path alone (``"gpt2"``)
    is one model, one revision alone one revision; a loaded model, ``None`` or a number is a
    :class:`~headscope.errors.BadInput` (a sweep loads each entry itself, from its name or path).

    >>> [e.label for e in plan_sweep("EleutherAI/pythia-70m", "step1000")]
    ['EleutherAI/pythia-70m@step1000']
    """
    names = [m for m in (str(m).strip() for m in _names(models, "models")) if m]
    revs = [r for r in (str(r).strip() for r in _names(revisions or [], "revisions")) if r]
    if not names:
        raise BadInput(
            "a sweep needs at least one --model", hint="e.g. --model smollm2-135m-instruct-q4 --model ./my-model"
        )
    entries: list[SweepEntry] = []
    for model in names:
        model = builtin.canonical_alias(model, log=lambda m: None) or model  # the name that says what it is
        local = _is_local(model) or model in builtin.BUILTINS
        if revs and local:
            raise BadInput(
                f"--revision applies to hub models, but {model!r} is a "
                + ("built-in model" if model in builtin.BUILTINS else "local path"),
                hint="for local checkpoints, pass each checkpoint directory as its own --model "
                "(e.g. --model run/checkpoint-500 --model run/checkpoint-1000)",
            )
        path = local and model not in builtin.BUILTINS
        base = Path(model.rstrip("/")).name if path else model
        for rev in revs or [None]:  # type: ignore[list-item]
            step = step_of(rev) if rev else step_of(model)
            # a checkpoint directory belongs to the run that holds it: run/checkpoint-500 -> run
            series = str(Path(model.rstrip("/")).parent) if path and step is not None else model
            entries.append(SweepEntry(model, rev, f"{base}@{rev}" if rev else base, step, series))
    # Two directories with the same name (a/final, b/final): label them by their full spec.
    labels = [e.label for e in entries]
    entries = [
        SweepEntry(
            e.model,
            e.revision,
            (f"{e.model}@{e.revision}" if e.revision else e.model) if labels.count(e.label) > 1 else e.label,
            e.step,
            e.series,
        )
        for e in entries
    ]
    keys = [e.key for e in entries]
    dupes = sorted({e.label for e in entries if keys.count(e.key) > 1})
    if dupes:
        raise BadInput(f"the sweep lists {', '.join(dupes)} more than once", hint="give each model/revision once")
    return entries


def summarise(res: InductionResult) -> dict:
    """The numbers a sweep table shows for one scan (definitions: :data:`SUMMARY_DEFINITIONS`)."""
    ((l, h, top),) = res.top_heads("induction", 1)
    ((_, _, pm),) = res.top_heads("prefix_matching", 1)
    return {
        "n_layers": res.model["n_layers"],
        "n_heads": res.model["n_heads"],
        "top_head": head_label(l, h),
        "top_layer": l,
        "top_head_index": h,
        "induction_top": round(top, 6),
        "induction_sum": round(float(res.scores["induction"].sum()), 6),
        "prefix_matching_top": round(pm, 6),
        "loss_first_repeat": round(res.loss_first_repeat, 6),
        "loss_later_repeats": round(res.loss_later_repeats, 6),
        "chunk_size": res.settings["chunk_size"],
    }


# --- files -----------------------------------------------------------------------------------
def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, text)


def entry_path(out_dir: Path, entry: SweepEntry) -> Path:
    return Path(out_dir) / "entries" / f"{entry.key}.json"


def read_entry(out_dir: Path, entry: SweepEntry) -> dict | None:
    """A finished entry's record, or None if there is none (a broken file counts as none)."""
    path = entry_path(out_dir, entry)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and "summary" in rec and "settings" in rec else None


def _earlier_sweep(out: Path) -> bool:
    """Whether ``out`` (which holds only a sweep's names and no manifest) is a sweep that a headscope
    from before sweeps wrote a manifest left: its ``sweep.json`` is a sweep table."""
    try:
        table = json.loads((out / "sweep.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(table, dict) and {"settings", "entries", "failures", "definitions"} <= set(table)


def _differences(a: dict, b: dict) -> list[str]:
    return [f"{k} {a.get(k)!r} (now {b.get(k)!r})" for k in RESULT_SETTINGS if a.get(k) != b.get(k)]


# --- the sweep -------------------------------------------------------------------------------
Event = Callable[[str, SweepEntry, dict], None]


# --- executor seam (issue 14): who runs the entries; the driver below writes what they return --
@dataclass(frozen=True)
class EntryJob:
    """Everything one entry needs to run in any process: picklable, so an executor can ship it.

    ``index``/``total`` place it in the sweep (for messages); ``settings`` are the sweep's
    scan settings (:meth:`ScanSettings.to_dict` plus ``dtype``).
    """

    entry: SweepEntry
    index: int
    total: int
    settings: dict
    device: Any = "auto"  # as load_model takes them: names or torch objects (both pickle)
    dtype: Any = "float32"
    device_map: str | dict | None = None

    @property
    def info(self) -> dict:
        return {"index": self.index, "total": self.total}

    def run(self, *, progress: bool | None = False, log: Callable[[str], None] | None = None) -> dict:
        """Load, fingerprint, scan and summarise this entry; returns its record (what entries/<key>.json holds)."""
        return _run_entry(
            self.entry,
            self.settings,
            device=self.device,
            dtype=self.dtype,
            device_map=self.device_map,
            progress=progress,
            log=log,
        )


#: What an executor yields per job as it finishes: (job, record, None) or (job, None, failure).
Outcome = tuple[EntryJob, dict | None, dict | None]


class LocalExecutor:
    """Runs the entries one after another in this process (the default; needs nothing else).

    An executor's ``run(jobs, emit)`` returns a generator of :data:`Outcome` in the order the
    entries finish (``jobs`` may be empty: then it must start nothing). A failing entry
    becomes a failure record (:func:`entry_failure`), never an exception, so one bad
    checkpoint does not stop the others; ``KeyboardInterrupt`` passes through. ``run`` may
    do its setup (connecting to a cluster) eagerly, so that a bad setup raises before the
    driver writes anything; ``close()`` on the generator must stop the outstanding work.
    """

    name = "local"

    def __init__(self, *, progress: bool | None = False, log: Callable[[str], None] | None = None):
        self.progress, self.log = progress, log

    def run(self, jobs: list[EntryJob], emit: Event):
        for job in jobs:
            emit("start", job.entry, job.info)
            try:
                rec = job.run(progress=self.progress, log=self.log)
            except Exception as exc:  # one bad checkpoint must not lose the others
                yield job, None, entry_failure(job.entry, exc)
            else:
                yield job, rec, None


def _check_entries(entries: Any) -> list[SweepEntry]:
    """``entries`` as a non-empty list of :class:`SweepEntry`, or a BadInput before any folder is made."""
    many = isinstance(entries, Iterable) and not isinstance(entries, (str, os.PathLike))
    items = list(entries) if many else [entries]
    if not items:
        raise BadInput("run_sweep got no entries: an empty sweep", hint="e.g. run_sweep(plan_sweep(['gpt2']), out)")
    for i, e in enumerate(items):
        if not isinstance(e, SweepEntry):
            raise BadInput(
                f"run_sweep takes the entries plan_sweep makes; item {i} is {e!r:.60} ({type(e).__name__})",
                hint=f"plan them first: run_sweep(plan_sweep([{str(e)!r:.60}]), out)"
                if isinstance(e, (str, os.PathLike))
                else "e.g. run_sweep(plan_sweep(['gpt2', './my-model']), out)",
            )
    return items


def run_sweep(
    entries: list[SweepEntry],
    out_dir: str | os.PathLike,
    *,
    device: str = "auto",
    dtype: str = "float32",
    device_map: str | dict | None = None,
    rerun: bool = False,
    figure: bool = True,
    on_event: Event | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool | None = False,
    executor=None,
    settings: ScanSettings | Mapping[str, Any] | None = None,
    **scan: Any,
) -> SweepResult:
    """Scan every entry (see :func:`plan_sweep`) and write each result as soon as it is done.

    ``settings`` (a :class:`~headscope.settings.ScanSettings` or a mapping of its fields; default
    :data:`DEFAULT_SCAN`), its fields replaced by the ``scan`` keywords (``seq_len=``, ``ablate=``, ...), is what every
    entry is scanned with.
    ``out_dir`` must be new, empty or an earlier sweep's (its manifest says so): a folder
    holding files headscope did not write, or another command's results, raises
    :class:`~headscope.errors.OutputExists` (exit 4) before anything runs, ``rerun`` or not.
    Entries already in ``out_dir`` with the same result settings are skipped unless
    ``rerun``; finding results made with other settings raises
    :class:`~headscope.errors.OutputExists` (exit 4: recomputing them would replace them) before
    anything runs, naming the setting that differs (nothing is overwritten unless ``rerun``).
    An entry that fails (a model that will not load, a scan out of memory, a worker that died) is recorded in
    ``failures`` and the sweep goes on; a rerun retries it. ``on_event(kind, entry, info)``
    hears "skip", "start" (local executor), "done" and "fail"; ``log`` the lines a
    first-time download or conversion says. ``executor`` runs the entries: default
    :class:`LocalExecutor` (one after another, here); :class:`headscope.pipeline.sweep_ray.RayExecutor`
    spreads them over a Ray cluster. Whoever runs them, this process writes every file.
    ``entries`` is what :func:`plan_sweep` returns; names, paths or an empty list are a
    :class:`~headscope.errors.BadInput`, before anything is made.
    """
    entries = _check_entries(entries)
    known = DEFAULT_SCAN.to_dict()
    if isinstance(settings, Mapping):  # a mapping of fields: keywords on the sweep's defaults
        scan, settings = {**settings, **scan}, None
    unknown = set(scan) - set(known)
    if unknown:
        raise BadInput(f"unknown scan setting(s) {', '.join(sorted(unknown))}", hint=f"use: {', '.join(known)}")
    st = ScanSettings.from_keywords(settings or DEFAULT_SCAN, **scan).check()
    out = Path(out_dir)
    refuse_special(out)
    made = not out.exists()
    try:  # before any model loads: the same exit code (5) and message as every other command's --out
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise describe_os_error(exc, out) from None
    probe_writable(out, out)
    try:
        with output_lock(out):  # a second sweep into the same --out fails at once (exit 4)
            # only into a new or empty folder or an earlier sweep's (resumed): never among the user's files (exit 4)
            check_resumable(out, "sweep", SWEEP_FILES, _earlier_sweep)
            clean_stale_files(out)
            clean_stale_files(out / "entries")
            return _run_sweep(
                entries,
                out,
                device=device,
                dtype=dtype,
                device_map=device_map,
                rerun=rerun,
                figure=figure,
                emit=on_event or (lambda kind, entry, info: None),
                log=log,
                progress=progress,
                executor=executor,
                scan=st,
            )
    finally:  # a sweep that failed before its first entry leaves no empty entries/ (nor an empty --out it made)
        with contextlib.suppress(OSError):
            (out / "entries").rmdir()  # only if empty
        if made:
            with contextlib.suppress(OSError):
                out.rmdir()


def _run_sweep(
    entries: list[SweepEntry],
    out: Path,
    *,
    device,
    dtype,
    device_map,
    rerun: bool,
    figure: bool,
    emit: Event,
    log,
    progress,
    executor,
    scan: ScanSettings,
) -> SweepResult:
    settings = {**scan.to_dict(), "dtype": str(dtype)}
    executor = executor or LocalExecutor(progress=progress, log=log)

    done: dict[str, dict] = {}
    if not rerun:
        clashes = []
        for e in entries:
            rec = read_entry(out, e)
            if rec is None:
                continue
            diff = _differences(rec["settings"], settings)
            if diff:
                clashes.append(f"{e.label}: {', '.join(diff)}")
            else:
                done[e.key] = rec
        if clashes:  # recomputing them would replace the user's results: exit 4, as every command's --out
            raise OutputExists(
                f"{out} holds sweep results made with other settings ({'; '.join(clashes[:3])}"
                + (" ..." if len(clashes) > 3 else "")
                + "); nothing was run",
                hint="use the same settings to resume that sweep, another output folder (--out) for a new one, "
                "or --overwrite (rerun=True in Python) to recompute every entry",
            )

    records: dict[str, dict] = {}
    failures: list[dict] = []
    result = SweepResult([], failures, settings, out)
    order = {e.key: i for i, e in enumerate(entries)}

    def table() -> None:
        failures.sort(key=lambda f: order[f["key"]])  # entry order, whatever order they finished in
        result.rows = mark_same_weights([_row(e, records.get(e.key), failures) for e in entries])
        result.files = write_table(result, out)

    jobs: list[EntryJob] = []
    for i, e in enumerate(entries):
        if e.key in done:
            records[e.key] = done[e.key]
            emit("skip", e, {"index": i, "total": len(entries), "summary": done[e.key]["summary"]})
        else:
            jobs.append(EntryJob(e, i, len(entries), settings, device, dtype, device_map))
    # the executor may connect to a cluster here: a bad address fails before any file is written
    outcomes = executor.run(jobs, emit)
    try:
        with contextlib.closing(outcomes):  # closing stops an executor's outstanding work on Ctrl-C
            mark_results(out, "sweep", list(SWEEP_FILES))  # a sweep's folder from its first file on: resumable
            for job, rec, failure in outcomes:
                if failure is not None:
                    failures.append(failure)
                    emit("fail", job.entry, {**job.info, **failure})
                else:
                    _write_atomic(entry_path(out, job.entry), dumps(rec, indent=1))
                    records[job.entry.key] = rec
                    emit("done", job.entry, {**job.info, "summary": rec["summary"], "seconds": rec["seconds"]})
                table()
    finally:
        table()  # also on KeyboardInterrupt: the table shows what is finished
    if figure and any(r["status"] == "done" for r in result.rows):
        from ..render._mpl import encode_png
        from ..render.sweep_figures import sweep_figure

        write_file_atomic(out / "sweep.png", encode_png(sweep_figure(result.to_frame())))
        result.files.append(out / "sweep.png")
    return result


def _run_entry(e: SweepEntry, settings: dict, *, device, dtype, device_map, progress, log) -> dict:
    t0 = time.perf_counter()
    model = load_model(
        e.model, device=device, dtype=dtype, device_map=device_map, revision=e.revision, log=log or (lambda msg: None)
    )
    t_load = time.perf_counter() - t0
    try:
        weights = _fingerprint(model)
        t_hash = time.perf_counter() - t0 - t_load
        st = ScanSettings.from_keywords(**{k: v for k, v in settings.items() if k != "dtype"})
        res = scan_induction(model, st, sample=False, progress=progress)
        t_scan = time.perf_counter() - t0 - t_load - t_hash
    finally:
        del model
        _free_memory()
    return {
        "entry": e.to_dict(),
        "settings": settings,
        "summary": summarise(res),
        "weights": weights,
        "seconds": {"load": round(t_load, 3), "fingerprint": round(t_hash, 3), "scan": round(t_scan, 3)},
        "result": res.to_dict(),
    }


def _fingerprint(model) -> dict:
    """The weights' fingerprint, or a record of why there is none (weights offloaded to disk)."""
    try:
        return cached_fingerprint(model)
    except ValueError as exc:
        return {"sha256": None, "error": str(exc)}


def mark_same_weights(rows: list[dict]) -> list[dict]:
    """Set ``same_weights_as`` on every row: the label of the first earlier row whose weights are
    bit-identical (same ``weights_sha256``), else None."""
    first: dict[str, str] = {}
    for row in rows:
        sha = row.get("weights_sha256")
        row["same_weights_as"] = first.get(sha) if sha else None
        if sha:
            first.setdefault(sha, row["label"])
    return rows


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - freeing memory is best effort
        pass


def entry_failure(e: SweepEntry, exc: BaseException, tb: str | None = None) -> dict:
    """The failure record of an entry (what ``failures`` and sweep.json hold); ``tb`` defaults to
    the traceback being handled."""
    message = exc.message if isinstance(exc, HeadscopeError) else f"{type(exc).__name__}: {exc}"
    return {
        "label": e.label,
        "model": e.model,
        "revision": e.revision,
        "key": e.key,
        "error": (message.strip().splitlines() or [""])[0][:500],
        "hint": getattr(exc, "hint", None),
        "traceback": tb if tb is not None else traceback.format_exc(),
    }


def _row(e: SweepEntry, rec: dict | None, failures: list[dict]) -> dict:
    row: dict[str, Any] = {
        "label": e.label,
        "model": e.model,
        "revision": e.revision,
        "step": e.step,
        "series": e.series,
    }
    failed = next((f for f in failures if f["key"] == e.key), None)
    if rec is not None:
        row.update(
            status="done",
            **rec["summary"],
            load_s=rec["seconds"]["load"],
            scan_s=rec["seconds"]["scan"],
            file=f"entries/{e.key}.json",
            weights_sha256=(rec.get("weights") or {}).get("sha256"),
        )
    else:
        row.update(status="failed" if failed else "pending", error=failed["error"] if failed else None)
    return row


def write_table(result: SweepResult, out: Path) -> list[Path]:
    """``sweep.json`` (settings, rows, failures, definitions) and ``sweep.csv`` (the rows: the same columns in
    the same order whether or not an entry failed, whole numbers as integers; :meth:`SweepResult.to_frame`)."""
    out.mkdir(parents=True, exist_ok=True)
    public = {
        **result.to_dict(),
        "failures": [{k: v for k, v in f.items() if k != "traceback"} for f in result.failures],
    }
    _write_atomic(out / "sweep.json", dumps(public, indent=2))
    _write_atomic(out / "sweep.csv", result.to_frame().to_csv(index=False, float_format="%.6f"))
    return [out / "sweep.json", out / "sweep.csv"]
