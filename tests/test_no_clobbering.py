"""Issue 23: no run clobbers another, nothing that is not ours is replaced, no code from a model runs.

Every test here runs under the real condition its docs/failure-modes.md row names: a real second
``python -m headscope`` process, a real tmpfs made full or read-only (root only; skipped with the
reason otherwise), a real FIFO and socket, real SIGINT/SIGTERM/SIGKILL, a real pseudo-terminal.
Toy runs are a few steps long so the file stays fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import headscope.models
from _disks import mounted_tmpfs, run_root, spy_on_loaders
from _signals import sigint_as_default
from headscope.cli import app
from headscope.errors import BadInput, ModelLoadError
from headscope.pipeline.outputs import ResultDir, clean_stale, output_lock

runner = CliRunner()
SMALL = ["--seq-len", "8", "--batch", "2", "--top", "2", "--no-ablate", "--device", "cpu"]
TOY = ["--steps", "4", "--every", "2", "--no-analyse"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1"}


def cli(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def leftovers(folder: Path) -> list[str]:
    return sorted(
        p.name for p in folder.iterdir() if any(m in p.name for m in (".partial", ".lock", ".old-", ".probe-"))
    )


@pytest.fixture
def no_load(monkeypatch):
    return spy_on_loaders(monkeypatch, "--out")


_root = run_root


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MB tmpfs at ``tmp_path/fs`` (root only; skipped with the reason otherwise); always unmounted."""
    with mounted_tmpfs(tmp_path / "fs", "1m") as d:
        yield d


def remount(fs: Path, options: str) -> None:
    r = _root("mount", "-o", f"remount,{options}", str(fs))
    assert r.returncode == 0, r.stderr


def earlier_toy_run(out: Path) -> dict[str, str]:
    """A finished two-checkpoint toy run in ``out`` (trained here, under umask 022); returns its snapshot."""
    from headscope.toy.train import train_toy

    old = os.umask(0o022)
    try:
        train_toy(out, steps=2, every=2)
    finally:
        os.umask(old)
    return snapshot(out)


def toy_process(out: Path, *extra: str) -> subprocess.Popen:
    """A real ``headscope train-toy`` long enough to be caught mid-training (lines at every 10 steps)."""
    cmd = [sys.executable, "-m", "headscope", "train-toy", "--out", str(out), "--steps", "5000", "--every", "10"]
    return subprocess.Popen(
        [*cmd, "--no-analyse", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=ENV,
        preexec_fn=sigint_as_default,
    )


def wait_for(p: subprocess.Popen, text: str, seen: list[str]) -> None:
    assert p.stderr is not None
    for line in p.stderr:
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"the process ended before saying {text!r}: {''.join(seen)}")


# --- 1, 5: train-toy holds the lock; an interrupted or killed run leaves the earlier one -----------


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_train_toy_holds_the_lock_and_an_interrupted_overwrite_keeps_the_earlier_run(sig, code, tmp_path):
    out = tmp_path / "run"
    earlier = earlier_toy_run(out)
    p = toy_process(out, "--overwrite", "--seed", "1")
    seen: list[str] = []
    try:
        wait_for(p, "step     10", seen)  # training, checkpoints written (into its staging folder)
        assert snapshot(out) == earlier  # the earlier run is still whole while the new one trains
        second = cli("train-toy", "--out", out, "--overwrite", *TOY)  # a second run into the same --out
        assert second.exit_code == 4, second.output
        assert "another headscope run is writing" in flat(second.output)
        p.send_signal(sig)
        _, rest = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    err = "".join(seen) + rest
    assert p.returncode == code, err
    assert "interrupted" in err and "Traceback" not in err
    assert snapshot(out) == earlier  # byte for byte: seed 0, two checkpoints
    assert json.loads((out / "run.json").read_text())["config"]["seed"] == 0
    assert leftovers(tmp_path) == []


