"""Every numeric option of every command has a declared range (cli/_numbers.RANGES), checked before work starts.

The options are read from the typer app itself, so a numeric option added without a range
fails here. Each range is then probed with nan, inf, a number beyond 64 bits and the values just
outside each end: every one is a usage error (exit 2) naming the option, with no model loaded,
no toy trained, no Ray started and nothing written.
"""

from __future__ import annotations

import inspect
import typing

import pytest
from typer.testing import CliRunner

import headscope.models
import headscope.pipeline.sweep as sweep_mod
import headscope.toy.train as toy_train
from headscope.cli import app
from headscope.cli._numbers import RANGES, option_name

runner = CliRunner()


def numeric_options() -> list[tuple[str, str, type]]:
    """(command, parameter, int or float) for every numeric option the app declares."""
    found = []
    for c in app.registered_commands:
        fn = inspect.unwrap(c.callback)
        name = c.name or fn.__name__.replace("_", "-")
        for param, hint in typing.get_type_hints(fn, include_extras=True).items():
            if typing.get_origin(hint) is not typing.Annotated:
                continue
            base = typing.get_args(hint)[0]
            kinds = [a for a in typing.get_args(base) if a is not type(None)] or [base]
            if kinds[0] in (int, float):
                found.append((name, param, kinds[0]))
    return found


OPTIONS = numeric_options()


def test_the_app_has_numeric_options_and_each_has_a_declared_range():
    assert len(OPTIONS) > 40  # the introspection sees them (a broken reader would pass the next line vacuously)
    missing = [f"{c} {option_name(p)}" for c, p, _ in OPTIONS if p not in RANGES.get(c, {})]
    assert missing == [], f"numeric options without a range in cli/_numbers.RANGES: {missing}"
    # and the table names no option that does not exist
    declared = {(c, p) for c, p, _ in OPTIONS}
    assert {(c, p) for c, r in RANGES.items() for p in r} <= declared


def bad_values(kind: type, lo: float, hi: float, lo_open: bool) -> list[str]:
    vals = [str(2**70), str(-(2**70))]
    if kind is float:
        vals += ["nan", "inf", "-inf", "1e400", repr(hi * 1.001 + 1e-9), repr(lo if lo_open else lo - 1e-6)]
    else:
        vals += [str(int(hi) + 1), str(int(lo) - 1)]
    return vals


CASES = [
    (c, p, v)
    for c, p, kind in OPTIONS
    for v in bad_values(kind, RANGES[c][p].lo, RANGES[c][p].hi, RANGES[c][p].lo_open)
]


@pytest.fixture
def nothing_runs(monkeypatch):
    calls: list = []

    def spy(*args, **kwargs):
        calls.append(args)
        raise AssertionError("work started although an option was out of range")

    monkeypatch.setattr(headscope.models, "load_model", spy)
    monkeypatch.setattr(sweep_mod, "load_model", spy)
    monkeypatch.setattr(toy_train, "train_toy", spy)
    import headscope.pipeline.sweep_ray as sweep_ray

    monkeypatch.setattr(sweep_ray, "import_ray", spy)
    return calls


@pytest.mark.parametrize("command,param,value", CASES, ids=[f"{c} {p} {v}" for c, p, v in CASES])
def test_a_value_outside_the_range_is_refused_before_anything_runs(command, param, value, tmp_path, nothing_runs):
    args = [command, option_name(param), value]
    if command != "serve":  # the explorer writes nothing until asked
        args += ["--out", str(tmp_path / ("p.html" if command == "report" else "o"))]
    if command not in ("train-toy",):
        args += ["--model", "no-such-model-is-ever-loaded"]
    if command == "sweep":
        args += ["--executor", "ray"]
    if command == "qk" and param != "query":
        args += ["--head", "L0H0"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    flat = " ".join(r.output.replace("│", " ").split())
    assert option_name(param) in flat, flat
    assert "Traceback" not in r.output
    assert nothing_runs == [] and list(tmp_path.iterdir()) == []


def test_values_at_the_ends_of_a_range_pass_the_check():
    from headscope.cli._numbers import check_numbers

    for command, ranges in RANGES.items():
        for param, r in ranges.items():
            check_numbers(command, {param: r.hi})
            if not r.lo_open:
                check_numbers(command, {param: r.lo})
