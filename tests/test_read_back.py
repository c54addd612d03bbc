"""Saved runs read back into their results (``Result.from_json``): a notebook user reloads a results folder to
replot or query it. Each result that reads back survives ``to_json -> from_json`` unchanged (``==`` compares
``to_dict()``), still draws its figures and gives its frame; the command's folder reads back as the JSON it wrote;
the results whose JSON does not hold them say why; bad inputs are clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import headscope
from headscope.circuits import induction_task
from headscope.cli import app
from headscope.errors import BadInput, ModelLoadError
from headscope.jsonsafe import strict
from headscope.pipeline.circuit_analysis import CircuitSettings, analyze_circuit
from headscope.results import (
    ActivationPatching,
    AttentionSample,
    CircuitAnalysis,
    HeadsAnalysis,
    ICLResult,
    InductionResult,
    LogitAnalysis,
    PathPatching,
    QKAnalysis,
    SinkScores,
    SweepResult,
)
from headscope.results.edge_results import NOT_READ_BACK, READ_EDGES, EdgeCircuit

runner = CliRunner()


def round_trip(res):
    """``res`` through its JSON text and back: equal to ``res``, and its JSON reads the same again."""
    back = type(res).from_json(res.to_json())
    assert type(back) is type(res) and back == res
    assert type(res).from_json(back.to_json()) == back
    return back


def same_frame(a: pd.DataFrame, b: pd.DataFrame, atol: float) -> None:
    """The same frame up to the JSON's rounding (``atol``)."""
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=atol, rtol=0, check_dtype=False)


def written(path) -> dict:
    return json.loads(path.read_text())


# --- induction ------------------------------------------------------------------------------------------


def test_an_ablated_scan_reads_back_equal_control_spread_included(tiny_gpt2):
    res = headscope.scan_induction(tiny_gpt2, seq_len=6, batch=3)  # causal check with its random control
    assert res.control_spread() is not None
    back = round_trip(res)
    assert back.to_dict()["ablation_control"] == res.to_dict()["ablation_control"]
    assert back.verdicts() == res.verdicts()
    top, again = res.top_heads("induction", 3), back.top_heads("induction", 3)
    assert [t[:2] for t in again] == [t[:2] for t in top]
    assert [t[2] for t in again] == pytest.approx([t[2] for t in top], abs=1e-6)
    same_frame(back.to_frame(), res.to_frame(), 1e-6)
    for fig in (back.plot_scores("induction"), back.plot_loss(), back.plot_ablation()):
        assert fig is not None


