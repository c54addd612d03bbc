"""Every row of docs/failure-modes.md: what a hostile or careless user tries, and what must happen.

Disks that refuse are real: a small tmpfs mounted by the test (root only; skipped with the reason
otherwise), made full by a filler file or remounted read-only. Interrupts are real: SIGINT sent to
a ``python -m headscope`` subprocess. Where a check must come *before the model loads*, the
loader is replaced by one that records the call, and the test asserts it was never called.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import headscope.models
from _disks import mounted_tmpfs, run_root, spy_on_loaders
from _signals import sigint_as_default
from headscope.cli import app
from headscope.errors import BadInput, ModelLoadError
from headscope.jsonsafe import strict
from headscope.models import loading
from headscope.pipeline.outputs import MANIFEST, ResultDir, output_lock

runner = CliRunner()
SMALL = ["--seq-len", "8", "--batch", "2", "--top", "2", "--no-ablate", "--device", "cpu"]
QK_SMALL = ["--head", "L1H0", "--no-figures", "--max-tokens", "16", "--device", "cpu"]
REPORT_SMALL = [*SMALL, "--no-qk"]


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def strict_json(path: Path):
    """Parse ``path`` refusing NaN/Infinity (Python's json accepts them by default)."""

    def refuse(token):
        raise ValueError(f"{path.name} holds {token}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) with a hash of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def leftovers(folder: Path) -> list[str]:
    """Staging folders, temporary files, locks and set-aside old sets a run may leave beside its --out."""
    return sorted(
        p.name for p in folder.iterdir() if any(m in p.name for m in (".partial", ".lock", ".old-", ".probe-"))
    )


def old_set(out: Path, command: str, names=("scores.json", "ablation.png")) -> dict[str, str]:
    """An earlier result set in ``out`` written through the output layer; returns its snapshot."""
    with ResultDir.open(out, command=command, overwrite=True) as rd:
        for n in names:
            rd.write_text(n, json.dumps({"earlier": n}))
        rd.commit()
    return snapshot(out)


@pytest.fixture
def no_load(monkeypatch):
    """Replace every model loader by one that records the call and stops: ``calls`` must stay empty."""
    return spy_on_loaders(monkeypatch, "the input")


_run_root = run_root


@pytest.fixture
def tmpfs(tmp_path):
    """A 200 KB tmpfs at ``tmp_path/fs`` (needs root: skipped with the reason otherwise); always unmounted."""
    with mounted_tmpfs(tmp_path / "fs", "200k") as d:
        yield d


def fill(fs: Path) -> Path:
    """Fill ``fs`` to the last byte; returns the filler (delete it to free the disk)."""
    filler = fs / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (4096, 1):  # pages, then the last bytes
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return filler


def remount(fs: Path, options: str) -> None:
    r = _run_root("mount", "-o", f"remount,{options}", str(fs))
    assert r.returncode == 0, r.stderr


COMMANDS = {  # command -> (args before --out, what --out is)
    "induction": lambda m: ["induction", "--model", m, *SMALL],
    "qk": lambda m: ["qk", "--model", m, *QK_SMALL],
    "report": lambda m: ["report", "--model", m, *REPORT_SMALL],
    "sweep": lambda m: ["sweep", "--model", m, "--seq-len", "8", "--batch", "2", "--device", "cpu"],
}


def out_for(command: str, folder: Path) -> Path:
    return folder / ("page.html" if command == "report" else "out")


# --- 1. where results go -----------------------------------------------------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
def test_out_on_a_read_only_filesystem_is_exit_5_before_the_model_loads(command, tmpfs, tiny_gpt2_dir, no_load):
    out = out_for(command, tmpfs)
    before = old_set(out, command) if command != "report" else {}
    if command == "report":
        out.write_text("<html>earlier page</html>")
    kept = snapshot(tmpfs)
    remount(tmpfs, "ro")
    r = cli(*COMMANDS[command](str(tiny_gpt2_dir)), "--out", out, "--overwrite")
    assert r.exit_code == 5, r.output
    assert "read-only" in r.output and "Traceback" not in r.output
    assert no_load == []
    assert snapshot(tmpfs) == kept
    if before:
        assert snapshot(out) == before


@pytest.mark.parametrize("command", ["induction", "qk"])
def test_full_disk_keeps_the_earlier_set_and_the_rerun_works_without_stale_files(command, tmpfs, tiny_gpt2_dir):
    out = tmpfs / "out"
    earlier = old_set(out, command)  # holds ablation.png, which a --no-ablate / qk run does not write
    filler = fill(tmpfs)
    r = cli(*COMMANDS[command](str(tiny_gpt2_dir)), "--out", out, "--overwrite")
    assert r.exit_code == 5, r.output
    assert "the disk is full" in r.output and "nothing was changed" in r.output and "Traceback" not in r.output
    assert snapshot(out) == earlier and leftovers(tmpfs) == []

    filler.unlink()
    remount(tmpfs, "size=20m")
    r = cli(*COMMANDS[command](str(tiny_gpt2_dir)), "--out", out, "--overwrite")
    assert r.exit_code == 0, r.output
    names = {p.name for p in out.iterdir()}
    assert "ablation.png" not in names, "--overwrite left a stale file of the earlier run"
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["files"]) == sorted(n for n in names if n != MANIFEST)
    for p in out.rglob("*.json"):
        strict_json(p)
    assert leftovers(tmpfs) == []


def test_full_disk_while_writing_the_report_leaves_no_truncated_page_and_the_rerun_works(tmpfs, tiny_gpt2_dir):
    page = tmpfs / "report.html"  # the page (circuitsvis inlined) is larger than the 200 KB disk
    r = cli(*COMMANDS["report"](str(tiny_gpt2_dir)), "--out", page)
    assert r.exit_code == 5, r.output
    assert "the disk is full" in r.output and "Traceback" not in r.output
    assert sorted(p.name for p in tmpfs.iterdir()) == []  # no report.html, no partial file, no lock
    remount(tmpfs, "size=20m")
    r = cli(*COMMANDS["report"](str(tiny_gpt2_dir)), "--out", page)
    assert r.exit_code == 0, r.output
    assert page.read_text().rstrip().endswith("</html>")
    assert oct(page.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("command", list(COMMANDS))
def test_out_under_a_file_is_exit_5_in_every_command(command, tmp_path, tiny_gpt2_dir, no_load):
    (tmp_path / "afile").write_text("not a folder")
    r = cli(*COMMANDS[command](str(tiny_gpt2_dir)), "--out", out_for(command, tmp_path / "afile"))
    assert r.exit_code == 5, r.output
    assert "is a file" in r.output and "Traceback" not in r.output
    assert no_load == []


@pytest.mark.parametrize("command", ["induction", "qk", "sweep"])
def test_out_that_is_a_file_is_exit_5(command, tmp_path, tiny_gpt2_dir, no_load):
    (tmp_path / "out").write_text("not a folder")
    r = cli(*COMMANDS[command](str(tiny_gpt2_dir)), "--out", tmp_path / "out")
    assert r.exit_code == 5, r.output
    assert no_load == [] and (tmp_path / "out").read_text() == "not a folder"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_second_run_into_a_locked_out_fails_at_once_with_exit_4(command, tmp_path, tiny_gpt2_dir, no_load):
    out = out_for(command, tmp_path)
    with output_lock(out):  # what a first run holds while it scans and writes
        t0 = time.perf_counter()
        r = cli(*COMMANDS[command](str(tiny_gpt2_dir)), "--out", out)
        took = time.perf_counter() - t0
    assert r.exit_code == 4, r.output
    assert "another headscope run is writing" in r.output
    assert no_load == [] and took < 30  # at once: no model, no waiting on the lock
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("command", ["induction", "qk", "report"])
def test_a_model_that_fails_to_load_leaves_no_empty_output_folders(command, tmp_path):
    out = out_for(command, tmp_path / "new" / "deeper")
    r = cli(*COMMANDS[command]("~nosuchuser/x"), "--out", out)
    assert r.exit_code == 2, r.output
    assert "no user 'nosuchuser'" in r.output and "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == []


def test_sweep_files_have_normal_permissions_and_strict_json(tmp_path, tiny_gpt2_dir):
    out = tmp_path / "sweep"
    old = os.umask(0o022)
    try:
        r = cli(*COMMANDS["sweep"](str(tiny_gpt2_dir)), "--out", out)
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"sweep.json", "sweep.csv", "sweep.png"}
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {"0o644"}
    for p in out.rglob("*.json"):
        strict_json(p)
    assert leftovers(tmp_path) == [] and leftovers(out) == [] and leftovers(out / "entries") == []


# --- Ctrl-C ------------------------------------------------------------------------------------

WRITE_SLOWLY = textwrap.dedent("""
    import sys, time
    from headscope.pipeline import outputs
    write = outputs.ResultDir.write
    def slow(self, name, writer):
        print(f"WRITING {name}", file=sys.stderr, flush=True)
        time.sleep(0.5)
        return write(self, name, writer)
    outputs.ResultDir.write = slow
    from headscope.cli import main
    sys.argv = ["headscope", *sys.argv[1:]]
    main()
""")


def _interrupt(cmd: list[str], when: str, delay: float) -> tuple[int, str]:
    """Run ``cmd``, send SIGINT ``delay`` s after a stderr line containing ``when``; (exit code, stderr)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    p = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        preexec_fn=sigint_as_default,
    )
    seen = []
    try:
        for line in p.stderr:
            seen.append(line)
            if when in line:
                time.sleep(delay)
                p.send_signal(signal.SIGINT)
                break
        _, rest = p.communicate(timeout=120)
        seen.append(rest)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, "".join(seen)


@pytest.mark.parametrize("moment", ["while it scans", "while files are written"])
def test_ctrl_c_exits_130_and_keeps_the_earlier_results(moment, tmp_path, tiny_gpt2_dir):
    out = tmp_path / "out"
    earlier = old_set(out, "induction")
    if moment == "while it scans":  # many small chunks: the scan takes far longer than the delay
        cmd = [
            sys.executable,
            "-m",
            "headscope",
            "induction",
            "--model",
            str(tiny_gpt2_dir),
            "--seq-len",
            "40",
            "--batch",
            "4000",
            "--max-memory",
            "0.02",
            "--no-ablate",
            "--device",
            "cpu",
        ]
        when, delay = "Loaded", 1.0
    else:
        cmd = [sys.executable, "-c", WRITE_SLOWLY, "induction", "--model", str(tiny_gpt2_dir), *SMALL]
        when, delay = "WRITING scores.csv", 0.1
    code, err = _interrupt([*cmd, "--out", str(out), "--overwrite"], when, delay)
    assert code == 130, err
    assert "interrupted" in err and "Traceback" not in err and "Wrote" not in err
    assert snapshot(out) == earlier
    assert leftovers(tmp_path) == []


# --- 2. the model cache ------------------------------------------------------------------------


@pytest.fixture
def fake_gguf(monkeypatch, tiny_llama_dir, tmp_path):
    """A .gguf path that transformers 'dequantizes' into the tiny Llama (the real dequantizer is tested elsewhere)."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir))
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", staticmethod(lambda *a, **k: model))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", staticmethod(lambda *a, **k: tok))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    return gguf


