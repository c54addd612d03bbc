"""More kinds of heads (issue 12): sinks, successor heads, copy suppression, in-context learning.

Each score is checked three ways: on hand-made inputs with known answers (patterns, and a
tiny Llama whose weights are set by hand so that one head copies, one suppresses, one maps
each day to the next and one attends to the first token), against an independent
computation with plain torch on the Hugging Face modules of the tiny random models, and on
SmolLM2 (``-m smollm2``), where the numbers are recorded in docs/kinds.md.
"""

from __future__ import annotations

import string

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import headscope
from headscope.folded_weights import head_weights
from headscope.kinds import copy_suppression_scores, successor_scores
from headscope.kinds import sink as SK
from headscope.kinds.documents import natural_windows, token_windows
from headscope.kinds.icl import icl_score
from headscope.models.embedding import effective_embedding
from headscope.scores.copy_suppression import self_rank_fractions
from headscope.scores.successor import ORDINAL_SETS, successor_counts, usable_ordinal_sets

# --- attention sink: pattern reductions ------------------------------------------------------


def _pattern(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows)[None, None]  # [1, 1, q, k]


def test_sink_head_attending_to_first_token_scores_one():
    n = 6
    p = torch.zeros(1, 1, n, n)
    p[..., 0] = 1.0
    s, c = SK.first_token_sum(p)
    assert c == n - 1 and s.item() == n - 1
    assert SK.first_token_alpha(p).item() == 1.0
    assert SK.sink_rate_sum(p)[0].item() == 1.0


def test_sink_leaves_out_the_first_query_but_paper_alpha_keeps_it():
    # queries 1..3 put 0.1 on the first token; query 0 can only attend to itself (1.0).
    p = _pattern([[1, 0, 0, 0], [0.1, 0.9, 0, 0], [0.1, 0.4, 0.5, 0], [0.1, 0.3, 0.3, 0.3]])
    s, c = SK.first_token_sum(p)
    assert c == 3 and abs(s.item() / c - 0.1) < 1e-7
    alpha = SK.first_token_alpha(p).item()
    assert abs(alpha - (1 + 3 * 0.1) / 4) < 1e-7  # Gu et al.: mean over all T queries
    assert alpha > SK.SINK_THRESHOLD  # 0.325: a "sink" by the paper on 4 tokens, though only 0.1 after the first
    assert SK.sink_rate_sum(p)[0].item() == 1.0


def test_sink_rate_thresholds_each_sequence_then_averages():
    sink = torch.zeros(8, 8)
    sink[:, 0] = 1.0
    self_only = torch.eye(8)  # alpha = 1/8: only query 0 looks at the first token
    p = torch.stack([sink, self_only])[:, None]  # 2 sequences, 1 head
    r, n = SK.sink_rate_sum(p)
    assert n == 2 and r.item() == 1.0  # one of the two sequences passes: rate 0.5


def test_uniform_attention_on_short_sequences_passes_the_papers_threshold():
    n = 8  # alpha = H_8 / 8 = 0.34: the threshold is meant for T = 64
    p = torch.tril(torch.ones(n, n))
    p = (p / p.sum(-1, keepdim=True))[None, None]
    assert SK.first_token_alpha(p).item() > SK.SINK_THRESHOLD


def test_uniform_attention_on_long_sequences_is_not_a_sink():
    n = 64
    p = torch.tril(torch.ones(n, n))
    p = (p / p.sum(-1, keepdim=True))[None, None]
    alpha = SK.first_token_alpha(p).item()
    assert abs(alpha - sum(1 / (q + 1) for q in range(n)) / n) < 1e-6
    assert alpha < SK.SINK_THRESHOLD  # 0.074 on T = 64: Gu et al. chose 0.3 above the uniform baseline


# --- documents ---------------------------------------------------------------------------------


