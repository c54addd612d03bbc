"""`headscope sweep`: many models / checkpoints, one table and figure, resumable after a failure.

Offline, over tiny local model directories (random-weight GPT-2 and Llama, and copies of one
GPT-2 laid out as training checkpoints ``run/step100`` ...). Scans are small (8 tokens x 2
repeats, batch 2) so that the whole file runs in seconds.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

import headscope.pipeline.sweep as sweep_mod
from headscope.cli import app
from headscope.errors import BadInput, ModelLoadError
from headscope.pipeline.sweep import SweepEntry, plan_sweep, run_sweep, step_of

SCAN = ["--seq-len", "8", "--batch", "2"]
runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_gpt2_dir):
    """Three "checkpoints" of one run: copies of the tiny GPT-2 at run/step100, step1000, step30000."""
    run = tmp_path_factory.mktemp("sweep-run") / "run"
    dirs = []
    for step in (100, 1000, 30000):
        d = run / f"step{step}"
        shutil.copytree(tiny_gpt2_dir, d)
        dirs.append(d)
    return dirs


@pytest.fixture
def fast_load(monkeypatch, tiny_gpt2):
    """Every checkpoint copy is the tiny GPT-2: hand back the session's loaded one (loading is tested above)."""
    calls = []

    def load(spec, **kw):
        calls.append(str(spec))
        return tiny_gpt2

    monkeypatch.setattr(sweep_mod, "load_model", load)
    return calls


@pytest.fixture
def count_scans(monkeypatch):
    """Count calls of scan_induction made by the sweep."""
    calls = []
    real = sweep_mod.scan_induction

    def counting(model, *args, **kw):
        calls.append(kw)
        return real(model, *args, **kw)

    monkeypatch.setattr(sweep_mod, "scan_induction", counting)
    return calls


def sweep(*args):
    return runner.invoke(app, ["sweep", *args, *SCAN])


def test_sweep_over_two_local_models_writes_entries_table_and_figure(tiny_gpt2_dir, tiny_llama_dir, tmp_path):
    out = tmp_path / "out"
    r = sweep("-m", str(tiny_gpt2_dir), "-m", str(tiny_llama_dir), "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [e["status"] for e in data["entries"]] == ["done", "done"]
    assert [e["n_layers"] for e in data["entries"]] == [2, 3]
    assert len(list((out / "entries").glob("*.json"))) == 2
    assert (out / "sweep.png").stat().st_size > 0
    table = pd.read_csv(out / "sweep.csv")
    assert list(table["status"]) == ["done", "done"]
    for col in ("induction_top", "induction_sum", "loss_later_repeats", "loss_first_repeat", "top_head"):
        assert table[col].notna().all(), col
    # the sum over heads is at least the top head's score (scores are non-negative)
    assert (table["induction_sum"] >= table["induction_top"]).all()
    entry = json.loads(next((out / "entries").glob("*.json")).read_text())
    assert entry["result"]["settings"]["seq_len"] == 8 and "induction" in entry["result"]["scores"]


def test_rerun_skips_finished_entries_and_leaves_their_files_alone(checkpoints, tmp_path, fast_load, count_scans):
    out = tmp_path / "out"
    args = [x for d in checkpoints[:2] for x in ("-m", str(d))] + ["--out", str(out)]
    assert sweep(*args).exit_code == 0
    assert len(count_scans) == 2
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "entries").iterdir()}

    r = sweep(*args)
    assert r.exit_code == 0, r.output
    assert len(count_scans) == 2  # nothing scanned again
    assert "finished earlier, skipped" in r.output
    assert {p.name: p.stat().st_mtime_ns for p in (out / "entries").iterdir()} == mtimes

    # one more checkpoint: only it runs
    r = sweep(*args, "-m", str(checkpoints[2]))
    assert r.exit_code == 0, r.output
    assert len(count_scans) == 3


