"""Sliding-window attention (Mistral): the fused path where the window covers the sequence, eager where not.

transformers applies Mistral's ``config.sliding_window`` (4096 by default) at forward time, with no
``sliding_window`` attribute on the attention module. A window at least as long as the sequence
masks nothing a causal mask keeps, so the fused kernel gives the eager numbers; a shorter one
really masks keys, so "auto" must take the eager path before any pass (not fail in it), and the
eager scores must be those of the model's own windowed attention (plain transformers, eager,
``output_attentions=True``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import save_tiny

import headscope
from headscope.scan import fused as F
from headscope.scan.induction_scan import attention_route, scan_induction, score_pass
from headscope.scan.sequences import repeated_tokens
from test_induction_reference import reference_scores

SEQ_LEN, REPEATS = 10, 2  # with the BOS: 21 tokens a sequence


def _tiny_mistral(tmp_path_factory, tokenizer_dir, window: int | None, name: str):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    cfg = MistralConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        vocab_size=50257,
        max_position_embeddings=512,
        bos_token_id=50256,
        eos_token_id=50256,
        sliding_window=window,
    )
    return save_tiny(MistralForCausalLM(cfg), tokenizer_dir, tmp_path_factory.mktemp(name))


@pytest.fixture(scope="module")
def long_window_dir(tmp_path_factory, gpt2_tokenizer_dir):
    """Mistral's own default window (4096): far longer than any sequence here."""
    return _tiny_mistral(tmp_path_factory, gpt2_tokenizer_dir, 4096, "mistral-w4096")


@pytest.fixture(scope="module")
def short_window_dir(tmp_path_factory, gpt2_tokenizer_dir):
    """A 6-token window: keys more than 5 tokens back are masked, so the induction stripe is cut off."""
    return _tiny_mistral(tmp_path_factory, gpt2_tokenizer_dir, 6, "mistral-w6")


def test_the_window_is_read_where_transformers_applies_it(long_window_dir, short_window_dir):
    long = headscope.load_model(str(long_window_dir), device="cpu")
    short = headscope.load_model(str(short_window_dir), device="cpu")
    assert not hasattr(long.blocks[0].attn.original_component, "sliding_window")  # the config holds it
    assert F.sliding_windows(long) == [4096, 4096] and F.sliding_windows(short) == [6, 6]
    assert F.fused_unsupported_reason(long, 21) is None
    assert F.fused_unsupported_reason(long) is None  # 4096 >= the 512 positions the model takes
    assert F.fused_unsupported_reason(short, 6) is None  # a window as long as the sequence is plain causal
    reason = F.fused_unsupported_reason(short, 7)
    assert reason is not None and "sliding window of 6 tokens" in reason and "7-token" in reason
    assert attention_route(short, "auto", 21) == "eager" and attention_route(long, "auto", 21) == "fused"