def test_a_killed_run_leaves_leftovers_that_the_next_run_removes(tmp_path):
    out = tmp_path / "run"
    p = toy_process(out)
    seen: list[str] = []
    try:
        wait_for(p, "step     10", seen)
        p.send_signal(signal.SIGKILL)  # no clean-up can run
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    left = leftovers(tmp_path)
    assert any(".partial-" in n for n in left) and f".{out.name}.lock" in left, left
    assert not out.exists()
    r = cli("train-toy", "--out", out, *TOY)
    assert r.exit_code == 0, r.output
    assert leftovers(tmp_path) == []
    assert json.loads((out / "run.json").read_text())["status"] == "done"


def test_a_live_owners_staging_folder_is_never_removed(tmp_path):
    out = tmp_path / "out"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        mine = tmp_path / f".out.partial-{live.pid}-x"
        gone = tmp_path / f".out.partial-{dead.pid}-y"
        gone_file = tmp_path / f".out.{dead.pid}-z.partial"
        for d in (mine, gone):
            d.mkdir()
            (d / "scores.json").write_text("{}")
        gone_file.write_text("half")
        with ResultDir.open(out, command="demo") as rd:  # takes the lock, then cleans
            rd.write_text("a.json", "{}")
            rd.commit()
        assert mine.is_dir() and not gone.exists() and not gone_file.exists()
    finally:
        live.kill()
        live.wait()


def test_an_old_set_left_between_the_two_renames_is_put_back(tmp_path):
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    aside = tmp_path / f".out.old-{dead.pid}"
    aside.mkdir()
    (aside / "scores.json").write_text('{"earlier": 1}')
    with output_lock(out):
        pass  # taking the lock cleans: the set aside comes back rather than being deleted
    assert (out / "scores.json").read_text() == '{"earlier": 1}' and not aside.exists()
    assert clean_stale(out) == []


# --- 4, 8: full and read-only disks ----------------------------------------------------------------


def test_train_toy_on_a_full_disk_is_exit_5_and_keeps_the_earlier_run(tmpfs):
    out = tmpfs / "run"
    earlier = earlier_toy_run(out)  # two checkpoints of ~190 KB each: about 600 KB of the 1 MB left
    r = cli("train-toy", "--out", out, "--overwrite", "--steps", "4", "--every", "1", "--no-analyse")
    assert r.exit_code == 5, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "the disk is full" in lines[0], r.output
    assert "Traceback" not in r.output and "SafetensorError" not in r.output
    assert snapshot(out) == earlier
    assert sorted(p.name for p in tmpfs.iterdir()) == ["run"]  # no staging folder, no lock
    remount(tmpfs, "size=20m")
    r = cli("train-toy", "--out", out, "--overwrite", *TOY)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "run.json").read_text())["config"]["steps"] == 4


def test_train_toy_on_a_read_only_filesystem_is_exit_5(tmpfs):
    (tmpfs / "empty").mkdir()
    remount(tmpfs, "ro")
    r = cli("train-toy", "--out", tmpfs / "empty", *TOY)
    assert r.exit_code == 5, r.output
    assert "read-only" in r.output and "Traceback" not in r.output


def test_checkpoints_are_ordinary_files_under_umask_022(tmp_path):
    earlier_toy_run(tmp_path / "run")
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    dirs = [p for p in (tmp_path / "run").rglob("*") if p.is_dir()]
    assert any(p.name == "model.safetensors" for p in files)
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {"0o644"}
    assert {oct(p.stat().st_mode & 0o777) for p in dirs} == {"0o755"}


# --- 2: --out that is not a regular file or a result folder -----------------------------------------

COMMANDS = {
    "induction": lambda m: ["induction", "--model", m, *SMALL],
    "report": lambda m: ["report", "--model", m, *SMALL, "--no-qk"],
    "sweep": lambda m: ["sweep", "--model", m, "--seq-len", "8", "--batch", "2", "--device", "cpu"],
    "train-toy": lambda m: ["train-toy", *TOY],
}


