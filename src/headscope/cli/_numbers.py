"""Every numeric option of every command has one declared range, checked before anything loads.

Click turns ``--lr inf``, ``--max-memory nan`` and ``--seed 99999999999999999999999`` into
numbers without complaint; left alone they reach the work and fail late (a NaN-weighted toy
run, a Ray cluster started for ``--cpus-per-task 1e-9``, an overflow inside torch's seeding).
:data:`RANGES` declares, once, the values each option may take; :func:`check_numbers` runs in
the error handler of every command before the command's body, so a value outside its range
is a one-line usage error (exit 2) with nothing loaded, trained, written or started.

A command's own, finer checks (the model's context, ``--every`` against ``--steps``) still run
after these. ``tests/test_numbers.py`` reads every command's options from the typer app: a new
numeric option without a range here fails that test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import BadInput

SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed and numpy take 64 bits; one bound for every seed


@dataclass(frozen=True)
class Range:
    """``lo <= value <= hi`` (``lo < value`` when ``lo_open``); floats must also be finite."""

    lo: float
    hi: float
    lo_open: bool = False

    def describe(self) -> str:
        return f"{'more than' if self.lo_open else 'at least'} {_num(self.lo)} and at most {_num(self.hi)}"

    def problem(self, value: float) -> str | None:
        """What is wrong with ``value`` (None when it is in range)."""
        if isinstance(value, float) and not math.isfinite(value):
            return f"{value} is not a finite number"
        if self.lo_open and not value > self.lo:
            return f"must be more than {_num(self.lo)} (got {_num(value)})"
        if not self.lo_open and value < self.lo:
            return f"must be at least {_num(self.lo)} (got {_num(value)})"
        if value > self.hi:
            return f"must be at most {_num(self.hi)} (got {_num(value)})"
        return None


def _num(v: float) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        v = int(v)
    return f"{v:,}".replace(",", "_") if isinstance(v, int) and abs(v) >= 100_000 else str(v)


#: Options shared by the scanning commands (same name, same meaning, same range).
COMMON: dict[str, Range] = {
    "seq_len": Range(2, 1_000_000),
    "batch": Range(1, 1_000_000),
    "repeats": Range(2, 1_000),
    "seed": Range(0, SEED_MAX),
    "top": Range(1, 100_000),
    "max_memory": Range(0, 1_000_000, lo_open=True),  # GiB
}

#: Per command: the shared options it takes plus its own. The one table of ranges.
RANGES: dict[str, dict[str, Range]] = {
    "induction": {**COMMON, "controls": Range(1, 10_000)},
    "heads": {**COMMON, "icl_windows": Range(1, 100_000)},
    "qk": {
        "top": COMMON["top"],
        "query": Range(-1_000_000, 1_000_000),  # negative counts from the end
        "max_tokens": Range(2, 1_000_000),
        "max_memory": COMMON["max_memory"],
    },
    "logits": {**COMMON, "max_tokens": Range(2, 1_000_000), "controls": Range(1, 10_000)},
    "report": {**COMMON, "qk_top": Range(1, 100_000), "controls": Range(1, 10_000)},
    "circuit": {
        "examples": Range(1, 100_000),
        "seq_len": COMMON["seq_len"],
        "seed": COMMON["seed"],
        "top": COMMON["top"],
        "max_memory": COMMON["max_memory"],
        "ig_steps": Range(1, 10_000),
        "top_edges": Range(1, 100_000_000),
        "edge_sample": Range(0, 100_000_000),  # 0: skip the ranking check
    },
    "serve": {
        "port": Range(1, 65_535),
        "max_tokens": Range(2, 1_000_000),
        "max_chars": Range(1, 100_000_000),
        "queue": Range(1, 10_000),
    },
    "sweep": {
        **COMMON,
        "cpus_per_task": Range(0.01, 1024),  # a task runs torch with max(1, int(cpus)) threads
        "gpus_per_task": Range(0, 1024, lo_open=True),  # fractions pack several tasks on one GPU
    },
    "train-toy": {
        "steps": Range(1, 10_000_000),
        "every": Range(1, 10_000_000),
        "seed": COMMON["seed"],
        "lr": Range(
            0, 1, lo_open=True
        ),  # at 100 the toy's weights reach 1e5 within steps; 1 is far above any useful rate
        "batch": Range(1, 65_536),
        "layers": Range(2, 64),
        "heads": Range(1, 256),
        "d_model": Range(1, 8_192),
        "vocab": Range(2, 1_000_000),
        "n_ctx": Range(4, 65_536),
        "block": Range(1, 65_536),
        "threads": Range(1, 1_024),
    },
}


def command_name(fn) -> str | None:
    """The name ``fn`` (a command's function, wrapped or not) is registered under in the typer app."""
    import inspect

    from . import app

    target = inspect.unwrap(fn)
    for c in app.registered_commands:
        if c.callback is not None and inspect.unwrap(c.callback) is target:
            return c.name or target.__name__.replace("_", "-")
    return None


def option_name(param: str) -> str:
    """``cpus_per_task`` -> ``--cpus-per-task``: every numeric option is spelled after its parameter."""
    return "--" + param.replace("_", "-")


def check_numbers(command: str | None, values: dict) -> None:
    """Check ``values`` (parameter name -> value) of ``command`` against :data:`RANGES`: :class:`BadInput` at the first miss.

    >>> check_numbers("train-toy", {"lr": float("inf")})
    Traceback (most recent call last):
    headscope.errors.BadInput: --lr inf is not a finite number; nothing was loaded or written
      hint: --lr takes a number more than 0 and at most 1
    """
    ranges = RANGES.get(command or "", {})
    for name, value in values.items():
        if name not in ranges or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        problem = ranges[name].problem(value)
        if problem:
            opt = option_name(name)
            raise BadInput(
                f"{opt} {problem}; nothing was loaded or written",
                hint=f"{opt} takes a number {ranges[name].describe()}",
            )
