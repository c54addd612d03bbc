"""`headscope sweep --executor ray`: the same sweep, each entry a Ray task, on a local Ray cluster.

One Ray cluster (2 CPUs, no dashboard) is started for the whole module and shut down at its
end (tests marked ``ray``; ``-m "not ray"`` leaves them out); the executor finds this process connected and uses that cluster. Tests that need Ray
skip when it is not installed (``pip install "headscope[ray]"``); the ones that check what
happens without Ray or with a bad address do not need it. Models are the tiny random GPT-2
and Llama of conftest.py; scans are 8 tokens x 2 repeats, batch 2.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import headscope
from headscope.cli import app
from headscope.errors import BadInput
from headscope.pipeline import sweep_ray
from headscope.pipeline.sweep import plan_sweep, read_entry, run_sweep

SCAN = ["--seq-len", "8", "--batch", "2"]
runner = CliRunner()
TIMING = ["load_s", "scan_s"]  # wall-clock columns: differ between any two runs


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster for this module: 2 CPUs, no dashboard, worker output not echoed."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    # Workers must import this checkout of headscope: they inherit the environment Ray starts with.
    src = str(Path(headscope.__file__).resolve().parents[1])
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([src] + ([old] if old else []))
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    yield ray
    ray.shutdown()  # stops the raylet, GCS and every worker this module started


@pytest.fixture(scope="module")
def three_models(tmp_path_factory, tiny_gpt2_dir, tiny_llama_dir):
    """The tiny GPT-2, a byte-for-byte copy of it under another name, and the tiny Llama."""
    copy = tmp_path_factory.mktemp("copy") / "gpt2-again"
    shutil.copytree(tiny_gpt2_dir, copy)
    return [tiny_gpt2_dir, copy, tiny_llama_dir]


def sweep(*args):
    return runner.invoke(app, ["sweep", *args, *SCAN])


def _models(dirs) -> list[str]:
    return [x for d in dirs for x in ("-m", str(d))]


def _closed_port() -> int:
    """A local port where nothing listens (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the same table as the local executor ---------------------------------------------------------
@pytest.mark.ray
def test_ray_sweep_gives_the_local_table_and_flags_the_copy(ray_cluster, three_models, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    r = sweep(*_models(three_models), "--out", str(local))
    assert r.exit_code == 0, r.output
    gcs = ray_cluster.get_runtime_context().gcs_address  # through --address: probed, then this connection is used
    r = sweep(*_models(three_models), "--out", str(remote), "--executor", "ray", "--address", gcs)
    assert r.exit_code == 0, r.output
    assert "3 entries submitted" in " ".join(r.output.split()) and "1 CPU" in r.output

    a = pd.read_csv(local / "sweep.csv").drop(columns=TIMING)
    b = pd.read_csv(remote / "sweep.csv").drop(columns=TIMING)
    assert list(a.columns) == list(b.columns)
    numbers = [c for c in a.columns if a[c].dtype.kind == "f" and c != "step"]
    pd.testing.assert_frame_equal(a.drop(columns=numbers), b.drop(columns=numbers))
    # other processes, other torch thread counts: the sums may differ in the last bits
    pd.testing.assert_frame_equal(a[numbers], b[numbers], rtol=1e-5, atol=1e-6)

    # the copy is flagged in both; the Llama is not
    assert list(b["same_weights_as"].fillna("")) == ["", a["label"][0], ""]
    assert b["weights_sha256"][0] == b["weights_sha256"][1] != b["weights_sha256"][2]
    assert "same weights: gpt2-again holds exactly the weights of" in " ".join(r.output.split())
    # the entries really ran in Ray workers, and the figure is drawn at the end as locally
    entries = plan_sweep([str(d) for d in three_models])
    workers = [read_entry(remote, e)["worker"] for e in entries]
    assert all(w["executor"] == "ray" and w["pid"] != os.getpid() for w in workers)
    assert (remote / "sweep.png").stat().st_size > 0


# --- a worker that dies ------------------------------------------------------------------------
@pytest.mark.ray
def test_a_worker_killed_mid_entry_leaves_it_failed_and_the_rerun_completes_it(
    ray_cluster, tiny_gpt2_dir, tiny_llama_dir, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    victim = Path(tiny_llama_dir).name

    def die_on_the_llama(job):  # runs in the worker (shipped by value): the process vanishes mid-entry
        if job.entry.label == victim:
            os._exit(1)
        return job.run()

    monkeypatch.setattr(sweep_ray, "RayExecutor", functools.partial(sweep_ray.RayExecutor, entry_fn=die_on_the_llama))
    args = [*_models([tiny_gpt2_dir, tiny_llama_dir]), "--out", str(out), "--executor", "ray"]
    r = sweep(*args)
    assert r.exit_code == 1, r.output
    text = " ".join(r.output.split())
    assert "the Ray worker running this entry died" in text and "1 of 2 entries failed" in text
    table = json.loads((out / "sweep.json").read_text())
    assert [e["status"] for e in table["entries"]] == ["done", "failed"]
    assert len(list((out / "entries").glob("*.json"))) == 1  # the finished entry is on disk

    monkeypatch.undo()  # the "fixed" worker
    r = sweep(*args)
    assert r.exit_code == 0, r.output
    assert "finished earlier, skipped" in r.output and "1 entry submitted" in " ".join(r.output.split())
    assert [e["status"] for e in json.loads((out / "sweep.json").read_text())["entries"]] == ["done", "done"]


@pytest.mark.ray
def test_an_entry_that_raises_in_its_worker_keeps_its_message_and_hint(ray_cluster, tiny_gpt2_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_gpt2_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    res = run_sweep(
        plan_sweep([str(broken)]), tmp_path / "out", executor=sweep_ray.RayExecutor(), seq_len=8, batch=2, figure=False
    )
    (f,) = res.failures
    assert f["error"].startswith("could not load the weights") and "complete weights" in f["hint"]
    assert "Traceback" in f["traceback"]  # the worker's own traceback came back


# --- Ctrl-C ----------------------------------------------------------------------------------
@pytest.mark.ray
def test_interrupting_a_ray_sweep_keeps_finished_entries_and_cancels_the_rest(
    ray_cluster, tiny_gpt2_dir, tiny_llama_dir, tmp_path
):
    out = tmp_path / "out"
    entries = plan_sweep([str(tiny_gpt2_dir), str(tiny_llama_dir)])

    def slow_llama(job):  # the Llama would take a minute: the interrupt must not wait for it
        import time

        if job.entry.model.endswith(Path(tiny_llama_dir).name):
            time.sleep(60)
        return job.run()

    def interrupt_after_first(kind, entry, info):
        if kind == "done":
            raise KeyboardInterrupt

    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run_sweep(
            entries,
            out,
            executor=sweep_ray.RayExecutor(entry_fn=slow_llama),
            on_event=interrupt_after_first,
            seq_len=8,
            batch=2,
        )
    assert time.perf_counter() - t0 < 50
    assert read_entry(out, entries[0]) is not None and read_entry(out, entries[1]) is None
    assert list(pd.read_csv(out / "sweep.csv")["status"]) == ["done", "pending"]
    # the sleeping task was cancelled: both CPUs come back to the cluster
    deadline = time.time() + 20
    while ray_cluster.available_resources().get("CPU", 0) < 2 and time.time() < deadline:
        time.sleep(0.2)
    assert ray_cluster.available_resources().get("CPU", 0) == 2


# --- addresses, resources, and no Ray ---------------------------------------------------------
@pytest.mark.ray
def test_an_unreachable_address_fails_at_once_with_a_clear_message(tiny_gpt2_dir, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "out"
    t0 = time.perf_counter()
    r = sweep(
        "-m", str(tiny_gpt2_dir), "--out", str(out), "--executor", "ray", "--address", f"127.0.0.1:{_closed_port()}"
    )
    assert time.perf_counter() - t0 < 5
    assert r.exit_code == 2
    assert "no Ray cluster answers at 127.0.0.1:" in " ".join(r.output.split())
    assert not out.exists()  # refused before anything was written


def test_a_port_that_is_not_a_ray_head_is_refused_within_the_timeout():
    with socket.socket() as server:  # accepts connections, never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        threading.Thread(target=lambda: server.accept(), daemon=True).start()
        t0 = time.perf_counter()
        with pytest.raises(BadInput, match="does not answer like a Ray cluster's head"):
            sweep_ray.probe_address(f"127.0.0.1:{server.getsockname()[1]}", timeout=1.0)
        assert time.perf_counter() - t0 < 3


@pytest.mark.ray
def test_a_running_cluster_passes_the_probe(ray_cluster):
    sweep_ray.probe_address(ray_cluster.get_runtime_context().gcs_address, timeout=2.0)


@pytest.mark.parametrize("address", ["nonsense", "host:port", "ray://:10001", "head:99999"])
def test_malformed_addresses_are_refused(address):
    with pytest.raises(BadInput, match="is not a Ray cluster address"):
        sweep_ray.RayExecutor(address)


@pytest.mark.ray
def test_a_request_no_node_can_meet_is_refused_instead_of_waiting_forever(ray_cluster, tiny_gpt2_dir, tmp_path):
    out = tmp_path / "out"
    r = sweep("-m", str(tiny_gpt2_dir), "--out", str(out), "--executor", "ray", "--cpus-per-task", "64")
    assert r.exit_code == 2
    assert "no node of the Ray cluster can run a task that asks for 64 CPUs" in " ".join(r.output.split())
    r = sweep("-m", str(tiny_gpt2_dir), "--out", str(out), "--executor", "ray", "--device", "cuda")
    assert r.exit_code == 2 and "the Ray cluster has no GPUs" in " ".join(r.output.split())


def test_without_ray_the_executor_says_how_to_install_it(monkeypatch, tiny_gpt2_dir, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    r = sweep("-m", str(tiny_gpt2_dir), "--out", str(tmp_path / "out"), "--executor", "ray")
    assert r.exit_code == 2
    assert 'pip install "headscope[ray]"' in r.output
    assert not (tmp_path / "out").exists()


def test_address_without_the_ray_executor_is_refused(tiny_gpt2_dir, tmp_path):
    r = sweep("-m", str(tiny_gpt2_dir), "--out", str(tmp_path / "out"), "--address", "auto")
    assert r.exit_code == 2 and "--executor ray" in r.output