class _CharTokenizer:
    """One token per character: makes window arithmetic easy to check by hand."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(ch) for ch in text]}


def test_token_windows_join_short_documents_and_cut_exact_windows():
    docs = [("a", "x" * 3), ("b", "y" * 4), ("c", "z" * 25)]
    tw = token_windows(_CharTokenizer(), docs, window=10, bos_id=7)
    # "a" (3) + "\n\n" + "b" (4) = 9 < 10, so "c" is joined too: 3+2+4+2+25 = 36 tokens -> 3 windows
    assert tw.tokens.shape == (3, 11) and (tw.tokens[:, 0] == 7).all()
    assert tw.sources == ["a+b+c"] * 3 and tw.n_documents == 1 and tw.n_corpus_tokens == 32
    assert "".join(map(chr, tw.tokens[0, 1:].tolist())) == "xxx\n\nyyyy\n"


def test_token_windows_spread_max_windows_over_the_corpus():
    docs = [(str(i), "w" * 10) for i in range(9)]
    tw = token_windows(_CharTokenizer(), docs, window=10, bos_id=None, max_windows=3)
    assert tw.tokens.shape == (3, 10) and tw.sources == ["0", "4", "8"]


def test_pydoc_windows_say_what_was_used(tiny_gpt2):
    tw = natural_windows(tiny_gpt2, window=200, max_windows=4)
    bos = tiny_gpt2.first_token.id
    assert tw.tokens.shape == (4, 200 + (bos is not None))
    with pytest.raises(headscope.BadInput, match="context of 256"):
        natural_windows(tiny_gpt2, window=512)
    assert "pydoc_data.topics (79 topics" in tw.describe()


# --- effective embeddings: the model's block 0 vs the HF modules by hand -----------------------


def _gpt2_block0(hf, ids):
    E = hf.transformer.wte.weight[ids]
    b = hf.transformer.h[0]
    d = E.shape[-1]
    mlp0 = b.mlp(b.ln_2(E))
    v = b.ln_1(E) @ b.attn.c_attn.weight[:, 2 * d :] + b.attn.c_attn.bias[2 * d :]  # a lone token attends to itself
    mid = E + (v @ b.attn.c_proj.weight + b.attn.c_proj.bias)
    return mlp0, mid + b.mlp(b.ln_2(mid))


def _llama_block0(hf, ids):
    E = hf.model.embed_tokens.weight[ids]
    b = hf.model.layers[0]
    cfg = hf.config
    mlp0 = b.mlp(b.post_attention_layernorm(E))
    v = b.self_attn.v_proj(b.input_layernorm(E)).view(len(ids), cfg.num_key_value_heads, -1)
    v = v.repeat_interleave(cfg.num_attention_heads // cfg.num_key_value_heads, dim=1).reshape(len(ids), -1)
    mid = E + b.self_attn.o_proj(v)
    return mlp0, mid + b.mlp(b.post_attention_layernorm(mid))


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
@torch.no_grad()
def test_effective_embeddings_match_the_hf_modules(name, request):
    model = request.getfixturevalue(name)
    hf = model.original_model
    ids = torch.tensor([11, 500, 7000, 50000])
    ref_mlp0, ref_block0 = (_gpt2_block0 if name == "tiny_gpt2" else _llama_block0)(hf, ids)
    torch.testing.assert_close(effective_embedding(model, ids, "mlp0"), ref_mlp0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(effective_embedding(model, ids, "block0"), ref_block0, rtol=1e-5, atol=1e-5)
    assert not any(h._forward_hooks for h in model.hook_dict.values())  # the early stop left no hook behind


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_weight_only_embeddings_read_the_same_from_the_model_and_its_weights(name, request):
    model = request.getfixturevalue(name)
    w = head_weights(model)
    ids = [11, 500, 7000]
    E = model.original_model.get_input_embeddings().weight.detach()[ids].double()  # HF's own table
    torch.testing.assert_close(effective_embedding(model, ids, "embed").double(), E)
    x = E - E.mean(-1, keepdim=True) if name == "tiny_gpt2" else E  # LayerNorm centres, RMSNorm does not
    ref = x / (x.square().mean(-1, keepdim=True) + 1e-5).sqrt()
    for source in (model, w):
        torch.testing.assert_close(effective_embedding(source, ids, "embed_normed"), ref)
    with pytest.raises(headscope.errors.BadInput, match="runs block 0"):
        effective_embedding(w, ids, "mlp0")


# --- OV logits by hand from the HF weights -----------------------------------------------------


def _hf_ov_logits(hf, layer: int, head: int, X: torch.Tensor) -> torch.Tensor:
    """``[n, vocab]`` logits of one head's OV circuit, written independently from the HF weights."""
    W_U = hf.lm_head.weight  # [vocab, d]
    if hasattr(hf, "transformer"):  # GPT-2: LayerNorm, Conv1D weights are [in, out]
        b = hf.transformer.h[layer]
        d = X.shape[-1]
        dh = d // hf.config.n_head
        x = (X - X.mean(-1, keepdim=True)) * b.ln_1.weight
        v = x @ b.attn.c_attn.weight[:, 2 * d + head * dh : 2 * d + (head + 1) * dh]
        out = v @ b.attn.c_proj.weight[head * dh : (head + 1) * dh]
        out = (out - out.mean(-1, keepdim=True)) * hf.transformer.ln_f.weight
    else:  # Llama: RMSNorm, Linear weights are [out, in], grouped key/value heads
        b = hf.model.layers[layer]
        cfg = hf.config
        dh = cfg.hidden_size // cfg.num_attention_heads
        kv = head // (cfg.num_attention_heads // cfg.num_key_value_heads)
        v = (X * b.input_layernorm.weight) @ b.self_attn.v_proj.weight[kv * dh : (kv + 1) * dh].T
        out = (v @ b.self_attn.o_proj.weight[:, head * dh : (head + 1) * dh].T) * hf.model.norm.weight
    return out @ W_U.T


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
@torch.no_grad()
def test_successor_counts_match_an_independent_computation(name, request):
    model = request.getfixturevalue(name)
    hf = model.original_model
    sets, skipped = usable_ordinal_sets(model.tokenizer, model.cfg.d_vocab)
    assert [s.name for s in sets] == list(ORDINAL_SETS) and not skipped  # GPT-2's tokenizer has them all
    res = successor_scores(model)
    ids = torch.tensor(sorted({t for s in sets for t in s.token_ids}))
    X, _ = (_gpt2_block0 if name == "tiny_gpt2" else _llama_block0)(hf, ids)
    expected = np.zeros((model.cfg.n_layers, model.cfg.n_heads))
    n_pairs = 0
    for s in sets:
        rows = torch.tensor([int((ids == t).nonzero()) for t in s.token_ids])
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):
                sub = _hf_ov_logits(hf, layer, head, X[rows])[:, list(s.token_ids)]  # restricted to the set
                expected[layer, head] += sum(int(sub[i].argmax()) == j for i, j in s.pairs())
        n_pairs += len(s.pairs())
    np.testing.assert_allclose(res.scores, expected / n_pairs, atol=1e-9)
    assert res.scores.max() > 0  # not a comparison of zeros


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
@torch.no_grad()
def test_copy_suppression_matches_ranks_over_the_full_vocabulary(name, request):
    model = request.getfixturevalue(name)
    hf = model.original_model
    ids = torch.tensor([15, 262, 1000, 4242, 31337, 50000])
    _, X = (_gpt2_block0 if name == "tiny_gpt2" else _llama_block0)(hf, ids)
    k = 5000  # a large k so that random heads give fractions that are not all zero
    low, high = self_rank_fractions(head_weights(model), effective_embedding(model, ids, "block0"), ids, k)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            logits = _hf_ov_logits(hf, layer, head, X)
            own = logits[torch.arange(len(ids)), ids][:, None]
            assert low[layer, head].item() == pytest.approx(((logits < own).sum(-1) < k).float().mean().item())
            assert high[layer, head].item() == pytest.approx(((logits > own).sum(-1) < k).float().mean().item())
    assert 0 < low.mean() < 1 and 0 < high.mean() < 1