def _special(kind: str, folder: Path) -> tuple[Path, object]:
    """Make a ``kind`` at ``folder/target``; returns (path, what to close afterwards)."""
    path = folder / "target"
    if kind == "fifo":
        os.mkfifo(path)
        return path, None
    if kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        return path, s
    if kind == "symlink":
        (folder / "elsewhere").mkdir()
        path.symlink_to(folder / "elsewhere")
        return path, None
    raise AssertionError(kind)


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kind", ["fifo", "socket", "symlink"])
def test_overwrite_never_replaces_a_fifo_socket_or_symlink(kind, command, tmp_path, tiny_gpt2_dir, no_load):
    path, closer = _special(kind, tmp_path)
    before = os.lstat(path)
    try:
        r = cli(*COMMANDS[command](str(tiny_gpt2_dir)), "--out", path, "--overwrite")
    finally:
        if closer is not None:
            closer.close()  # type: ignore[attr-defined]
    assert r.exit_code == 5, r.output
    what = {"fifo": "FIFO", "socket": "a socket", "symlink": "a symbolic link"}[kind]
    assert what in flat(r.output) and "Traceback" not in r.output
    after = os.lstat(path)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert no_load == [] and leftovers(tmp_path) == []


@pytest.mark.parametrize("own", ["notes.md", "mydata/a.txt", "figures/mine.png"])
def test_overwrite_refuses_a_result_folder_the_user_added_files_to(own, tmp_path, tiny_gpt2_dir):
    """``--overwrite`` replaces the whole folder: a file put beside (or among) the results after the run
    was deleted with them. Now it is refused, before the model loads, and every file stays as it was."""
    out = tmp_path / "out"
    args = ["induction", "--model", tiny_gpt2_dir, *SMALL, "--out", out]
    assert cli(*args).exit_code == 0
    (out / own).parent.mkdir(parents=True, exist_ok=True)
    (out / own).write_text("mine")
    before = snapshot(out)
    r = cli(*args, "--overwrite")
    assert r.exit_code == 4, r.output
    assert "files it did not write" in flat(r.output) and own in flat(r.output) and "Traceback" not in r.output
    assert snapshot(out) == before and leftovers(tmp_path) == []
    (out / own).unlink()
    assert cli(*args, "--overwrite").exit_code == 0  # its own files alone: replaced as before