def test_the_induction_folder_reads_back_as_written(tiny_gpt2_dir, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["induction", "--model", str(tiny_gpt2_dir), "--seq-len", "6", "--batch", "3",
                            "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    back = InductionResult.from_json(out)
    assert strict(back.to_dict()) == written(out / "scores.json")  # the control's spread too, to the digit
    assert InductionResult.from_json(out / "scores.json") == back


# --- heads ----------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _close_figures():
    """The tests draw every figure of a read-back result: close them, so none outlives its test."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture(scope="module")
def heads(tiny_llama):
    """Every part a heads analysis can hold: the scan, the ICL check with one ablated head, natural-text sinks."""
    return headscope.analyze_heads(
        tiny_llama, seq_len=6, batch=2, icl_windows=2, icl_top=1, sink_windows=3, progress=False
    )


def test_a_heads_analysis_reads_back_equal_with_its_icl_check_and_sinks(heads):
    assert heads.icl is not None and heads.icl.ablations and heads.natural_sinks is not None
    back = round_trip(heads)
    assert back.induction == heads.induction and back.icl == heads.icl and back.natural_sinks == heads.natural_sinks
    assert back.induction.per_position_loss == pytest.approx(heads.induction.per_position_loss, abs=1e-6)
    assert back.induction.timings == pytest.approx(heads.induction.timings, abs=1e-3)
    assert back.timings == pytest.approx(heads.timings, abs=1e-3) and back.notes == heads.notes
    assert back.role_table() == heads.role_table() and back.legend() == heads.legend()
    same_frame(back.to_frame(), heads.to_frame(), 1e-6)
    html = back._repr_html_()
    assert "in-context" in html.lower() and back.induction.plot_scores("induction") is not None
    assert back.icl is not None and back.icl.to_frame().shape == heads.icl.to_frame().shape


def test_the_heads_folder_reads_back_as_written(tiny_gpt2_dir, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["heads", "--model", str(tiny_gpt2_dir), "--seq-len", "6", "--batch", "3",
                            "--device", "cpu", "--no-icl", "--no-natural-sinks", "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    back = HeadsAnalysis.from_json(out)
    assert strict(back.to_dict()) == written(out / "heads.json")
    assert back.icl is None and back.natural_sinks is None
    assert back.to_frame().to_csv(index=False, float_format="%.6f") == (out / "heads.csv").read_text()


def test_icl_and_sinks_read_back_with_their_nans():
    nan = float("nan")
    icl = ICLResult(-0.5, nan, 3.0, 2.5, 50, 500, np.array([1.0, nan, 2.0]), 1, "one window", "mean",
                    [{"layer": 1, "head": 0, "delta": 0.1, "delta_ci95": [nan, nan]}], {"icl_s": 1.5})  # fmt: skip
    assert round_trip(icl).icl_ci95 != icl.icl_ci95  # NaN is not NaN, yet the results are equal as JSON
    z = np.array([[0.5, nan], [0.25, 1.0]])
    round_trip(SinkScores(z, z, z, 0.3, n_sequences=3, n_tokens=64, source="text", first_token="<bos>"))


# --- circuit --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def circuit(tiny_llama):
    return analyze_circuit(tiny_llama, induction_task(tiny_llama, n_examples=3, seq_len=5), CircuitSettings(top=1))


def test_a_circuit_analysis_reads_back_equal_and_draws_its_figures(circuit):
    assert circuit.activation and circuit.paths and not circuit.extra
    back = round_trip(circuit)
    for a, b in zip(back.activation, circuit.activation, strict=True):
        assert a == b and (a.n_layers, a.n_heads) == (b.n_layers, b.n_heads)
        assert a.values == pytest.approx(b.values, abs=5e-5) and a.plot() is not None
    for p, q in zip(back.paths, circuit.paths, strict=True):
        assert p == q and (p.senders, p.receivers) == (q.senders, q.receivers)
        assert (p.n_layers, p.n_heads) == (q.n_layers, q.n_heads)
        assert [t[:2] for t in p.top(3)] == [t[:2] for t in q.top(3)] and p.plot() is not None
    same_frame(back.to_frame(), circuit.to_frame(), 5e-5)
    assert back._repr_html_()


def test_per_position_activation_patching_reads_back(tiny_gpt2):
    a = analyze_circuit(
        tiny_gpt2,
        induction_task(tiny_gpt2, n_examples=3, seq_len=4),
        CircuitSettings(direction="denoise", per_position=True, steps=("activation",)),
    ).activation[0]
    assert a.per_position and a.values.shape == (2, 5) and a.position_values.shape == (2, 5, 9)
    back = round_trip(a)
    assert back.values.shape == a.values.shape and back.position_values.shape == a.position_values.shape
    assert back.positions == a.positions and back.plot() is not None and back.plot_by_position() is not None
    same_frame(back.to_frame(), a.to_frame(), 5e-5)
    same_frame(back.position_frame(), a.position_frame(), 5e-5)
    for name in ("position_change", "position_change_low", "position_change_high", "position_low"):
        assert getattr(back, name) == pytest.approx(getattr(a, name), abs=5e-5)
    circuit = CircuitAnalysis(model={}, task={}, activation=[a])  # inside circuit.json too
    assert CircuitAnalysis.from_json(circuit.to_json()).activation[0] == a


def test_the_circuit_folder_reads_back_as_written(tiny_llama_dir, tmp_path):
    out = tmp_path / "c"
    r = runner.invoke(app, ["circuit", "--model", str(tiny_llama_dir), "--device", "cpu", "--examples", "3",
                            "--seq-len", "5", "--top", "1", "--no-figures", "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    back = CircuitAnalysis.from_json(out)
    assert strict(back.to_dict()) == written(out / "circuit.json")
    same_frame(
        pd.concat([x.to_frame() for x in back.activation], ignore_index=True),
        pd.read_csv(out / "activation_patching.csv"),
        5e-5,
    )


def test_an_edge_circuit_does_not_read_back_and_says_why(tiny_llama):
    a = analyze_circuit(
        tiny_llama,
        induction_task(tiny_llama, n_examples=3, seq_len=5),
        CircuitSettings(direction="denoise", steps=("activation", "edges"), top_edges=3, edge_sample=0),
    )
    edge = next(e for e in a.extra if isinstance(e, EdgeCircuit))
    with pytest.raises(BadInput, match="does not read back: circuit.json keeps the attribution's strongest edges"):
        CircuitAnalysis.from_json(a.to_json())
    with pytest.raises(BadInput, match="edges.csv"):
        EdgeCircuit.from_json(edge.to_json())
    with pytest.raises(BadInput, match="does not read back"):
        type(edge.attribution).from_json(edge.attribution.to_json())
    d = json.loads(a.to_json())  # the patching inside it still reads back, one by one
    assert ActivationPatching.from_dict(d["activation_patching"][0]) == a.activation[0]
    # the edge circuit's own JSON given to another reader: the hint is what works, not EdgeCircuit.from_json
    for source in (edge.to_json(), d["extra"][0]):
        with pytest.raises(BadInput, match="JSON of an edge circuit, not of a circuit analysis") as e:
            CircuitAnalysis.from_json(source) if isinstance(source, str) else CircuitAnalysis.from_dict(source)
        assert "EdgeCircuit.from_json" not in str(e.value)
        assert e.value.hint == f"an edge circuit does not read back: {NOT_READ_BACK}; {READ_EDGES}"
    with pytest.raises(BadInput, match="JSON of edge attribution, not of activation patching") as e:
        ActivationPatching.from_json(edge.attribution.to_json())
    assert "edges.csv" in (e.value.hint or "") and "from_json" not in (e.value.hint or "")


# --- sweep ----------------------------------------------------------------------------------------------


def test_a_sweep_folder_reads_back_with_its_failures_and_entries(tiny_gpt2_dir, tmp_path, monkeypatch):
    import headscope.pipeline.sweep as sweep_mod

    broken = tmp_path / "broken"
    shutil.copytree(tiny_gpt2_dir, broken)
    real = sweep_mod.load_model

    def load(spec, **kw):
        if str(spec) == str(broken):
            raise ModelLoadError("could not load the weights: truncated file", hint="download it again")
        return real(spec, **kw)

    monkeypatch.setattr(sweep_mod, "load_model", load)
    out = tmp_path / "out"
    r = runner.invoke(app, ["sweep", "-m", str(tiny_gpt2_dir), "-m", str(broken), "--seq-len", "8", "--batch", "2",
                            "--out", str(out), "--json"])  # fmt: skip
    assert r.exit_code == 1, r.output
    printed = SweepResult.from_json(r.stdout)  # --json prints the failures with their tracebacks
    assert printed.failures[0]["traceback"] and round_trip(printed) == printed
    back = SweepResult.from_json(out)  # sweep.json leaves the tracebacks out
    assert strict(back.to_dict()) == written(out / "sweep.json") and "traceback" not in back.failures[0]
    assert [e["status"] for e in back.rows] == ["done", "failed"] and not back.ok
    assert back.to_frame().to_csv(index=False, float_format="%.6f") == (out / "sweep.csv").read_text()
    assert back.plot() is not None
    entry = written(out / back.rows[0]["file"])  # each finished entry's whole scan reads back from its file
    scan = InductionResult.from_dict(entry["result"])
    assert scan.to_dict()["scores"] == entry["result"]["scores"] and scan.plot_scores("induction") is not None


# --- the results that do not read back ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "why"),
    [
        (LogitAnalysis, "logits.json keeps the K-composition's baseline"),
        (QKAnalysis, "qk.json keeps each decomposition's 10 strongest"),
        (AttentionSample, "AttentionSample does not read back from JSON"),
    ],
)
def test_a_result_whose_json_does_not_hold_it_says_why(cls, why):
    with pytest.raises(BadInput, match=why):
        cls.from_json("{}")


def test_logits_and_qk_folders_are_refused_with_the_reason(tiny_gpt2_dir, tmp_path):
    out = tmp_path / "l"
    r = runner.invoke(app, ["logits", "--model", str(tiny_gpt2_dir), "--device", "cpu", "--text", "a b c a b c",
                            "--top", "1", "--seq-len", "6", "--batch", "2", "--no-ablate", "--no-figures",
                            "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    with pytest.raises(BadInput, match="does not read back") as e:
        LogitAnalysis.from_json(out)
    assert "json.load" in (e.value.hint or "")


# --- bad inputs -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scan_json(tiny_gpt2) -> str:
    return headscope.scan_induction(tiny_gpt2, seq_len=5, batch=2, ablate=False).to_json()


def test_a_missing_file_or_a_folder_without_the_file_is_a_clear_error(tmp_path, scan_json):
    with pytest.raises(BadInput, match="cannot read .*nothing.json") as e:
        HeadsAnalysis.from_json(tmp_path / "nothing.json")
    assert "heads.json" in (e.value.hint or "")
    with pytest.raises(BadInput, match="holds no circuit.json"):
        CircuitAnalysis.from_json(tmp_path)
    (tmp_path / "scores.json").write_text(scan_json)  # an induction folder given to the heads reader
    with pytest.raises(BadInput, match="holds no heads.json; it holds scores.json: read it with InductionResult"):
        HeadsAnalysis.from_json(tmp_path)
    with pytest.raises(BadInput, match="has no file of its own"):
        PathPatching.from_json(tmp_path)
    with pytest.raises(BadInput, match="takes a JSON text, a file or a results folder, not int"):
        SweepResult.from_json(3)


def test_text_that_is_not_json_or_not_an_object_is_a_clear_error(tmp_path):
    bad = tmp_path / "scores.json"
    bad.write_text("scores: [1, 2]")
    with pytest.raises(BadInput, match="not JSON"):
        InductionResult.from_json(bad)
    with pytest.raises(BadInput, match="not JSON"):
        InductionResult.from_json('{"scores": ')
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BadInput, match="not JSON"):
        InductionResult.from_json(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(BadInput, match=r"not the JSON of a sweep \(not an object\)"):
        SweepResult.from_json(bad)
    with pytest.raises(BadInput, match="not the JSON of a circuit analysis"):
        CircuitAnalysis.from_dict({"task": {}, "activation_patching": [], "path_patching": []})  # no model
    with pytest.raises(BadInput, match="not the JSON of activation patching"):  # the part that is not
        CircuitAnalysis.from_dict({"model": {}, "task": {}, "activation_patching": [{"direction": "noise"}],
                                   "path_patching": []})  # fmt: skip


def test_another_results_json_is_named(tmp_path, scan_json, circuit):
    with pytest.raises(BadInput, match=r"JSON of an induction scan \(scores.json\), not of a heads analysis") as e:
        HeadsAnalysis.from_json(scan_json)
    assert e.value.hint == "read it with InductionResult.from_json"
    with pytest.raises(BadInput, match=r"JSON of a circuit analysis \(circuit.json\), not of a sweep"):
        SweepResult.from_json(circuit.to_json())
    with pytest.raises(BadInput, match="JSON of path patching, not of activation patching"):
        ActivationPatching.from_json(circuit.paths[0].to_json())
    with pytest.raises(BadInput, match="JSON of an induction scan"):
        CircuitAnalysis.from_dict(json.loads(scan_json))


def test_json_from_before_read_back_is_refused_with_a_hint(heads, circuit):
    old = json.loads(heads.to_json())
    del old["scan"]
    with pytest.raises(BadInput, match="written before") as e:
        HeadsAnalysis.from_dict(old)
    assert "again" in (e.value.hint or "")
    old = json.loads(circuit.to_json())
    del old["path_patching"][0]["n_layers"]
    with pytest.raises(BadInput, match="written before"):
        CircuitAnalysis.from_dict(old)
    # per position, before the whole-sequence patch was kept beside it: values were per position only
    old = json.loads(circuit.activation[0].to_json())
    old["per_position"] = True
    with pytest.raises(BadInput, match="written before headscope measured the whole-sequence patch") as e:
        ActivationPatching.from_dict(old)
    assert "--per-position" in (e.value.hint or "")