def _paper_alpha(hf, tokens: torch.Tensor) -> torch.Tensor:
    """Gu et al.'s alpha_1 with plain transformers: ``[L, windows, H]``, the mean of A[:, 0] over every query."""
    with torch.no_grad():
        att = torch.stack(hf(tokens, output_attentions=True).attentions)  # [L, b, H, q, k]
    return att[..., :, 0].mean(-1)


def test_sink_role_matches_gu_et_al_computed_with_plain_transformers(tiny_llama, tiny_llama_dir, gpt2_tokenizer_dir):
    # Issue 19.5: the role is alpha_1 on 64-token windows of natural text with only the prefix the
    # model's own tokenizer adds (GPT-2's BPE adds none, so no BOS is prepended), threshold 0.3.
    from pydoc_data.topics import topics

    from transformers import AutoModelForCausalLM, AutoTokenizer

    res = SK.sink_scores_on_text(tiny_llama, n_sequences=5)
    windows, said = SK.paper_windows(tiny_llama, n_sequences=5)
    tokens = windows.tokens
    tok = AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir))
    assert tok("x").input_ids == tok("x", add_special_tokens=False).input_ids  # the tokenizer adds nothing...
    assert tokens.shape == (5, 64) and (tokens[:, 0] != 50256).all()  # ...so neither does headscope
    assert "no BOS" in said and res.first_token == said
    corpus = "\n\n".join(text for _, text in sorted(topics.items()))
    assert all(tok.decode(w) in corpus for w in tokens.tolist())  # each window is a run of the natural text
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), attn_implementation="eager")  # no bridge
    alpha = _paper_alpha(hf, tokens)
    np.testing.assert_allclose(res.alpha, alpha.mean(1).numpy(), atol=1e-6)
    np.testing.assert_allclose(res.sink_rate, (alpha > 0.3).double().mean(1).numpy())
    assert res.model_sink_rate == pytest.approx((alpha > 0.3).double().mean().item())
    assert res.sink_head_fraction == pytest.approx((alpha.mean(1) > 0.3).double().mean().item())
    with torch.no_grad():
        att = torch.stack(hf(tokens, output_attentions=True).attentions)
    np.testing.assert_allclose(res.sink, att[..., 1:, 0].mean(dim=(1, 3)).numpy(), atol=1e-6)