@pytest.mark.parametrize("own", ['{"my": "own scores"}', "not json", "[1, 2]"])
def test_overwrite_never_deletes_a_users_file_that_has_a_results_name(own, tmp_path, tiny_gpt2_dir, no_load):
    """A folder with no manifest holding only names headscope writes counts as an earlier version's results:
    a user's own ``scores.json`` in it was deleted by ``--overwrite``. It is theirs unless it is headscope's JSON."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "scores.json").write_text(own)
    before = snapshot(out)
    args = ["induction", "--model", tiny_gpt2_dir, *SMALL, "--out", out]
    for extra in ((), ("--overwrite",)):
        r = cli(*args, *extra)
        assert r.exit_code == 4, r.output
        assert "did not write" in flat(r.output) and "Traceback" not in r.output
    assert snapshot(out) == before and no_load == []


def test_an_earlier_versions_result_set_without_a_manifest_is_still_replaced(tmp_path, tiny_gpt2_dir):
    out = tmp_path / "out"
    args = ["induction", "--model", tiny_gpt2_dir, *SMALL, "--out", out]
    assert cli(*args).exit_code == 0
    (out / ".headscope-results.json").unlink()  # as written before result sets had a manifest
    assert cli(*args).exit_code == 4
    r = cli(*args, "--overwrite")
    assert r.exit_code == 0, r.output
    assert (out / ".headscope-results.json").is_file()


def test_dev_null_stays_a_character_device(tiny_gpt2_dir, no_load):
    before = os.lstat("/dev/null")
    r = cli(*COMMANDS["report"](str(tiny_gpt2_dir)), "--out", "/dev/null", "--overwrite")
    assert r.exit_code == 5, r.output
    assert "is a character device" in flat(r.output)
    after = os.lstat("/dev/null")
    assert (after.st_mode, after.st_rdev) == (before.st_mode, before.st_rdev)


@pytest.mark.parametrize("command", ["induction", "train-toy"])
def test_out_proc_self_is_not_another_run(command, tiny_gpt2_dir, no_load):
    r = cli(*COMMANDS[command](str(tiny_gpt2_dir)), "--out", "/proc/self", "--overwrite")
    assert r.exit_code == 5, r.output
    assert "another headscope run" not in r.output and "symbolic link" in flat(r.output)


def test_train_toy_out_that_is_a_file_is_exit_5(tmp_path):
    (tmp_path / "f").write_text("mine")
    r = cli("train-toy", "--out", tmp_path / "f", *TOY)
    assert r.exit_code == 5, r.output
    assert "is a file" in r.output and (tmp_path / "f").read_text() == "mine"


# --- 3: no code from a model directory runs -------------------------------------------------------

EVIL = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


def evil_model(tiny_gpt2_dir: Path, folder: Path, where: str = "config.json") -> tuple[Path, Path]:
    """A copy of the tiny GPT-2 whose ``where`` names custom code that would write ``marker`` when imported."""
    import shutil

    d = folder / "evil-model"
    shutil.copytree(tiny_gpt2_dir, d)
    marker = folder / "code-ran"
    (d / "modeling_evil.py").write_text(EVIL.format(marker=str(marker)))
    (d / "configuration_evil.py").write_text(EVIL.format(marker=str(marker)))
    doc = json.loads((d / where).read_text()) if (d / where).exists() else {}
    doc["auto_map"] = (
        {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"}
        if where == "config.json"
        else {"AutoTokenizer": ["modeling_evil.EvilTokenizer", None]}
    )
    (d / where).write_text(json.dumps(doc))
    return d, marker


def test_a_model_directory_with_auto_map_is_refused_in_a_terminal_without_a_prompt(tiny_gpt2_dir, tmp_path):
    d, marker = evil_model(tiny_gpt2_dir, tmp_path)
    pid, fd = pty.fork()
    if pid == 0:  # the child: headscope with a real terminal on stdin/stdout/stderr
        os.execve(
            sys.executable,
            [sys.executable, "-m", "headscope", "induction", "--model", str(d), *SMALL, "--out", str(tmp_path / "o")],
            ENV,
        )
    out = b""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if b"[y/N]" in out:
                os.write(fd, b"y\n")  # what the user did: the test fails below if it ever gets here
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 3, text
    assert "[y/N]" not in text and "custom code" not in text.lower().replace("its own python code", "")
    assert "never runs code from a model" in flat(text)
    assert not marker.exists()


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_auto_map_is_refused_before_anything_is_loaded(where, tiny_gpt2_dir, tmp_path):
    d, marker = evil_model(tiny_gpt2_dir, tmp_path, where)
    with pytest.raises(ModelLoadError, match="never runs code from a model"):
        headscope.load_model(str(d), device="cpu")
    assert not marker.exists()


def test_every_loader_is_told_trust_remote_code_false(tiny_gpt2_dir, monkeypatch):
    import transformers
    from transformer_lens.model_bridge import TransformerBridge

    seen: dict[str, list] = {}

    def spy(name, original):
        def call(*args, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("headscope."):  # headscope's own calls (transformers' inner ones are its business)
                seen.setdefault(name, []).append(kwargs.get("trust_remote_code", "not passed"))
            return original(*args, **kwargs)

        return call

    for cls in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        monkeypatch.setattr(cls, "from_pretrained", spy(cls.__name__, cls.from_pretrained))
    monkeypatch.setattr(
        TransformerBridge, "boot_transformers", spy("boot_transformers", TransformerBridge.boot_transformers)
    )
    headscope.load_model(str(tiny_gpt2_dir), device="cpu")
    assert set(seen) == {"AutoConfig", "AutoTokenizer", "AutoModelForCausalLM", "boot_transformers"}
    assert {name: set(v) for name, v in seen.items()} == dict.fromkeys(seen, {False})


# --- 7: non-finite weights ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nan_model_dir(tmp_path_factory, tiny_gpt2_dir) -> Path:
    import shutil

    from safetensors.torch import load_file, save_file

    d = tmp_path_factory.mktemp("nan-model")
    shutil.rmtree(d)
    shutil.copytree(tiny_gpt2_dir, d)
    weights = load_file(d / "model.safetensors")
    weights["transformer.h.1.attn.c_attn.weight"][3, 5] = float("nan")
    save_file(weights, d / "model.safetensors", metadata={"format": "pt"})
    return d


@pytest.mark.parametrize(
    "args",
    [
        ["induction", *SMALL],
        ["heads", "--seq-len", "8", "--batch", "2", "--no-icl", "--device", "cpu"],
        ["qk", "--head", "L1H0", "--no-figures", "--max-tokens", "16", "--device", "cpu"],
        ["logits", "--seq-len", "8", "--batch", "2", "--device", "cpu"],
    ],
    ids=lambda a: a[0],
)
def test_nan_weights_are_refused_after_loading_naming_the_tensor(args, nan_model_dir, tmp_path):
    r = cli(args[0], "--model", nan_model_dir, *args[1:], "--out", tmp_path / "o")
    assert r.exit_code == 3, r.output
    assert "h.1.attn.c_attn.weight" in flat(r.output) and "not finite" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "o").exists()


# --- 11: pickled weights --------------------------------------------------------------------------


@pytest.fixture
def pickle_model_dir(tmp_path, tiny_gpt2_dir) -> Path:
    import shutil

    from safetensors.torch import load_file

    d = tmp_path / "bin-model"
    shutil.copytree(tiny_gpt2_dir, d)
    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    return d


class _Touch:
    """A pickle that runs ``touch MARKER`` when unpickled by an unrestricted loader."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_weights_are_refused_by_default_with_a_hint_that_converts(pickle_model_dir, monkeypatch):
    monkeypatch.delenv("HEADSCOPE_ALLOW_PICKLE", raising=False)
    with pytest.raises(ModelLoadError) as e:
        headscope.load_model(str(pickle_model_dir), device="cpu")
    assert "safetensors only" in e.value.message and "pytorch_model.bin" in e.value.message
    assert "safe_serialization=True" in (e.value.hint or "") and "HEADSCOPE_ALLOW_PICKLE=1" in (e.value.hint or "")