def test_full_disk_during_gguf_conversion_is_exit_3_and_keeps_nothing(tmpfs, fake_gguf, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_CACHE", str(tmpfs / "cache"))
    r = cli("fetch", fake_gguf)  # the tiny Llama's safetensors (~25 MB) cannot fit in 200 KB
    assert r.exit_code == 3, r.output
    assert "could not write the converted model" in r.output and "nothing was kept" in r.output
    assert "Traceback" not in r.output and "HEADSCOPE_CACHE" in r.output
    models = tmpfs / "cache" / "models"
    assert not models.exists() or list(models.iterdir()) == []


def test_a_truncated_cached_model_is_not_ready_and_is_rebuilt(tmp_path, fake_gguf, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_CACHE", str(tmp_path / "cache"))
    assert cli("fetch", fake_gguf).exit_code == 0
    (entry,) = loading.list_cached()
    weights = Path(entry["path"]) / "model.safetensors"
    assert loading.safetensors_complete(weights)
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size // 2)
    assert not loading.safetensors_complete(weights)
    assert loading.list_cached() == []  # `headscope models` does not list it as cached
    r = cli("fetch", fake_gguf)
    assert r.exit_code == 0, r.output
    assert "Converting" in r.output and "ready" in r.output
    assert weights.stat().st_size == size and loading.safetensors_complete(weights)


def test_a_truncated_model_directory_is_a_load_error_not_a_traceback(tmp_path, tiny_gpt2_dir):
    import shutil

    d = tmp_path / "model"
    shutil.copytree(tiny_gpt2_dir, d)
    with open(d / "model.safetensors", "r+b") as f:
        f.truncate((d / "model.safetensors").stat().st_size // 2)
    with pytest.raises(ModelLoadError, match="could not load the weights"):
        loading.load_model(str(d), device="cpu")


# --- 3. odd values -----------------------------------------------------------------------------


def test_a_home_directory_of_an_unknown_user_is_bad_input():
    with pytest.raises(BadInput, match="no user 'nosuchuser'"):
        loading.resolve_source("~nosuchuser/model")


ODD = [  # (command args, what the message names); every one exit 2 before the model loads
    (["induction", "--max-memory", "nan"], "not a finite number"),
    (["induction", "--max-memory", "inf"], "not a finite number"),
    (["induction", "--max-memory", "0"], "must be more than 0"),
    (["induction", "--max-memory", "-1"], "must be more than 0"),
    (["induction", "--threshold", "induction=nan"], "not a finite number"),
    (["induction", "--threshold", "copying=-inf"], "not a finite number"),
    (["induction", "--seq-len", "nan"], "--seq-len"),
    (["induction", "--top", "0"], "--top must be at least 1"),
    (["induction", "--device-map", "bogus"], "auto, balanced, balanced_low_0, sequential"),
    (["qk", "--max-memory", "nan"], "not a finite number"),
    (["qk", "--max-memory", "0"], "must be more than 0"),
    (["qk", "--max-tokens", "1"], "--max-tokens must be at least 2"),
    (["qk", "--query", "inf"], "--query"),
    (["qk", "--head", "L1X0"], "malformed head"),
    (["report", "--max-memory", "-inf"], "not a finite number"),
    (["report", "--threshold", "previous_token=NaN"], "not a finite number"),
    (["report", "--qk-top", "0"], "--qk-top must be at least 1"),
    (["sweep", "--max-memory", "nan"], "not a finite number"),
    (["sweep", "--max-memory", "-2"], "must be more than 0"),
    (["sweep", "--top", "0"], "--top must be at least 1"),
]


@pytest.mark.parametrize("args,names", ODD, ids=[" ".join(a) for a, _ in ODD])
def test_odd_numbers_are_refused_before_the_model_loads(args, names, tmp_path, tiny_gpt2_dir, no_load):
    out = out_for(args[0], tmp_path)
    r = cli(args[0], "--model", tiny_gpt2_dir, *args[1:], "--out", out)
    assert r.exit_code == 2, r.output
    assert names in " ".join(r.output.replace("│", " ").split()), r.output
    assert no_load == [] and list(tmp_path.iterdir()) == []


def test_strict_json_turns_every_non_finite_number_into_null():
    doc = strict(
        {
            "a": float("nan"),
            "b": [np.float32("inf"), 1.5, np.int64(3)],
            "c": np.array([np.nan, 2.0]),
            "d": (-math.inf, True),
        }
    )
    assert doc == {"a": None, "b": [None, 1.5, 3], "c": [None, 2.0], "d": [None, True]}


def test_results_with_real_nan_values_write_strict_json(tiny_gpt2):
    from headscope.qk import analyze_qk
    from headscope.scan import scan_induction

    res = scan_induction(tiny_gpt2, seq_len=6, batch=2, top_k=2, ablate=False, sample=False, progress=False)
    res.scores["induction"][0, 0] = np.nan  # e.g. a float16 model that overflows
    res.loss_later_repeats = float("inf")
    doc = json.loads(res.to_json(), parse_constant=pytest.fail)
    assert doc["scores"]["induction"][0][0] is None and doc["loss"]["later_repeats"] is None

    a = analyze_qk(tiny_gpt2, ["a b c a b c"], ["L1H0"], scan=res, max_tokens=16)
    a.decompositions[0].score = float("nan")
    a.composition.baseline = float("inf")
    doc = json.loads(a.to_json(), parse_constant=pytest.fail)
    assert doc["decompositions"][0]["score"] is None
    # the live scores hold real NaN: the causal mask's cells
    assert doc["live"]["sequences"][0]["heads"]["L1H0"]["scores"][0][1] is None


# --- 4. checks before the first forward pass -----------------------------------------------------


@pytest.fixture(scope="module")
def one_mb_file(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("long") / "long.txt"
    f.write_text(("The cat sat on the mat. " * 44_000)[:1_000_000])
    return f


@pytest.mark.parametrize("command", ["induction", "qk", "logits", "report"])
def test_a_one_megabyte_file_is_cut_to_the_window_and_said(command, one_mb_file, tmp_path, tiny_gpt2_dir):
    args = COMMANDS[command](str(tiny_gpt2_dir)) if command != "logits" else ["logits", "--model", str(tiny_gpt2_dir)]
    if command == "logits":
        args += ["--seq-len", "6", "--batch", "2", "--no-ablate", "--no-figures", "--max-tokens", "16"]
    r = cli(*args, "--file", one_mb_file, "--out", out_for(command, tmp_path))
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())
    # every command names the text by its file, not by a number the user never gave it
    assert "long.txt cut from" in said and "the first tokens were kept" in said
    assert "text 1" not in said


def test_top_beyond_the_heads_is_cut_and_said_and_the_control_is_never_empty(tiny_gpt2):
    from headscope.scan import scan_induction

    res = scan_induction(tiny_gpt2, seq_len=6, batch=2, top_k=50, ablate=True, sample=False, progress=False)
    n = tiny_gpt2.n_layers * tiny_gpt2.n_heads
    assert res.settings["top_k"] == n - 1
    assert res.notes and f"--top 50 is more than this model's {n} heads" in res.notes[0]
    control = [e for e in res.ablation if e["kind"] == "control"]
    assert control and all(len(e["heads"]) == 1 for e in control)  # each draw: the one head left
    assert {tuple(h) for h in control[0]["heads"]}.isdisjoint(
        {tuple(h) for e in res.ablation if e["kind"] == "all_top" for h in e["heads"]}
    )
    plain = scan_induction(tiny_gpt2, seq_len=6, batch=2, top_k=50, ablate=False, sample=False, progress=False)
    assert plain.settings["top_k"] == n and plain.notes


def test_a_model_of_one_head_runs_without_the_causal_check_and_says_why_with_it(tmp_path, gpt2_tokenizer_dir):
    """The random control is drawn from the heads outside the top set; a 1 x 1 model has none (was: a
    ValueError traceback from min() of an empty sequence, deep in the ablation)."""
    import torch
    from conftest import save_tiny
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, n_head=1, n_embd=32, n_positions=64, vocab_size=50257)
    one = save_tiny(GPT2LMHeadModel(cfg), gpt2_tokenizer_dir, tmp_path / "one-head")
    checked = ["--seq-len", "8", "--batch", "2", "--top", "2", "--device", "cpu"]
    r = cli("induction", "--model", one, *checked, "--out", tmp_path / "a")
    assert r.exit_code == 2, r.output
    said = " ".join(r.output.split())
    assert "this model has one attention head" in said and "--no-ablate" in said
    assert not (tmp_path / "a").exists()
    r = cli("induction", "--model", one, *checked, "--no-ablate", "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output


# --- 5. memory ---------------------------------------------------------------------------------


def test_qk_memory_estimate_covers_the_tensors_it_keeps(tiny_llama):
    from headscope.folded_weights import head_weights
    from headscope.hooks import act_name
    from headscope.models.inputs import encode
    from headscope.qk import qk_scores
    from headscope.qk.analysis import qk_memory_bytes
    from headscope.qk.decompose import capture_residual, residual_components

    heads = [(2, 1), (1, 3)]
    seq = encode(tiny_llama, "one two three four five six seven eight nine ten " * 12, max_tokens=100)
    T = len(seq)
    live = qk_scores(tiny_llama, heads, [seq])
    acts = capture_residual(tiny_llama, seq, 2, score_layers={1, 2})
    _, _, comps = residual_components(acts, head_weights(tiny_llama), 2)
    kept = (
        live.scores[0].nbytes + live.patterns[0].nbytes + sum(t.numel() * 8 for t in acts.values()) + comps.numel() * 8
    )
    logits = T * tiny_llama.cfg.d_vocab * 4
    estimate = qk_memory_bytes(tiny_llama, [T], heads)
    assert kept + logits <= estimate <= 4 * (kept + logits)
    # scores and patterns are [T, T]: a text twice as long needs more than twice as much
    assert qk_memory_bytes(tiny_llama, [2 * T], heads) > 2 * estimate
    assert act_name("pattern", 2) in acts


def test_qk_beyond_its_memory_budget_is_refused_before_any_forward_pass(tmp_path, tiny_llama_dir):
    r = cli(
        "qk",
        "--model",
        tiny_llama_dir,
        "--text",
        "a b c d " * 100,
        "--max-tokens",
        "400",
        "--max-memory",
        "0.01",
        "--no-figures",
        "--device",
        "cpu",
        "--out",
        tmp_path / "out",
    )
    assert r.exit_code == 2, r.output
    said = " ".join(r.output.split())
    assert "would need about" in said and "more than the budget of 0.01 GiB" in said
    assert "lower --max-tokens (about" in said and "fits)" in said and "quick induction scan" not in said
    assert list(tmp_path.iterdir()) == []


# --- 6. small things ---------------------------------------------------------------------------


def test_every_figure_is_encoded_through_the_one_encoder_that_says_missing_glyphs_once():
    src = Path(headscope.__file__).parent
    drawers = [p.relative_to(src) for p in src.rglob("*.py") if "savefig(" in p.read_text()]
    assert drawers == [Path("render/_mpl.py")]


def test_a_token_the_font_lacks_warns_nowhere_outside_the_encoder():
    # was: `headscope induction -t "🙂🙂 héllo"` printed matplotlib's raw
    # "induction_figures.py:150: UserWarning: Glyph 128578 ... missing from font(s)" from tight_layout,
    # before the encoder's one note; every layout now goes through _mpl.tight_layout
    import warnings

    import numpy as np

    from headscope.render._mpl import encode_png
    from headscope.render.induction_figures import attention_grid
    from headscope.results.attention import AttentionSample

    src = Path(headscope.__file__).parent
    layouts = [p.relative_to(src) for p in src.rglob("*.py") if ".tight_layout(" in p.read_text()]
    assert layouts == [Path("render/_mpl.py")]
    tokens = ["<bos>", "🙂", "🙂", " h"]
    sample = AttentionSample("🙂 text", tokens, [(0, 0)], np.tril(np.ones((1, 4, 4))) / 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = attention_grid(sample)
    assert [str(w.message) for w in caught if "missing from font" in str(w.message)] == []
    assert encode_png(fig)[:4] == b"\x89PNG"


@pytest.mark.parametrize("command", ["induction", "qk", "logits", "report", "heads"])
def test_a_file_that_is_a_directory_is_called_a_directory_before_the_model_loads(command, tmp_path, no_load):
    # was: "--file DIR does not exist or is not a file", hint "check the path": the folder exists
    folder = tmp_path / "texts"
    folder.mkdir()
    out = tmp_path / ("page.html" if command == "report" else "out")
    r = cli(command, "--model", "gpt2", "--file", folder, "--out", out)
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and f"--file {folder} is a directory, not a file" in said, said
    assert "repeat --file" in said and "Traceback" not in said
    assert no_load == [] and not out.exists()


@pytest.mark.parametrize("out", [".", ".."])
@pytest.mark.parametrize("command", [*COMMANDS, "train-toy"])
def test_out_dot_is_refused_with_the_folders_name_not_blamed_on_the_users_files(
    command, out, tmp_path, tiny_gpt2_dir, no_load, monkeypatch
):
    # was: in an empty folder, `--out .` made its lock `..lock` inside the folder, then refused it as a file
    # "headscope did not write" (exit 4): "--out . already holds files headscope did not write (..lock)"
    here = tmp_path / "work"
    here.mkdir()
    monkeypatch.chdir(here)
    args = (
        ["train-toy", "--steps", "2", "--every", "1"]
        if command == "train-toy"
        else COMMANDS[command](str(tiny_gpt2_dir))
    )
    r = cli(*args, "--out", out)
    said = " ".join(r.output.split())
    assert r.exit_code == 5, said
    assert f"--out {out} names a folder by '{out}' instead of its name" in said, said
    assert f"--out {os.path.abspath(out)}" in said and "..lock" not in said and "Traceback" not in said
    assert no_load == [] and list(here.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_top_beyond_the_heads_is_said_before_the_work_not_only_at_the_end(tiny_gpt2, monkeypatch, capsys):
    """``--top 1000`` ran a 14-minute causal check over every head and said it had cut --top only at the end."""
    import headscope.scan.induction_scan as scan_module

    def no_work(*a, **k):
        raise KeyboardInterrupt  # stands for a user who stops the long run

    monkeypatch.setattr(scan_module, "score_pass", no_work)
    with pytest.raises(KeyboardInterrupt):
        scan_module.scan_induction(tiny_gpt2, seq_len=6, batch=2, top_k=50, sample=False, progress=None)
    assert "--top 50 is more than this model's 8 heads: using the top 7" in capsys.readouterr().err