def test_sink_role_is_the_registry_declaration_and_reads_back_from_the_disk_cache(tiny_llama, tmp_path, monkeypatch):
    from headscope.pipeline.roles import analyze_heads
    from headscope.scores import score
    from headscope.scores.reads import on_natural_text

    monkeypatch.setenv("HEADSCOPE_CACHE", str(tmp_path))
    assert on_natural_text(score("attention_sink").reads) and score("attention_sink").threshold == 0.3
    assert not on_natural_text(score("first_token_random").reads) and score("first_token_random").threshold is None
    first = SK.sink_scores_on_text(tiny_llama, n_sequences=4, attention="eager")
    assert "sink_text_cached" not in first.timings and list(tmp_path.glob("scores/sinks-*.json"))
    again = SK.sink_scores_on_text(tiny_llama, n_sequences=4, attention="fused")
    assert again.timings.get("sink_text_cached") == 1.0
    np.testing.assert_allclose(again.alpha, first.alpha, atol=1e-9)
    for p in tmp_path.glob("scores/sinks-*.json"):
        p.unlink()
    fused = SK.sink_scores_on_text(tiny_llama, n_sequences=4, attention="fused")  # the other route, computed
    np.testing.assert_allclose(fused.alpha, first.alpha, atol=1e-5)
    a = analyze_heads(tiny_llama, seq_len=6, batch=2, icl=False, sink_windows=4, progress=False)
    np.testing.assert_allclose(a.induction.scores["attention_sink"], first.alpha, atol=1e-5)
    assert "first_token_random" in a.induction.scores  # the scan's random-token reading: a column, no role
    assert all("first_token_random" not in roles for roles in a.roles().values())


# --- in-context learning -------------------------------------------------------------------