def test_the_opt_in_loads_plain_tensors_and_never_runs_a_pickles_code(pickle_model_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("HEADSCOPE_ALLOW_PICKLE", "1")
    m = headscope.load_model(str(pickle_model_dir), device="cpu")  # a harmless pickle of tensors loads
    assert m.n_layers == 2
    marker = tmp_path / "pickle-ran"
    weights = torch.load(pickle_model_dir / "pytorch_model.bin", weights_only=True)
    weights["evil"] = _Touch(marker)
    torch.save(weights, pickle_model_dir / "pytorch_model.bin")
    with pytest.raises(ModelLoadError):
        headscope.load_model(str(pickle_model_dir), device="cpu")
    assert not marker.exists()


# --- 9: heads --file is streamed --------------------------------------------------------------------


def test_streamed_windows_equal_the_whole_text_windows(tmp_path, tiny_gpt2, monkeypatch):
    from pydoc_data.topics import topics

    from headscope.kinds import documents

    text = "\n\n".join(v for _, v in sorted(topics.items()))[:200_000]
    path = tmp_path / "t.txt"
    path.write_text(text)
    tok = tiny_gpt2.tokenizer
    whole = documents.token_windows(tok, [("t.txt", text)], 64, None, max_windows=50)
    monkeypatch.setattr(documents, "BLOCK_BYTES", 4096)  # ~50 blocks, each cut where a line starts
    assert sum(1 for _ in documents.text_blocks(path, 4096)) > 40
    streamed = documents.token_windows(tok, documents.file_documents([path]), 64, None, max_windows=50)
    assert streamed.n_corpus_tokens == whole.n_corpus_tokens
    assert torch.equal(streamed.tokens, whole.tokens)


def test_a_bad_byte_after_the_first_block_is_found_reading_in_blocks(tmp_path):
    from headscope.kinds.documents import BLOCK_BYTES, check_text_file

    path = tmp_path / "late.txt"
    path.write_bytes(b"a" * (BLOCK_BYTES + 10) + b"\xff" + b"b" * 10)
    with pytest.raises(BadInput, match=f"byte {BLOCK_BYTES + 10:,}, counting from 0, cannot be decoded"):
        check_text_file(path)
    (tmp_path / "blank.txt").write_text(" \n" * 10)
    with pytest.raises(BadInput, match="is empty"):
        check_text_file(tmp_path / "blank.txt")


# --- 10: a sweep that fails before its first entry -------------------------------------------------


def test_a_sweep_whose_only_entry_fails_leaves_no_empty_entries_folder(tmp_path):
    out = tmp_path / "sweep"
    r = cli("sweep", "--model", tmp_path / "no-such-model", "--seq-len", "8", "--batch", "2", "--out", out)
    assert r.exit_code in (1, 2), r.output
    assert not (out / "entries").exists()
    assert leftovers(tmp_path) == []


# --- 12: small slips --------------------------------------------------------------------------------


def test_toy_hints_quote_the_real_defaults_and_the_real_option_names():
    from headscope.toy.train import ToyConfig

    real = ToyConfig()
    for bad, default in (({"steps": 0}, real.steps), ({"every": 0}, real.every), ({"lr": float("inf")}, real.lr)):
        with pytest.raises(BadInput) as e:
            ToyConfig(**bad).check()
        assert e.value.hint == f"the default is {default}"
    with pytest.raises(BadInput) as e:
        ToyConfig(n_heads=0).check()
    assert e.value.message.startswith("--heads ") and "--n-heads" not in str(e.value)


def test_heads_zero_on_the_command_line_names_heads(tmp_path):
    r = cli("train-toy", "--heads", "0", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "--heads must be at least 1" in flat(r.output) and "--n-heads" not in r.output


def _http2_server_that_is_not_ray(reply: bytes):
    """A real TCP server speaking just enough HTTP/2: SETTINGS back, then ``reply`` to the first call."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)  # the client's preface and SETTINGS
            conn.sendall(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64")  # SETTINGS (one)
            time.sleep(0.2)
            conn.recv(65536)  # SETTINGS ACK, HEADERS, DATA
            conn.sendall(reply)
            time.sleep(1)

    threading.Thread(target=serve, daemon=True).start()
    return server


@pytest.mark.parametrize(
    "reply",
    [
        # HEADERS END_STREAM: a gRPC server's trailers-only UNIMPLEMENTED (grpc-status 12)
        b"\x00\x00\x11\x01\x05\x00\x00\x00\x01\x88\x00\x0bgrpc-status\x0212",
        b"\x00\x00\x01\x01\x05\x00\x00\x00\x01\x8d",  # a web server's 404, no gRPC at all
        b"\x00\x00\x04\x03\x00\x00\x00\x00\x01\x00\x00\x00\x01",  # RST_STREAM
        b"",  # closes the connection
    ],
    ids=["grpc-unimplemented", "http-404", "reset", "closed"],
)
def test_an_http2_server_that_is_not_ray_is_refused_in_one_line_within_the_timeout(reply, tmp_path):
    from headscope.pipeline import sweep_ray

    server = _http2_server_that_is_not_ray(reply)
    try:
        with pytest.raises(BadInput, match="it is not a Ray cluster's head"):
            sweep_ray.probe_address(f"127.0.0.1:{server.getsockname()[1]}", timeout=5.0)
    finally:
        server.close()


def test_a_binary_file_is_called_binary_not_given_a_text_encoding_hint(tmp_path):
    """A program given as --file was told to convert it from latin-1."""
    from headscope.kinds.documents import check_text_file
    from headscope.models.inputs import read_text_file

    path = tmp_path / "prog.bin"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)))
    for read in (check_text_file, lambda p: read_text_file(p, "--file", directory_hint="")):
        with pytest.raises(BadInput, match="holds NUL bytes, as binary files") as e:
            read(path)
        assert "latin1" not in e.value.hint
    (tmp_path / "latin.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(BadInput, match="byte 3, counting from 0") as e:
        check_text_file(tmp_path / "latin.txt")
    assert "latin1" in e.value.hint