def test_failed_entry_keeps_the_finished_one_and_a_rerun_runs_only_the_missing(
    checkpoints, tmp_path, monkeypatch, fast_load, count_scans
):
    out = tmp_path / "out"
    real_load = sweep_mod.load_model

    def broken_second(spec, **kw):
        if str(spec) == str(checkpoints[1]):
            raise ModelLoadError("could not load the weights of step1000: truncated file", hint="download it again")
        return real_load(spec, **kw)

    monkeypatch.setattr(sweep_mod, "load_model", broken_second)
    args = [x for d in checkpoints for x in ("-m", str(d))] + ["--out", str(out)]
    r = sweep(*args)
    assert r.exit_code == 1
    assert "step1000: failed: could not load the weights of step1000" in " ".join(r.output.split())
    assert "1 of 3 entries failed" in " ".join(r.output.split())
    assert len(list((out / "entries").glob("*.json"))) == 2  # the first and the third are on disk
    table = json.loads((out / "sweep.json").read_text())
    assert [e["status"] for e in table["entries"]] == ["done", "failed", "done"]
    assert table["failures"][0]["error"].startswith("could not load the weights")
    assert "traceback" not in table["failures"][0]

    monkeypatch.setattr(sweep_mod, "load_model", real_load)  # "fixed"
    before = len(count_scans)
    r = sweep(*args)
    assert r.exit_code == 0, r.output
    assert len(count_scans) == before + 1
    assert [e["status"] for e in json.loads((out / "sweep.json").read_text())["entries"]] == ["done"] * 3