def test_a_window_longer_than_the_sequence_gives_the_eager_scores_on_the_fused_path(long_window_dir):
    model = headscope.load_model(str(long_window_dir), device="cpu")
    rt = repeated_tokens(model, seq_len=SEQ_LEN, batch=3, repeats=REPEATS, seed=3)
    eager = score_pass(model, rt, 3, attention="eager")
    fused = score_pass(model, rt, 3, attention="fused")
    assert fused.attention == "fused"
    for name, value in eager.means.items():
        np.testing.assert_allclose(fused.means[name], value, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(fused.per_position_loss.numpy(), eager.per_position_loss.numpy(), atol=1e-5)
    # and the same against the model's own attention weights
    ref, _ = reference_scores(long_window_dir, rt.tokens, SEQ_LEN, rt.layout.bos)
    for name, expected in ref.items():
        np.testing.assert_allclose(fused.means[name], expected, atol=1e-5, err_msg=name)


def test_a_window_shorter_than_the_sequence_runs_eager_under_auto_with_the_models_own_scores(short_window_dir):
    model = headscope.load_model(str(short_window_dir), device="cpu")
    res = scan_induction(
        model, seq_len=SEQ_LEN, batch=3, repeats=REPEATS, top_k=2, seed=3, sample=False, progress=False
    )
    assert res.settings["attention"] == "eager"  # chosen before the pass, nothing failed
    rt = repeated_tokens(model, seq_len=SEQ_LEN, batch=3, repeats=REPEATS, seed=3)
    ref, _ = reference_scores(short_window_dir, rt.tokens, SEQ_LEN, rt.layout.bos)
    assert np.abs(ref["induction"]).max() == 0.0  # the window (6) hides the key 9 tokens back: it is masked
    for name, expected in ref.items():
        np.testing.assert_allclose(res.scores[name], expected, atol=1e-5, err_msg=name)


def test_forcing_the_fused_path_past_a_short_window_is_one_clear_error(short_window_dir):
    model = headscope.load_model(str(short_window_dir), device="cpu")
    with pytest.raises(F.FusedUnsupported) as err, F.fused_attention(model):
        model.bridge(torch.arange(100, 112)[None], use_cache=False)
    assert "sliding window of 6 tokens, shorter than the 12-token sequence" in str(err.value)
    assert err.value.exit_code == 2 and "--attention eager" in (err.value.hint or "")
    with F.fused_attention(model):  # 6 tokens fit the window: plain causal
        model.bridge(torch.arange(100, 106)[None], use_cache=False)


def test_qk_runs_on_mistral_and_its_fused_path_hint_names_no_option_it_lacks(long_window_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from headscope.cli import app, cmd_qk

    args = ["qk", "--model", str(long_window_dir), "--device", "cpu", "--head", "1.2", "--no-figures"]
    args += ["--text", "a b c d. a b c d."]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "ok")])
    assert r.exit_code == 0, r.output  # was: exit 2, "not plain causal", hint "use --attention eager"

    def refuse(*a, **k):
        raise F.FusedUnsupported("fused attention got a mask that is not plain causal", hint=F.WINDOW_HINT)

    monkeypatch.setattr(cmd_qk, "analyze_qk", refuse)
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "refused")])
    assert r.exit_code == 2 and "not plain causal" in r.output
    assert "qk has no --attention option" in r.output and "headscope induction --attention eager" in r.output


@pytest.mark.parametrize(
    "kind, want",
    [
        ("qwen2_off", [None, None]),  # use_sliding_window=False: transformers ignores config.sliding_window
        ("qwen2_on", [None, 8]),  # sliding from layer max_window_layers=1 on (config.layer_types)
        ("gemma2", [8, None]),  # alternating, set on each attention module
    ],
)
def test_per_layer_windows_are_the_ones_transformers_sets(kind, want, tmp_path, gpt2_tokenizer_dir):
    import transformers as T

    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    common |= dict(num_key_value_heads=2, vocab_size=50257, max_position_embeddings=256, sliding_window=8)
    if kind == "gemma2":
        hf = T.Gemma2ForCausalLM(T.Gemma2Config(**common, head_dim=16))
    else:
        on = kind == "qwen2_on"
        hf = T.Qwen2ForCausalLM(T.Qwen2Config(**common, use_sliding_window=on, max_window_layers=1))
    model = headscope.load_model(str(save_tiny(hf, gpt2_tokenizer_dir, tmp_path / kind)), device="cpu")
    assert [getattr(a.original_component, "sliding_window", None) for a in (b.attn for b in model.blocks)] == want
    assert F.sliding_windows(model) == want
    assert (F.window_reason(model, 8) is None) and ((F.window_reason(model, 9) is None) == (want == [None, None]))


def test_circuits_and_the_explorer_choose_their_route_by_the_length_they_run(short_window_dir):
    """Every caller passes its own sequence length: a 5-token pass fits the 6-token window (fused), a 12-token
    one does not (circuits: eager, the model's own windowed output; the explorer, fused only: a clear refusal)."""
    from transformers import AutoModelForCausalLM

    from headscope.circuits.runs import final_normed
    from headscope.errors import BadInput
    from headscope.explorer.state import compute_text
    from headscope.models.inputs import TokenSequence

    model = headscope.load_model(str(short_window_dir), device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(str(short_window_dir), attn_implementation="eager").eval()
    for n in (5, 12):
        ids = torch.arange(100, 100 + n)[None]
        with torch.no_grad():
            want = hf(ids, output_hidden_states=True).hidden_states[-1]  # after the final norm
        np.testing.assert_allclose(final_normed(model, ids).numpy(), want.numpy(), atol=1e-5)
    short = TokenSequence("", list(range(100, 105)), [str(i) for i in range(5)])
    assert compute_text(model, short) is not None
    long = TokenSequence("", list(range(100, 112)), [str(i) for i in range(12)])
    with pytest.raises(BadInput, match="sliding window of 6 tokens, shorter than 12-token sequences"):
        compute_text(model, long)
