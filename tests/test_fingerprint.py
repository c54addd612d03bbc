"""Weight fingerprints: sha256 over the Hugging Face parameters, the same through the bridge as without it.

The expected hashes are computed here from plain ``transformers`` models with hashlib, following
the format the module documents (sorted HF names; name|shape|dtype line, then raw bytes; tied
weights once), so the bridge's rebuilt module tree cannot hide or add a tensor unnoticed.
"""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

import headscope
from headscope.models.fingerprint import hf_named_parameters, weights_fingerprint
from headscope.pipeline.sweep import mark_same_weights


def _by_hand(hf_model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(hf_model.named_parameters(), key=lambda kv: kv[0]):  # named_parameters: ties once
        h.update(f"{name}|{tuple(p.shape)}|{p.dtype}\n".encode())
        h.update(p.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("which", ["tiny_gpt2", "tiny_llama"])
def test_bridge_fingerprint_is_the_plain_transformers_one(which, request):
    bridge = request.getfixturevalue(which)
    plain = AutoModelForCausalLM.from_pretrained(str(request.getfixturevalue(f"{which}_dir")), dtype=torch.float32)
    fp = weights_fingerprint(bridge)
    assert fp["sha256"] == _by_hand(plain) == weights_fingerprint(plain)["sha256"]
    assert fp["n_params"] == sum(p.numel() for p in plain.parameters())  # tied embedding (GPT-2) counted once
    assert sorted(n for n, _ in hf_named_parameters(bridge.original_model)) == sorted(
        n for n, _ in plain.named_parameters()
    )


def test_one_changed_weight_changes_the_fingerprint_and_a_copy_does_not(tiny_gpt2_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_gpt2_dir, copy)
    a = headscope.load_model(str(tiny_gpt2_dir), device="cpu")
    b = headscope.load_model(str(copy), device="cpu")
    assert weights_fingerprint(a)["sha256"] == weights_fingerprint(b)["sha256"]
    with torch.no_grad():
        w = dict(hf_named_parameters(b.original_model))["transformer.h.1.attn.c_proj.weight"]
        w[3, 7] = torch.nextafter(w[3, 7], torch.tensor(1.0))  # one float, one ulp
    assert weights_fingerprint(a)["sha256"] != weights_fingerprint(b)["sha256"]


def test_same_weights_point_at_the_first_entry_that_had_them():
    rows = [
        {"label": "a", "weights_sha256": "x"},
        {"label": "b", "weights_sha256": "y"},
        {"label": "c", "weights_sha256": "x"},
        {"label": "d", "weights_sha256": None},
        {"label": "e"},
        {"label": "f", "weights_sha256": "x"},
    ]
    assert [r["same_weights_as"] for r in mark_same_weights(rows)] == [None, None, "a", None, None, "a"]


def test_local_sweep_flags_a_copy_of_a_model_under_another_name(tiny_gpt2_dir, tiny_llama_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from headscope.cli import app

    copy = tmp_path / "step2000"
    shutil.copytree(tiny_gpt2_dir, copy)
    out = tmp_path / "out"
    r = CliRunner().invoke(
        app,
        [
            "sweep",
            "-m",
            str(tiny_gpt2_dir),
            "-m",
            str(tiny_llama_dir),
            "-m",
            str(copy),
            "--out",
            str(out),
            "--seq-len",
            "8",
            "--batch",
            "2",
        ],
    )
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "sweep.json").read_text())["entries"]
    assert [row["same_weights_as"] for row in rows] == [None, None, rows[0]["label"]]
    assert "same weights: step2000 holds exactly the weights of" in " ".join(r.output.split())
    assert "same_weights_as" in json.loads((out / "sweep.json").read_text())["definitions"]