def test_interrupted_sweep_keeps_the_entry_it_finished(checkpoints, tmp_path, monkeypatch, fast_load):
    out = tmp_path / "out"
    calls = []

    def scan_then_interrupt(model, *args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return headscope_scan(model, **kw)

    headscope_scan = sweep_mod.scan_induction
    monkeypatch.setattr(sweep_mod, "scan_induction", scan_then_interrupt)
    entries = plan_sweep([str(d) for d in checkpoints])
    with pytest.raises(KeyboardInterrupt):
        run_sweep(entries, out, seq_len=8, batch=2)
    assert sweep_mod.read_entry(out, entries[0]) is not None
    assert sweep_mod.read_entry(out, entries[1]) is None
    assert not list((out / "entries").glob(".*partial"))  # no half-written file left
    assert list(pd.read_csv(out / "sweep.csv")["status"]) == ["done", "pending", "pending"]


def test_results_made_with_other_settings_are_not_mixed_in(checkpoints, tmp_path, fast_load, count_scans):
    out = tmp_path / "out"
    assert sweep("-m", str(checkpoints[0]), "--out", str(out)).exit_code == 0
    before = {p.name: p.read_bytes() for p in (out / "entries").iterdir()}
    r = runner.invoke(app, ["sweep", "-m", str(checkpoints[0]), "--out", str(out), "--seq-len", "9", "--batch", "2"])
    # exit 4, "results would be overwritten" (README, docs/failure-modes.md): the settings are valid input,
    # it is the earlier sweep in --out that recomputing would replace
    assert r.exit_code == 4, r.output
    text = " ".join(r.output.split())
    assert "other settings" in text and "seq_len 8 (now 9)" in text and "nothing was run" in text
    assert "same settings to resume" in text and "--out" in text and "--overwrite" in text
    assert len(count_scans) == 1
    assert {p.name: p.read_bytes() for p in (out / "entries").iterdir()} == before
    r = runner.invoke(
        app, ["sweep", "-m", str(checkpoints[0]), "--out", str(out), "--seq-len", "9", "--batch", "2", "--overwrite"]
    )
    assert r.exit_code == 0, r.output
    assert len(count_scans) == 2
    assert json.loads((out / "sweep.json").read_text())["settings"]["seq_len"] == 9


def test_checkpoint_directories_give_steps_of_one_run(checkpoints):
    entries = plan_sweep([str(d) for d in checkpoints])
    assert [e.step for e in entries] == [100, 1000, 30000]
    assert len({e.series for e in entries}) == 1  # one line in the figure
    assert [e.label for e in entries] == ["step100", "step1000", "step30000"]


@pytest.mark.parametrize(
    "name, step",
    [
        ("step1000", 1000),
        ("step0", 0),
        ("run/checkpoint-500", 500),
        ("global_step20", 20),
        ("main", None),
        ("gpt2", None),
        ("v2step", None),
    ],
)
def test_step_is_read_from_revision_or_directory_names(name, step):
    assert step_of(name) == step


def test_revisions_are_passed_to_the_loader(monkeypatch, tmp_path, tiny_gpt2):
    """Plumbing only: Pythia's checkpoints (``--revision step1000``) live on the Hugging Face hub,
    which this test cannot reach, so the loader is replaced by one that records its arguments
    and returns the tiny GPT-2; what is checked is that each revision reaches ``load_model``
    and becomes the entry's step."""
    seen = []

    def fake_load(spec, **kw):
        seen.append((spec, kw.get("revision")))
        return tiny_gpt2

    monkeypatch.setattr(sweep_mod, "load_model", fake_load)
    out = tmp_path / "out"
    r = sweep("-m", "EleutherAI/pythia-70m", "-r", "step1000,step3000", "-r", "step143000", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert seen == [
        ("EleutherAI/pythia-70m", "step1000"),
        ("EleutherAI/pythia-70m", "step3000"),
        ("EleutherAI/pythia-70m", "step143000"),
    ]
    rows = json.loads((out / "sweep.json").read_text())["entries"]
    assert [(e["label"], e["step"]) for e in rows] == [
        ("EleutherAI/pythia-70m@step1000", 1000),
        ("EleutherAI/pythia-70m@step3000", 3000),
        ("EleutherAI/pythia-70m@step143000", 143000),
    ]


def test_revision_with_a_local_directory_is_refused_with_a_hint(tiny_gpt2_dir):
    with pytest.raises(BadInput, match="--revision applies to hub models") as exc:
        plan_sweep([str(tiny_gpt2_dir)], ["step1000"])
    assert "checkpoint directory" in exc.value.hint


def test_the_same_model_twice_is_refused(tiny_gpt2_dir):
    with pytest.raises(BadInput, match="more than once"):
        plan_sweep([str(tiny_gpt2_dir), str(tiny_gpt2_dir)])


def test_directories_with_the_same_name_get_distinct_labels(tmp_path, tiny_gpt2_dir):
    a, b = tmp_path / "a" / "final", tmp_path / "b" / "final"
    shutil.copytree(tiny_gpt2_dir, a)
    shutil.copytree(tiny_gpt2_dir, b)
    entries = plan_sweep([str(a), str(b)])
    assert len({e.label for e in entries}) == 2 and len({e.key for e in entries}) == 2


def test_entry_key_does_not_depend_on_how_the_path_was_written(tiny_gpt2_dir, monkeypatch):
    monkeypatch.chdir(tiny_gpt2_dir.parent)
    rel = SweepEntry(tiny_gpt2_dir.name, None, "x")
    assert rel.key == SweepEntry(str(tiny_gpt2_dir), None, "x").key


def test_sweep_figure_draws_models_in_order_when_there_are_no_steps():
    from headscope.render.sweep_figures import sweep_figure

    frame = pd.DataFrame(
        [
            {
                "label": n,
                "model": n,
                "series": n,
                "step": None,
                "status": s,
                "induction_top": t,
                "induction_sum": 2 * t,
                "loss_first_repeat": 10.0,
                "loss_later_repeats": 10 - 8 * t,
            }
            for n, s, t in (("small", "done", 0.1), ("medium", "failed", float("nan")), ("large", "done", 0.9))
        ]
    )
    fig = sweep_figure(frame)
    ticks = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    assert ticks == ["small", "large"]
    assert "1 of 3 entries not finished" in fig._suptitle.get_text()
    # different models are not points on one curve: markers only, no line between them
    for ax in fig.axes:
        assert ax.get_lines() and all(line.get_linestyle() == "None" for line in ax.get_lines())


def test_an_unwritable_out_is_refused_before_anything_runs(tmp_path, count_scans, tiny_gpt2_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = sweep("-m", str(tiny_gpt2_dir), "--out", str(blocker / "out"))
    # exit 5, the same code and message as every other command's unwritable --out (docs/failure-modes.md)
    assert r.exit_code == 5 and "cannot write results to" in r.output and "is a file" in r.output
    assert count_scans == []


def test_a_folder_of_the_users_own_files_is_refused_and_left_alone(tiny_gpt2_dir, tmp_path, count_scans):
    """House rule: nothing a user already has is lost or overwritten silently (exit 4, as every other command)."""
    out = tmp_path / "mydata"
    out.mkdir()
    (out / "sweep.csv").write_text("mine\n")
    (out / "sweep.json").write_text('{"mine": 1}\n')
    for extra in ([], ["--overwrite"]):  # --overwrite recomputes a sweep's entries; it never takes the user's files
        r = sweep("-m", str(tiny_gpt2_dir), "--out", str(out), *extra)
        assert r.exit_code == 4, r.output
        text = " ".join(r.output.split())
        assert "already holds files headscope did not write" in text and "nothing was written" in text
        assert "choose a new or empty directory for --out" in text and "Traceback" not in r.output
        assert (out / "sweep.csv").read_text() == "mine\n"
        assert (out / "sweep.json").read_text() == '{"mine": 1}\n'
        assert sorted(p.name for p in out.iterdir()) == ["sweep.csv", "sweep.json"]
    assert count_scans == []  # refused before any model loaded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydata"]  # no lock or temporary file left beside it


def test_another_commands_results_are_not_swept_into(tiny_gpt2_dir, tmp_path, count_scans):
    from headscope.pipeline.outputs import ResultDir

    out = tmp_path / "out"
    with ResultDir.open(out, command="induction") as rd:
        rd.write_text("scores.json", "{}")
        rd.commit()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = sweep("-m", str(tiny_gpt2_dir), "--out", str(out))
    assert r.exit_code == 4, r.output
    assert "holds the results of `headscope induction`" in " ".join(r.output.split())
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and count_scans == []


def test_a_sweep_folder_is_marked_as_headscopes_and_an_earlier_unmarked_one_still_resumes(
    checkpoints, tmp_path, fast_load, count_scans
):
    from headscope.pipeline.outputs import MANIFEST

    out = tmp_path / "out"
    args = ["-m", str(checkpoints[0]), "--out", str(out)]
    assert sweep(*args).exit_code == 0
    assert json.loads((out / MANIFEST).read_text())["command"] == "sweep"
    # a sweep written before sweeps wrote a manifest: only a sweep's files, sweep.json a sweep table
    (out / MANIFEST).unlink()
    r = sweep(*args)
    assert r.exit_code == 0, r.output
    assert "finished earlier, skipped" in r.output and len(count_scans) == 1
    assert (out / MANIFEST).is_file()
    # ... but a user's file beside such a folder's results makes it not a sweep's any more
    (out / MANIFEST).unlink()
    (out / "notes.txt").write_text("mine")
    r = sweep(*args)
    assert r.exit_code == 4, r.output
    assert (out / "notes.txt").read_text() == "mine" and not (out / MANIFEST).exists()


def test_help_shows_the_ray_extra():
    r = runner.invoke(app, ["sweep", "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert r.exit_code == 0
    assert "headscope[ray]" in r.output


def test_plot_of_a_sweep_where_no_entry_finished_says_why_instead_of_a_key_error():
    from headscope.errors import BadInput
    from headscope.results.sweep_result import SweepResult

    res = SweepResult(
        rows=[{"label": "pythia-70m", "status": "failed", "step": None}],
        failures=[{"label": "pythia-70m", "error": "the hub is not reachable", "hint": "download it first"}],
        settings={},
    )
    with pytest.raises(BadInput, match="no entry of this sweep finished.*pythia-70m: the hub is not reachable"):
        res.plot()


def _sweep_with(checkpoints, out, monkeypatch, fail: bool):
    """``sweep`` over a missing checkpoint (when ``fail``) and a real one: the tester's one-fails-one-finishes run."""
    missing = checkpoints[0].parent / "nothere-step5"
    models = ([str(missing)] if fail else []) + [str(checkpoints[1])]
    r = sweep(*[x for m in models for x in ("-m", m)], "--out", str(out))
    assert r.exit_code == (1 if fail else 0), r.output
    return r


def test_the_csv_has_the_same_columns_and_integers_whether_or_not_an_entry_failed(
    checkpoints, tmp_path, monkeypatch, tiny_gpt2
):
    """A failure added an `error` column in the middle, moved `same_weights_as`, and wrote n_layers as 2.000000."""
    real = sweep_mod.load_model

    def load(spec, **kw):
        return real(spec, **kw) if "nothere" in str(spec) else tiny_gpt2

    monkeypatch.setattr(sweep_mod, "load_model", load)
    _sweep_with(checkpoints, tmp_path / "ok", monkeypatch, fail=False)
    _sweep_with(checkpoints, tmp_path / "failed", monkeypatch, fail=True)
    from headscope.results.sweep_result import COLUMNS, INT_COLUMNS, SUMMARY_DEFINITIONS

    headers = {k: (tmp_path / k / "sweep.csv").read_text().splitlines()[0] for k in ("ok", "failed")}
    assert headers["ok"] == headers["failed"] == ",".join(COLUMNS)
    assert headers["ok"].endswith("same_weights_as,error")
    ok, failed = (pd.read_csv(tmp_path / k / "sweep.csv", dtype=str, keep_default_na=False) for k in ("ok", "failed"))
    assert list(failed["status"]) == ["failed", "done"] and list(ok["error"]) == [""]
    assert "cannot load" in failed["error"][0] or "nothere-step5" in failed["error"][0]
    done = failed.iloc[1]
    for col in INT_COLUMNS:  # written as integers in both files ("2", never "2.000000"); empty for the failure
        assert ok[col][0].isdigit() and done[col].isdigit(), col
        assert int(ok[col][0]) == int(done[col]), col
        assert col == "step" or failed[col][0] == "", col
    assert failed["step"][0] == "5"
    assert "error" in SUMMARY_DEFINITIONS  # sweep.json's definitions explain the new column


def test_a_single_finished_checkpoint_is_drawn_in_both_loss_series(checkpoints, tmp_path, monkeypatch, tiny_gpt2):
    """With steps the first-repeat loss was a dashed line without markers: one finished point drew nothing."""
    from matplotlib.colors import to_rgba

    from headscope.render.sweep_figures import sweep_figure
    from headscope.results.sweep_result import SweepResult

    real = sweep_mod.load_model
    monkeypatch.setattr(sweep_mod, "load_model", lambda s, **kw: real(s, **kw) if "nothere" in str(s) else tiny_gpt2)
    out = tmp_path / "out"
    _sweep_with(checkpoints, out, monkeypatch, fail=True)
    res = SweepResult.from_json(out)
    fig = sweep_figure(res.to_frame())
    loss = fig.axes[-1]
    assert loss.get_xlabel() == "training step"
    lines = {line.get_label(): line for line in loss.get_lines()}
    assert set(lines) == {"later repeats", "first repeat"}
    for label, line in lines.items():  # each series is one point, drawn as a visible marker
        assert line.get_marker() not in (None, "None", "", " ") and line.get_markersize() > 0, label
        assert len(line.get_xdata()) == 1 and line.get_xdata()[0] == 1000.0, label
        assert line.get_alpha() is None or line.get_alpha() > 0, label
    first = lines["first repeat"]
    assert first.get_ydata()[0] == pytest.approx(res.rows[1]["loss_first_repeat"])
    assert first.get_linestyle() == "--" and to_rgba(first.get_markerfacecolor())[3] == 0  # dashed, hollow
    legend = [t.get_text() for t in loss.get_legend().get_texts()]
    assert legend == ["later repeats", "first repeat"]


def test_the_terminal_legend_explains_the_columns_printed_and_counts_entries_in_english(
    checkpoints, tmp_path, fast_load
):
    from headscope.render.views.sweep_view import TABLE

    r = runner.invoke(app, ["sweep", "-m", str(checkpoints[0]), "--out", str(tmp_path / "out"), *SCAN])
    assert r.exit_code == 0, r.output
    assert "Sweep of 1 entry into" in r.output and "1 entries" not in r.output
    legend = r.output[r.output.index("Legend:") :]
    named = [line.strip().split(":")[0] for line in legend.splitlines()[1:] if line.startswith("  ") and ":" in line]
    headers = [h for h, _, _ in TABLE]
    assert named == [*headers, "induction"]  # every column with a number, then the score they measure
    table = r.output[: r.output.index("Legend:")]
    for header in headers:
        assert header in table, header
    for absent in ("prefix_matching_top", "same_weights_as", "induction_top", "loss_first_repeat"):
        assert absent not in r.output, absent  # no legend for a column that is not on screen