@torch.no_grad()
def test_icl_score_and_head_ablation_match_plain_hf(tiny_llama):
    early, late, window, head = 5, 40, 48, (1, 2)
    res = icl_score(tiny_llama, heads=[head], early=early, late=late, window=window, max_windows=3, chunk_size=2)
    hf = tiny_llama.original_model
    tokens = natural_windows(tiny_llama, window=window, max_windows=3).tokens  # BOS + 48 document tokens

    def losses(logits):  # loss of document token i sits at logits position i (BOS is position 0)
        return F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")

    clean = losses(hf(tokens).logits)
    icl = clean[:, late] - clean[:, early]
    assert res.icl_score == pytest.approx(icl.mean().item(), abs=1e-4)
    assert res.loss_early == pytest.approx(clean[:, early].mean().item(), abs=1e-4)
    np.testing.assert_allclose(res.per_position_loss, clean.mean(0).numpy(), atol=1e-4)

    o_proj = hf.model.layers[head[0]].self_attn.o_proj
    dh = hf.config.hidden_size // hf.config.num_attention_heads
    part = slice(head[1] * dh, (head[1] + 1) * dh)
    seen = []
    handle = o_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0][..., part].reshape(-1, dh)))
    hf(tokens)
    handle.remove()
    mean = torch.cat(seen).mean(0)

    def ablate(m, args):
        x = args[0].clone()
        x[..., part] = mean
        return (x,)

    handle = o_proj.register_forward_pre_hook(ablate)
    ablated = losses(hf(tokens).logits)
    handle.remove()
    entry = res.ablations[0]
    assert (entry["layer"], entry["head"]) == head
    assert entry["icl_score"] == pytest.approx((ablated[:, late] - ablated[:, early]).mean().item(), abs=1e-4)
    assert entry["delta"] == pytest.approx(entry["icl_score"] - res.icl_score, abs=1e-6)
    assert entry["delta"] != 0.0
    # intervals: mean +- t(0.975, n-1) * SE over windows, the delta paired window by window (t(2) = 4.3027)
    d = (ablated[:, late] - ablated[:, early]) - icl
    for (lo, hi), x in ((res.icl_ci95, icl), (entry["delta_ci95"], d)):
        half = 4.3027 * x.std(unbiased=True).item() / 3**0.5
        assert (lo, hi) == pytest.approx((x.mean().item() - half, x.mean().item() + half), abs=1e-4)
    assert entry["delta_stderr"] == pytest.approx(d.std(unbiased=True).item() / 3**0.5, abs=1e-5)


def test_icl_fused_route_equals_eager_for_heads_in_two_layers(tiny_llama):
    # The default route (fused kernel) against eager attention, ablated heads in two layers (each
    # restarts at its own layer; the full-pass reference is the plain-HF test above).
    kw = dict(heads=[(1, 2), (2, 0)], early=5, late=40, window=48, max_windows=4, chunk_size=3)
    fast = icl_score(tiny_llama, **kw)
    slow = icl_score(tiny_llama, attention="eager", **kw)
    assert fast.icl_score == pytest.approx(slow.icl_score, abs=1e-5)
    for a, b in zip(fast.ablations, slow.ablations, strict=True):
        assert a["delta"] == pytest.approx(b["delta"], abs=1e-5) and a["delta"] != 0.0
        assert a["delta_ci95"] == pytest.approx(b["delta_ci95"], abs=1e-4)


def test_icl_full_logits_route_equals_the_sliced_losses(tiny_llama, monkeypatch):
    # A model whose logits are not its unembedding of the final norm's output takes full logits
    # (clean and ablated); both routes give the same numbers.
    import headscope.kinds.icl as icl_module

    kw = dict(heads=[(1, 2)], early=5, late=40, window=48, max_windows=3, chunk_size=2)
    sliced = icl_score(tiny_llama, **kw)
    monkeypatch.setattr(icl_module, "normed_route_ok", lambda model: False)
    full = icl_score(tiny_llama, **kw)
    np.testing.assert_allclose(sliced.per_position_loss, full.per_position_loss, atol=1e-5)
    assert sliced.icl_score == pytest.approx(full.icl_score, abs=1e-5)
    assert sliced.ablations[0]["delta"] == pytest.approx(full.ablations[0]["delta"], abs=1e-5)


def test_icl_reports_its_progress_after_every_chunk_of_windows(tiny_llama):
    seen = []
    kw = dict(heads=[(1, 2)], early=5, late=40, window=48, max_windows=3, chunk_size=2)
    icl_score(tiny_llama, **kw, progress=lambda stage, done, total: seen.append((stage, done, total)))
    clean, ablated = "ICL: clean pass over the windows", "ICL: L1H2 ablated"
    assert seen == [(clean, 0, 3), (clean, 2, 3), (clean, 3, 3), (ablated, 0, 3), (ablated, 2, 3), (ablated, 3, 3)]


