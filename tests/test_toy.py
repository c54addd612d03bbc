"""`headscope train-toy`: the data recipe, the checkpoints, the sweep over them, the phase detector, the CLI.

Training runs here are a few steps of a tiny batch (seconds): they test the plumbing, the
layout and the determinism, not that an induction head forms (docs/toy.md has the measured
full run).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import headscope
from headscope.cli import app
from headscope.errors import BadInput, OutputExists
from headscope.toy import CopyRecipe, ToyConfig, analyse_run, copy_batch, detect_phase_change, save_phase, train_toy
from headscope.toy.data import draw_spans
from headscope.toy.train import build_tokenizer, checkpoint_steps, is_attention_only

runner = CliRunner()
#: A run small enough for a test: 6 steps of 8 sequences, checkpoints at 0, 3, 6.
SMALL = dict(steps=6, every=3, batch=8, log_every=3, eval_batch=4)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "run"
    return train_toy(out, **SMALL)


# --- data ----------------------------------------------------------------------------------------
def test_recipe_distances_and_lengths_are_the_stated_ranges():
    # by hand: 64 tokens, BOS at 0, so a 2-token copy fits at most 61 back (source at 1, copy at 62-63)
    r = CopyRecipe()
    assert r.distances() == range(3, 62)
    assert list(r.lengths(3)) == [2, 3]  # never longer than the distance: the copy never overlaps its source
    assert list(r.lengths(20)) == list(range(2, 13))  # 2..12 where everything fits
    assert list(r.lengths(55)) == list(range(2, 9))  # 64 - 1 - 55 = 8 tokens of room
    assert list(r.lengths(61)) == [2]
    # a 12-token context: distances 3..9
    assert CopyRecipe(n_ctx=12, block=4, min_distance=3).distances() == range(3, 10)


def test_copy_distances_are_uniform_and_every_copy_fits():
    r = CopyRecipe()
    n = 59 * 200  # 200 sequences per distance on average, 4 copies each
    spans = draw_spans(r, n, torch.Generator().manual_seed(0)).reshape(-1, 3)
    dst, d, k = spans.unbind(1)
    counts = torch.bincount(d, minlength=62)[3:].double()
    assert counts.sum() == 4 * n and (torch.bincount(d, minlength=62)[:3] == 0).all()
    # uniform over 3..61: each count is Binomial(4n, 1/59); every one within 5 standard deviations
    p = 1 / 59
    assert ((counts - 4 * n * p).abs() < 5 * (4 * n * p * (1 - p)) ** 0.5).all()
    assert (dst - d >= 1).all() and (dst + k <= r.n_ctx).all() and (k <= d).all()
    for dist in (3, 30, 61):  # lengths: each that fits, and no other
        assert set(k[d == dist].tolist()) == set(r.lengths(dist))


def test_copy_batch_masks_mark_exactly_the_intact_copied_targets():
    r = CopyRecipe()
    b = copy_batch(r, 128, torch.Generator().manual_seed(1))
    assert (b.tokens[:, 0] == r.bos_id).all() and (b.tokens[:, 1:] < r.vocab).all()
    for i in range(128):
        toks = b.tokens[i].tolist()
        written_after = [set() for _ in range(r.copies)]  # positions later copies write
        for c in range(r.copies):
            for c2 in range(c + 1, r.copies):
                dst2, _, k2 = b.spans[i, c2].tolist()
                written_after[c] |= set(range(dst2, dst2 + k2))
        for c in range(r.copies):
            dst, d, k = b.spans[i, c].tolist()
            for t in range(dst + 1, dst + k):
                if not {t - 1, t, t - 1 - d, t - d} & written_after[c]:  # nothing wrote over it: intact
                    assert b.later[i, t - 1] and b.distance[i, t - 1] > 0
            assert not b.later[i, dst - 1] or any(  # a copy's first token is not predictable from this copy
                b.spans[i, c2, 0] < dst < b.spans[i, c2, 0] + b.spans[i, c2, 2] for c2 in range(r.copies)
            )
        for t in b.later[i].nonzero().squeeze(1).add(1).tolist():  # and every marked target is a copy
            dist = int(b.distance[i, t - 1])
            assert toks[t] == toks[t - dist] and toks[t - 1] == toks[t - 1 - dist]
    # the last copy written is always whole
    dst, d, k = b.spans[:, -1].unbind(1)
    for i in range(128):
        assert b.tokens[i, dst[i] : dst[i] + k[i]].equal(b.tokens[i, dst[i] - d[i] : dst[i] - d[i] + k[i]])
        assert int(b.later[i, dst[i] : dst[i] + k[i] - 1].sum()) == k[i] - 1
    assert b.later.sum(1).float().mean() > 10  # about 14 predictable targets in 63


def test_copy_batch_is_fixed_by_the_generator_seed():
    r = CopyRecipe()
    a, b = (copy_batch(r, 8, torch.Generator().manual_seed(3)) for _ in range(2))
    c = copy_batch(r, 8, torch.Generator().manual_seed(4))
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)


def test_recipe_without_room_for_varying_distances_is_refused():
    with pytest.raises(BadInput, match="positional shortcut"):
        CopyRecipe(n_ctx=12).check()
    CopyRecipe(n_ctx=16).check()  # distances 3..13: enough


# --- the phase detector ------------------------------------------------------------------------
STEPS = np.arange(0, 2001, 100)


def test_detector_finds_a_noisy_drop_where_it_was_made():
    rng = np.random.default_rng(0)
    y = 4.1 - 0.0001 * STEPS + rng.normal(0, 0.03, STEPS.size)
    y[STEPS >= 1300] -= 2.5  # the drop happens between 1200 and 1300
    w = detect_phase_change(STEPS, y, direction="down")
    assert w is not None and w.direction == "down"
    assert (w.before, w.after) == (1200, 1300)
    assert w.height == pytest.approx(-2.5, abs=0.15)
    assert w.ratio < 0.5


def test_detector_finds_a_smooth_rise_and_brackets_it():
    y = 0.05 + 0.7 / (1 + np.exp(-(STEPS - 900) / 50.0))  # 10%-90% between 790 and 1010
    w = detect_phase_change(STEPS, y, direction="up")
    assert w is not None and w.direction == "up"
    assert 700 <= w.before <= 800 and 1000 <= w.after <= 1100
    assert w.start == pytest.approx(900 - 50 * np.log(9), abs=15)


@pytest.mark.parametrize("curve", ["flat", "noise", "ramp"])
def test_detector_finds_nothing_without_an_abrupt_change(curve):
    rng = np.random.default_rng(1)
    y = {
        "flat": np.full(STEPS.shape, 4.16),
        "noise": 4.16 + rng.normal(0, 0.05, STEPS.size),
        "ramp": 4.16 - 0.001 * STEPS + rng.normal(0, 0.02, STEPS.size),
    }[curve]
    assert detect_phase_change(STEPS, y) is None


def test_detector_respects_the_direction_it_is_asked_for():
    y = np.where(STEPS < 1000, 0.1, 0.8)
    assert detect_phase_change(STEPS, y, direction="down") is None
    assert detect_phase_change(STEPS, y, direction="up").before == 900


# --- checkpoints -------------------------------------------------------------------------------
def test_checkpoints_have_the_stated_layout(short_run):
    out = short_run.out_dir
    assert [c["step"] for c in short_run.checkpoints] == [0, 3, 6] == checkpoint_steps(6, 3)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step0", "step3", "step6"]  # no partial directories left behind
    for d in short_run.checkpoint_dirs:
        files = {p.name for p in d.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "toy.json"} <= files
        assert json.loads((d / "toy.json").read_text())["step"] == int(d.name[4:])
    run = json.loads((out / "run.json").read_text())
    assert run["kind"] == "headscope-toy-run" and run["status"] == "done" and run["config"]["steps"] == 6
    log = short_run.to_frame()
    assert list(log["step"]) == [0, 3, 6]
    assert (out / "train_log.csv").read_text().splitlines()[0].startswith("step,loss,loss_later_repeats")


def test_checkpoints_are_attention_only_gpt2_with_a_word_level_tokenizer(short_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = short_run.checkpoint_dirs[-1]
    hf = AutoModelForCausalLM.from_pretrained(str(d))
    assert type(hf).__name__ == "GPT2LMHeadModel" and is_attention_only(hf)  # still zero after training
    tok = AutoTokenizer.from_pretrained(str(d))
    assert tok("t5 t0 t63")["input_ids"] == [64, 5, 0, 63]  # BOS prepended, as in training
    assert tok.convert_ids_to_tokens([7, 64, 65]) == ["t7", "<bos>", "<unk>"]
    assert hf.config.vocab_size == 66 and hf.config.n_positions == 64


def test_load_model_and_the_scan_work_and_agree_with_the_live_numbers(short_run):
    model = headscope.load_model(str(short_run.checkpoint_dirs[-1]), device="cpu")
    assert (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_vocab) == (2, 4, 66)
    cfg = short_run.config
    res = headscope.scan_induction(
        model, seq_len=cfg.eval_seq_len, batch=cfg.eval_batch, seed=cfg.eval_seed, ablate=False, sample=False
    )
    live = short_run.log[-1]
    # the live evaluation (HF attention weights) and the scan (TransformerBridge hooks) use the same sequences
    assert res.scores["induction"].max() == pytest.approx(live["induction_best"], abs=1e-5)
    assert res.scores["previous_token"][0].max() == pytest.approx(live["previous_token_best"], abs=1e-5)
    assert res.loss_later_repeats == pytest.approx(live["loss_later_repeats"], abs=1e-5)
    assert res.loss_first_repeat == pytest.approx(live["loss_first_repeat"], abs=1e-5)


def test_same_seed_gives_identical_curves_and_another_seed_does_not(tmp_path, short_run):
    again = train_toy(tmp_path / "again", **SMALL)
    other = train_toy(tmp_path / "other", seed=1, **SMALL)
    cols = ["loss", "loss_later_repeats", "induction_best", "previous_token_best"]
    assert again.to_frame()[cols].equals(short_run.to_frame()[cols])
    assert not other.to_frame()[cols].iloc[1:].equals(short_run.to_frame()[cols].iloc[1:])


def test_training_leaves_the_callers_random_state_and_thread_count_alone(tmp_path):
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_toy(tmp_path / "r", steps=2, every=1, batch=2, log_every=1, eval_batch=2)
    assert torch.equal(torch.rand(3), expected) and torch.get_num_threads() == threads


# --- sweep and phase analysis -------------------------------------------------------------------
def test_analysis_sweeps_the_checkpoints_and_resumes(short_run):
    events = []
    ph = analyse_run(short_run.out_dir, on_event=lambda kind, e, info: events.append(kind))
    assert events.count("done") == 3 and ph.steps == [0, 3, 6]
    assert (short_run.out_dir / "sweep" / "sweep.csv").is_file()
    assert len(list((short_run.out_dir / "sweep" / "entries").glob("*.json"))) == 3
    # the sweep's losses are the live evaluation's (same sequences, two code paths)
    live = {r["step"]: r for r in short_run.log}
    for s, loss in zip(ph.steps, ph.curves["loss_later_repeats"]):
        assert loss == pytest.approx(live[s]["loss_later_repeats"], abs=1e-5)
    # K-composition of the tracked pair equals the composition scores of the loaded checkpoint
    (pl, phh), (il, ih) = ph.previous_token_head, ph.induction_head
    assert pl < il
    model = headscope.load_model(str(short_run.checkpoint_dirs[-1]), device="cpu")
    k = headscope.composition_scores(model, kinds=("K",)).scores["K"]
    assert ph.curves["k_composition"][-1] == pytest.approx(k[pl, phh, il, ih], abs=1e-6)

    again = []
    ph2 = analyse_run(short_run.out_dir, on_event=lambda kind, e, info: again.append(kind))
    assert again == ["skip"] * 3
    assert ph2.curves == ph.curves
    # induction against copy distance: every checkpoint, every distance 3..61, and the fresh recheck
    off = ph.offsets
    assert off is not None and sorted(off.scores) == ph.steps and off.distances == list(range(3, 62))
    assert all(g.shape == (2, 4, 59) for g in off.scores.values()) and off.recheck.shape == (2, 4, 59)
    assert ph.curves["induction_pair_offset_min"] == [float(off.scores[s][il, ih].min()) for s in ph.steps]
    aims = ph.aims()
    assert aims["offset_min"] == ph.curves["induction_pair_offset_min"][-1]
    assert not aims["induction_head_at_every_offset"]  # 6 steps of training make no induction head
    files = save_phase(ph, short_run.out_dir / "phase")
    assert {p.name for p in files} == {
        "phase.json",
        "phase.csv",
        "phase.png",
        "phase_heatmaps.png",
        "phase_offsets.png",
        "report.html",
    }
    page = (short_run.out_dir / "phase" / "report.html").read_text()
    assert "Phase change during training" in page and "data:image/png;base64," in page
    assert "Induction against copy distance" in page and "fresh 256-sequence sample" in page
    doc = json.loads((short_run.out_dir / "phase" / "phase.json").read_text())
    assert doc["offsets"]["distances"][0] == 3 and "induction_head_at_every_offset" in doc["aims"]
    assert all(p.stat().st_size > 0 for p in files)


# --- refusing bad input, losing nothing -----------------------------------------------------------
def test_bad_settings_raise_before_anything_is_written(tmp_path):
    out = tmp_path / "never"
    for kw, msg in (
        (dict(steps=0), "--steps must be at least 1"),
        (dict(steps=10, every=20), "larger than the run"),
        (dict(every=0), "--every must be at least 1"),
        (dict(d_model=30, n_heads=4), "multiple"),
    ):
        with pytest.raises(BadInput, match=msg):
            train_toy(out, **kw)
    assert not out.exists()


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(vocab=8), "vocab (--vocab) must be at least 9 (got 8)"),
        (dict(threads=0), "threads (--threads) must be at least 1 (got 0)"),
        (dict(seed=-1), "seed (--seed) must be from 0 to"),
        (dict(steps=10.5), "steps must be a whole number, got 10.5"),
        (dict(stepz=3), "unknown toy setting(s): stepz"),
    ],
)
def test_api_bad_settings_are_bad_input_before_anything_is_written(tmp_path, kw, message):
    out = tmp_path / "never"
    with pytest.raises(BadInput) as err:
        train_toy(out, **{"steps": 10, "every": 5, **kw})
    assert message in str(err.value) and err.value.hint
    assert not out.exists()
    if "stepz" in kw:
        assert "steps" in err.value.hint and "eval_seed" in err.value.hint  # the valid names
    if "vocab" in kw:
        assert "--vocab 9" in err.value.hint


def test_the_smallest_vocabulary_allowed_makes_checkpoints_the_scan_can_score(tmp_path):
    run = train_toy(tmp_path / "v9", steps=1, every=1, batch=2, log_every=1, eval_batch=2, vocab=9)
    model = headscope.load_model(str(run.checkpoint_dirs[-1]), device="cpu")
    res = headscope.scan_induction(model, seq_len=8, batch=2, ablate=False, sample=False)
    assert res.scores["copy_suppression"].shape == (2, 4)  # vocab 8 failed here: a top-11 over 10 logits


def test_analyse_run_refuses_zero_threads(short_run):
    with pytest.raises(BadInput, match="at least 1"):
        analyse_run(short_run.out_dir, threads=0)


def test_sink_role_is_skipped_with_a_note_on_text_the_toy_tokenizer_cannot_read(short_run):
    model = headscope.load_model(str(short_run.checkpoint_dirs[-1]), device="cpu")
    a = headscope.analyze_heads(model, seq_len=8, batch=2, progress=False)
    assert a.natural_sinks is None and "attention_sink" not in a.role_names()
    assert any("attention-sink role skipped" in n and "'<unk>'" in n for n in a.notes)


def test_a_directory_with_other_files_is_refused_even_with_overwrite(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(OutputExists, match="not a train-toy run"):
            train_toy(out, overwrite=overwrite, **SMALL)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "precious"


def toy(*args):
    return runner.invoke(app, ["train-toy", *map(str, args)])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "0"], "--steps must be at least 1"),
        (["--steps", "50", "--every", "100"], "larger than the run"),
        (["--every", "0"], "--every must be at least 1"),
        (["--n-ctx", "12"], "positional shortcut"),
        (["--layers", "1"], "--layers must be at least 2"),
        (["--vocab", "8"], "vocab (--vocab) must be at least 9"),
        (["--analyse-only", "--no-analyse"], "contradict each other"),  # was: analysed, --no-analyse ignored
        (["--analyse-only", "--steps", "10", "--n-ctx", "40"], "so --steps, --n-ctx would be ignored"),
        (["--n-ctx", "4"], "leaves no copy distance at all"),  # was: "copy distances 3..1"
    ],
)
def test_cli_bad_options_exit_2_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    r = toy("--out", out, *args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "hint:" in r.output
    assert not out.exists()


def test_cli_refuses_to_overwrite_another_run_and_loses_nothing(tmp_path, short_run):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(short_run.out_dir, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    r = toy("--out", out, "--steps", 4, "--every", 2)
    assert r.exit_code == 4, r.output
    assert "already holds a train-toy run" in r.output and "--overwrite" in r.output
    assert "Training a" not in r.output  # refused before it said it was training
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_cli_trains_sweeps_and_draws_end_to_end(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)  # an earlier run's leftovers are replaced with --overwrite
    (out / "run.json").write_text(json.dumps({"kind": "headscope-toy-run", "status": "interrupted"}))
    (out / "checkpoints" / "step999").mkdir()
    r = toy("--out", out, "--steps", 4, "--every", 2, "--batch", 4, "--seed", 2, "--overwrite", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["run"]["status"] == "done" and doc["run"]["config"]["seed"] == 2
    assert doc["phase"]["steps"] == [0, 2, 4]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step0", "step2", "step4"]
    assert {"phase.json", "phase.csv", "phase.png", "phase_heatmaps.png"} <= {p.name for p in (out / "phase").iterdir()}
    assert (out / "sweep" / "sweep.png").is_file()
    # the checkpoints are ordinary sweep input too
    r2 = runner.invoke(
        app,
        [
            "sweep",
            "-m",
            str(out / "checkpoints" / "step4"),
            "--seq-len",
            "8",
            "--batch",
            "2",
            "--out",
            str(tmp_path / "sw"),
        ],
    )
    assert r2.exit_code == 0, r2.output


def test_tokenizer_round_trips_its_words():
    tok = build_tokenizer(8)
    ids = tok("t3 t7 t0", add_special_tokens=False)["input_ids"]
    assert ids == [3, 7, 0] and tok.decode(ids) == "t3 t7 t0"
    assert tok("t3 t9")["input_ids"] == [8, 3, 9]  # unknown word -> <unk> (id 9 = vocab + 1)
    assert ToyConfig().recipe.bos_id == 64


def test_cli_analyse_only_works_on_a_moved_run_and_refuses_a_directory_without_one(tmp_path, short_run):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(short_run.out_dir, moved)  # checkpoint paths in run.json are relative to the run
    r = toy("--out", moved, "--analyse-only", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["phase"]["steps"] == [0, 3, 6]
    r = toy("--out", tmp_path / "empty", "--analyse-only")
    assert r.exit_code == 2 and "holds no train-toy run" in r.output


def test_save_phase_never_writes_among_the_users_files(short_run, tmp_path):
    """save_phase wrote phase.csv and report.html over a user's own files of those names."""
    from headscope.errors import OutputExists

    ph = analyse_run(short_run.out_dir, progress=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("MY OWN REPORT")
    (mine / "notes.txt").write_text("notes")
    with pytest.raises(OutputExists):
        save_phase(ph, mine)
    assert (mine / "report.html").read_text() == "MY OWN REPORT" and sorted(p.name for p in mine.iterdir()) == [
        "notes.txt",
        "report.html",
    ]
    first = save_phase(ph, tmp_path / "phase")
    again = save_phase(ph, tmp_path / "phase")  # its own earlier analysis is replaced
    assert [p.name for p in again] == [p.name for p in first] and (tmp_path / "phase" / "phase.json").is_file()
