"""The trained toy (docs/toy.md): path patching must find the circuit the toy is known to form.

A 2-layer attention-only model trained on copies at random distances forms a layer-0
previous-token head and a layer-1 induction head whose keys read it (Olsson et al. 2022).
Path patching on the induction task must rank the path from the top layer-0 previous-token head
into the top induction head's keys first among every path into that head's keys, queries and
values, with an interval clear of the rest. Training takes a few minutes on one CPU thread.
"""

from __future__ import annotations

import pytest

import headscope
from headscope.circuits import induction_task
from headscope.circuits.path_patching import Receiver, path_patching
from headscope.head_labels import head_label

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from headscope.toy import train_toy

    out = tmp_path_factory.mktemp("toy") / "run"
    train_toy(out, steps=1200, every=1200, threads=1)
    return headscope.load_model(str(out / "checkpoints" / "step1200"), device="cpu")


def test_previous_token_head_to_induction_keys_is_the_strongest_path(toy):
    scan = headscope.scan_induction(toy, seq_len=24, batch=20, ablate=False, sample=False, progress=False)
    ((il, ih, ind),) = scan.top_heads("induction", 1)
    ((pl, ph, prev),) = scan.top_heads("previous_token", 1)
    assert il == 1 and pl == 0 and ind > 0.4 and prev > 0.4  # the toy formed both heads
    task = induction_task(toy, n_examples=20, seq_len=24, seed=0)
    paths = [path_patching(toy, task, None, Receiver(w, il, ih)) for w in ("k", "q", "v")]
    ranked = sorted(
        ((e, lo, hi, s, pp.receiver) for pp in paths for s, _, e, lo, hi in pp.top(len(pp.senders))),
        key=lambda t: -abs(t[0]),
    )
    best, second = ranked[0], ranked[1]
    assert (best[3], best[4]) == (head_label(pl, ph), f"{head_label(il, ih)}.k"), ranked[:3]
    assert best[1] > second[2]  # its interval lies above the next path's
