"""On the real SmolLM2-135M weights the default scan finds induction heads that matter causally."""

import math

import numpy as np
import pytest

import headscope

pytestmark = pytest.mark.smollm2


@pytest.fixture(scope="module")
def default_scan(smollm2):
    return headscope.scan_induction(smollm2, progress=False)  # seq_len 50, batch 10, repeats 2, top 5


def test_default_scan_finds_heads_above_half(default_scan):
    assert default_scan.top_heads("induction", 1)[0][2] > 0.5
    assert len([h for h in default_scan.heads() if h["role"] == "induction"]) >= 2


def test_ablating_a_strong_induction_head_raises_later_repeat_loss(default_scan):
    singles = [e for e in default_scan.ablation if e["kind"] == "head"]
    strong = {(l, h) for l, h, v in default_scan.top_heads("induction", 5) if v > 0.5}
    raised = [e for e in singles if (e["layer"], e["head"]) in strong and e["verdict"] == "raises"]
    assert raised and max(e["interval"][0] for e in raised) > 0.1
    together = next(e for e in default_scan.ablation if e["kind"] == "all_top")
    control = default_scan.control_spread()
    assert control["n"] == 10
    assert together["interval"][0] > max(e["interval"][1] for e in raised)
    # far beyond the typical random draw (one draw can hold a previous-token head: not the median)
    assert together["interval"][0] > 5 * max(control["median"], 0.01)
    # specificity: the first-repeat loss moves far less than the later-repeat loss
    assert abs(together["first_repeat_increase"]) < together["loss_increase"] / 5


def test_later_repeats_are_far_easier_than_the_first(default_scan):
    first, later = default_scan.loss_first_repeat, default_scan.loss_later_repeats
    assert first > 0.8 * math.log(49152)  # random tokens: the model has no idea
    assert later < first / 2


def test_induction_heads_live_in_later_layers_and_prefix_matching_agrees(default_scan):
    s = default_scan.scores
    l, h, v = default_scan.top_heads("induction", 1)[0]
    assert l >= 2  # induction needs a previous-token head before it
    assert s["prefix_matching"][l, h] >= v - 1e-6  # prefix matching includes the induction key
    assert np.all((s["copying"] >= -1 - 1e-6) & (s["copying"] <= 1 + 1e-6))


def test_result_round_trips_to_json_in_the_documented_shape(default_scan):
    import json

    doc = json.loads(default_scan.to_json())
    assert set(doc) >= {"model", "settings", "scores", "loss", "ablation", "heads"}
    assert doc["model"] == {
        **doc["model"],
        "name": "smollm2-135m-instruct-q4",
        "n_layers": 30,
        "n_heads": 9,
        "n_kv_heads": 3,
    }
    assert "Instruct" in doc["model"]["about"] and "Q4_1" in doc["model"]["about"]  # every output says what it is
    assert {k: doc["settings"][k] for k in ("seq_len", "batch", "repeats", "seed")} == {
        "seq_len": 50,
        "batch": 10,
        "repeats": 2,
        "seed": 0,
    }
    for name in ("induction", "prefix_matching", "previous_token", "duplicate_token", "copying"):
        assert np.array(doc["scores"][name]).shape == (30, 9)
    assert len(doc["loss"]["per_position"]) == 100
    assert all({"layer", "head", "loss_increase"} <= set(e) for e in doc["ablation"])
    assert all({"layer", "head", "role", "score"} <= set(e) for e in doc["heads"])
    frame = default_scan.to_frame()
    assert len(frame) == 270 and frame.loc[frame.induction.idxmax(), "roles"].startswith("induction")