def test_icl_rejects_positions_outside_the_window(tiny_llama):
    with pytest.raises(headscope.BadInput, match="early"):
        icl_score(tiny_llama, early=50, late=600, window=512)


# --- a tiny Llama built by hand: heads with known answers ----------------------------------------

DAYS = ORDINAL_SETS["days"]
HAND_VOCAB = (
    ["<bos>", "<unk>"] + DAYS + ORDINAL_SETS["months"] + list(string.ascii_uppercase) + [str(i) for i in range(1, 10)]
)
CONST = 127  # a residual coordinate every token writes 1 to: gives every query the same direction


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    """2 layers x 2 heads, d_model 128, d_head 64, one-hot embeddings over a 56-word vocabulary.

    L0H0 copies (OV = +identity on the tokens), L0H1 suppresses (OV = -identity), L1H0 maps
    each day to the next (Sunday -> Monday) and nothing else, L1H1 puts all its attention
    on the first token. Layer 0 attends uniformly, so its two heads cancel in the forward
    pass; MLP0 maps a normalised one-hot token to (about) itself.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    V = len(HAND_VOCAB)
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(HAND_VOCAB)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", unk_token="<unk>", eos_token="<bos>")
    cfg = LlamaConfig(
        hidden_size=128,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        vocab_size=V,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    hf = LlamaForCausalLM(cfg)
    eye = torch.eye(128)
    with torch.no_grad():
        for p in hf.parameters():
            p.zero_()
        for norm in [hf.model.norm] + [
            m for l in hf.model.layers for m in (l.input_layernorm, l.post_attention_layernorm)
        ]:
            norm.weight.fill_(1.0)
        E = hf.model.embed_tokens.weight
        E[torch.arange(V), torch.arange(V)] = 1.0
        E[:, CONST] = 1.0
        hf.lm_head.weight[torch.arange(V), torch.arange(V)] = 1.0
        a0, a1 = hf.model.layers[0].self_attn, hf.model.layers[1].self_attn
        a0.v_proj.weight[:V, :V] = eye[:V, :V]  # head 0 reads the token
        a0.v_proj.weight[64 : 64 + V, :V] = eye[:V, :V]  # head 1 reads the token
        a0.o_proj.weight[:V, :V] = eye[:V, :V]  # head 0 writes it back: copy
        a0.o_proj.weight[:V, 64 : 64 + V] = -eye[:V, :V]  # head 1 writes it negated: suppress
        mlp = hf.model.layers[0].mlp  # silu(x) * x / 64 on a normalised one-hot (x = 8): about x / 8
        mlp.gate_proj.weight.copy_(eye)
        mlp.up_proj.weight.copy_(eye)
        mlp.down_proj.weight.copy_(eye / 64)
        day = [HAND_VOCAB.index(d) for d in DAYS]
        for i, t in enumerate(day):  # L1H0: day i -> head dim i -> day i+1
            a1.v_proj.weight[i, t] = 1.0
            a1.o_proj.weight[day[(i + 1) % 7], i] = 1.0
        # L1H1: query from the constant coordinate, key from the BOS coordinate, in the
        # slowest rotary pair (dim 31 of the head: ~1e-4 rad per position), score 8 * 2 * 2 = 32
        a1.q_proj.weight[64 + 31, CONST] = 2.0
        a1.k_proj.weight[64 + 31, 0] = 2.0
    out = tmp_path_factory.mktemp("handmade")
    hf.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return headscope.load_model(str(out), device="cpu")


def test_handmade_copy_and_suppression_heads(handmade):
    cs = copy_suppression_scores(handmade, k=1)
    assert cs.n_tokens == len(HAND_VOCAB) - 2  # every ordinary token (BOS and UNK are special)
    np.testing.assert_array_equal(cs.copying_topk, [[1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(cs.copy_suppression, [[0.0, 1.0], [0.0, 0.0]])


def test_handmade_successor_head_maps_each_day_to_the_next(handmade):
    s = successor_scores(handmade)
    names = [x.name for x in s.sets]
    assert names == ["numbers", "days", "months", "letters"]  # the words the vocabulary has
    assert s.sets[1].token_ids == tuple(HAND_VOCAB.index(d) for d in DAYS) and s.sets[1].cyclic
    assert "cardinal_words" in s.skipped and "day_prefixes" in s.skipped
    np.testing.assert_array_equal(s.per_set["days"], [[0.0, 0.0], [1.0, 0.0]])
    for other in ("numbers", "months", "letters"):  # the head maps them to nothing: ties count against
        assert s.per_set[other].max() == 0.0
    n_pairs = 8 + 7 + 12 + 25  # 1..9 (not cyclic), days and months (cyclic), A..Z (not cyclic)
    assert s.scores[1, 0] == pytest.approx(7 / n_pairs)


def test_handmade_sink_head_on_text(handmade):
    # L1H1 attends to the <bos> token. Its tokenizer adds no BOS, so in Gu et al.'s setting the
    # windows start with a word and the head is no sink there; a tokenizer that adds <bos> (the
    # Llama case) puts it first, and then the head is a sink on every window.
    import dataclasses

    plain = SK.sink_scores_on_text(handmade, n_tokens=16, n_sequences=4)
    assert handmade.first_token.own_prefix == () and plain.alpha[1, 1] < 0.3 and plain.sink_rate[1, 1] == 0.0
    bos = handmade.first_token.id
    adds_bos = dataclasses.replace(handmade, first_token=dataclasses.replace(handmade.first_token, own_prefix=(bos,)))
    assert (SK.paper_windows(adds_bos, n_tokens=16, n_sequences=4)[0].tokens[:, 0] == bos).all()
    res = SK.sink_scores_on_text(adds_bos, n_tokens=16, n_sequences=4)
    uniform = sum(1 / (q + 1) for q in range(1, 16)) / 15
    assert res.sink[1, 1] > 0.999 and res.alpha[1, 1] > 0.999 and res.sink_rate[1, 1] == 1.0
    for layer, head in [(0, 0), (0, 1), (1, 0)]:  # q = k = 0: uniform attention
        assert res.sink[layer, head] == pytest.approx(uniform, abs=1e-6)
        assert res.sink_rate[layer, head] == 0.0
    assert [(l, h) for l, h, _ in res.sink_heads()] == [(1, 1)]
    assert res.model_sink_rate == 0.25


# --- SmolLM2: what the real model shows (numbers recorded in docs/kinds.md) ------------------------


@pytest.mark.smollm2
def test_smollm2_ordinal_sets(smollm2):
    sets, skipped = usable_ordinal_sets(smollm2.tokenizer, smollm2.cfg.d_vocab)
    by_name = {s.name: s for s in sets}
    assert by_name["numbers"].words == tuple(str(i) for i in range(1, 10))  # digits are split: 1..9, no space
    assert by_name["days"].words[0] == " Monday" and by_name["letters"].words[-1] == " Z"
    assert set(skipped) == {"day_prefixes"} and "' Tue'" in skipped["day_prefixes"]


@pytest.mark.smollm2
@torch.no_grad()
def test_smollm2_successor_scores_match_an_independent_computation(smollm2):
    hf = smollm2.original_model
    w = head_weights(smollm2)
    sets, _ = usable_ordinal_sets(smollm2.tokenizer, smollm2.cfg.d_vocab)
    ids = torch.tensor(sorted({t for s in sets for t in s.token_ids}))
    X, _ = _llama_block0(hf, ids)
    counts = successor_counts(w, X, ids, sets)
    for layer, head in [(23, 3), (4, 3), (0, 0)]:
        for s in sets:
            rows = torch.tensor([int((ids == t).nonzero()) for t in s.token_ids])
            sub = _hf_ov_logits(hf, layer, head, X[rows])[:, list(s.token_ids)]
            assert counts[s.name][layer, head].item() == sum(int(sub[i].argmax()) == j for i, j in s.pairs())


@pytest.mark.smollm2
@torch.no_grad()
def test_smollm2_copy_suppression_of_layer_24_matches_full_vocabulary_ranks(smollm2):
    import dataclasses

    hf = smollm2.original_model
    w = head_weights(smollm2)
    w24 = dataclasses.replace(w, W_Q=w.W_Q[24:25], W_V=w.W_V[24:25], W_O=w.W_O[24:25])  # one layer keeps the test short
    ids = torch.arange(1000, 49000, 1500)  # 32 tokens
    X = effective_embedding(smollm2, ids, "block0")
    low, _ = self_rank_fractions(w24, X, ids, k=10)
    for head in range(smollm2.cfg.n_heads):
        logits = _hf_ov_logits(hf, 24, head, X)
        own = logits[torch.arange(len(ids)), ids][:, None]
        assert low[0, head].item() == pytest.approx(((logits < own).sum(-1) < 10).float().mean().item())
    assert low[0, 4] > 0.3  # L24H4 is SmolLM2's clearest copy-suppression head


@pytest.mark.smollm2
@torch.no_grad()
def test_smollm2_sinks_match_plain_transformers_in_the_papers_setting(smollm2):
    # SmolLM2's own tokenizer adds no <|im_start|>, so Gu et al.'s code feeds 64 text tokens: so does headscope.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res = SK.sink_scores_on_text(smollm2, n_sequences=6)
    windows, _ = SK.paper_windows(smollm2, n_sequences=6)
    tok = AutoTokenizer.from_pretrained(smollm2.source.path)
    assert tok("x").input_ids == tok("x", add_special_tokens=False).input_ids
    assert windows.tokens.shape == (6, 64) and (windows.tokens[:, 0] != tok.bos_token_id).all()
    hf = AutoModelForCausalLM.from_pretrained(smollm2.source.path, attn_implementation="eager")
    alpha = _paper_alpha(hf, windows.tokens)
    np.testing.assert_allclose(res.alpha, alpha.mean(1).numpy(), atol=1e-4)
    np.testing.assert_allclose(res.sink_rate, (alpha > 0.3).double().mean(1).numpy())
    assert len(res.sink_heads()) > 0  # Gu et al.: sinks are universal in trained LMs


def test_a_tokenizer_without_ordinal_sets_leaves_the_successor_score_unmeasured_not_zero(tiny_gpt2):
    """Before: every head scored 0.000 and "highest: L0H0 0.00" on a tokenizer with no set (the toy's)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from headscope.render.induction_figures import score_heatmap
    from headscope.render.views.induction_view import role_holders
    from headscope.scores.successor import score_successors
    from headscope.scores.weight_score import WeightInputs

    vocab = ["<bos>", "<unk>"] + [f"t{i}" for i in range(20)]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", unk_token="<unk>")
    w = head_weights(tiny_gpt2)
    inputs = WeightInputs(tokenizer=tok, d_vocab=len(vocab), embed=lambda ids, c: torch.zeros(len(ids), 64))
    r = score_successors(w, inputs)
    assert r.sets == [] and set(r.skipped) == set(ORDINAL_SETS)
    assert r.scores.shape == (w.n_layers, w.n_heads) and np.isnan(r.scores).all()
    assert '"scores": [[null' in r.to_json()  # JSON says "not measured", not 0
    assert role_holders(r.top_heads(3), 0.5) == "not measured (see the notes)"
    res = headscope.scan_induction(tiny_gpt2, seq_len=5, batch=2, ablate=False, sample=False, progress=False)
    res.scores["successor"] = r.scores
    fig = score_heatmap(res, "successor")
    assert "not measured" in fig.axes[0].get_title()


def test_an_icl_score_whose_interval_includes_zero_says_so(tmp_path):
    """-1.045 nats [-2.099, +0.010] stood in bold on the heads page with nothing to say the interval includes 0."""
    from headscope.render.views.heads_view import describe_icl, icl_html
    from headscope.results.icl_result import ICLResult

    def icl(lo, hi):
        return ICLResult(-1.045, 0.5, 4.0, 2.955, 50, 500, np.array([4.0, 3.0]), 40, "40 windows", "mean",
                         icl_ci95=(lo, hi))  # fmt: skip

    wide, narrow = icl(-2.099, 0.010), icl(-2.0, -0.1)
    assert "The interval includes 0" in icl_html(wide) and "The interval includes 0" in describe_icl(wide)[0]
    assert "includes 0" not in icl_html(narrow) and "includes 0" not in describe_icl(narrow)[0]
