"""The qk page says what it measured: each head decomposed where it attends, composition as a weight product,
every score column defined, the scan's size named, "text N" throughout, the colour scale as it is."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import headscope
from headscope.models.inputs import encode
from headscope.qk import analyze_qk, decompose_qk
from headscope.qk.decompose import choose_pairs, previous_pairs, stripe_pairs
from headscope.render.lookup import view_of
from headscope.render.qk_figures import plot_decomposition
from headscope.results.qk_results import QK_DEFINITIONS, QUICK_SCAN, WEIGHT_PRODUCT
from headscope.settings import ScanSettings

REPEATED = "The cat sat on the mat. The cat sat on the mat."
THETA = 2 * math.pi / 64  # the position code's step: keys one step apart differ by this angle


@pytest.fixture(scope="module")
def previous_token_gpt2(tmp_path_factory, gpt2_tokenizer_dir):
    """A 1-layer GPT-2 whose head 0 is built to attend to the key just before the query (offset 1).

    Positions are a unit circle, ``wpe[p] = a (cos pθ, sin pθ, -cos pθ, -sin pθ, 0, ...)`` (mean 0, so
    LayerNorm keeps it), token embeddings near zero; head 0's query reads that circle and its key reads it
    turned by one step, so ``q_i . k_j`` peaks at ``j = i - 1``.
    """
    from conftest import save_tiny
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=4, n_embd=64, n_positions=64, vocab_size=50257)).eval()
    with torch.no_grad():
        hf.transformer.wte.weight.mul_(0.001)
        p = torch.arange(64, dtype=torch.float32) * THETA
        wpe = torch.zeros(64, 64)
        wpe[:, 0], wpe[:, 1], wpe[:, 2], wpe[:, 3] = p.cos(), p.sin(), -p.cos(), -p.sin()
        hf.transformer.wpe.weight.copy_(wpe)
        attn = hf.transformer.h[0].attn
        W, b = attn.c_attn.weight, attn.c_attn.bias  # x @ W: columns 0-63 query, 64-127 key (head 0: first 16)
        W[:, :16] = 0
        W[:, 64:80] = 0
        b[:16] = 0
        b[64:80] = 0
        c = 20.0
        W[0, 0], W[1, 1] = c, c  # query: the circle at i
        cs, sn = math.cos(THETA), math.sin(THETA)
        W[0, 64], W[1, 64] = c * cs, -c * sn  # key: the circle at j turned one step on, at j + 1
        W[0, 65], W[1, 65] = c * sn, c * cs
    out = save_tiny(hf, gpt2_tokenizer_dir, tmp_path_factory.mktemp("gpt2-prev"))
    return headscope.load_model(str(out), device="cpu")


def test_a_head_that_attends_one_back_is_decomposed_one_back(previous_token_gpt2):
    m = previous_token_gpt2
    seq = encode(m, REPEATED)
    live = headscope.qk_scores(m, ["0.0"], seq)
    pattern = np.asarray(live.patterns[0][0])
    rows = np.arange(2, len(seq))
    assert pattern[rows, rows - 1].mean() > 0.8, "the hand-built head attends to the previous token"
    d = decompose_qk(m, "0.0", seq, stripe="attended")
    assert d.stripe == "previous_token"
    assert d.pairs == previous_pairs(seq.ids) and all(i - j == 1 for i, j in d.pairs)
    assert d.attention > 0.8 and "previous-token stripe" in d.how and "attends most" in d.how
    # the same head on the induction stripe: where it does not attend, and the decomposition says so
    ind = decompose_qk(m, "0.0", seq)
    assert ind.stripe == "induction" and ind.attention < 0.05
    assert abs(d.key_contrib.sum() - d.score) < 1e-4 and abs(d.score - d.model_score) < 1e-4


def test_choose_pairs_takes_the_stripe_with_more_attention(tiny_gpt2):
    seq = encode(tiny_gpt2, REPEATED)
    T = len(seq)
    prev = np.zeros((T, T))
    prev[np.arange(1, T), np.arange(T - 1)] = 1.0
    prev[0, 0] = 1.0
    pairs, how, stripe = choose_pairs(seq, prev, None, None, "attended")
    assert stripe == "previous_token" and all(i - j == 1 for i, j in pairs)
    assert "mean attention 1.00 there" in how and "the induction stripe: 0.00" in how
    ind = np.zeros((T, T))
    for i, j in choose_pairs(seq, prev, None, None, "induction")[0]:
        ind[i, j] = 1.0
    pairs, how, stripe = choose_pairs(seq, ind, None, None, "attended")
    assert stripe == "induction" and "the previous-token stripe: 0.00" in how
    # a chosen query keeps its most-attended key, no stripe
    assert choose_pairs(seq, prev, 5, None, "attended")[1:] == (
        "query 5 and its most-attended key 4 (BOS excluded)",
        None,
    )
    with pytest.raises(headscope.errors.BadInput, match="stripe"):
        decompose_qk(tiny_gpt2, "1.0", seq, stripe="offset-1")


@pytest.fixture(scope="module")
def analysis(tiny_llama):
    return analyze_qk(tiny_llama, [REPEATED, "a b c d a b c d"], top=2, max_tokens=32)


def test_every_decomposition_sits_where_its_head_attends_most(analysis):
    for d in analysis.decompositions:
        p = np.asarray(analysis.live.patterns[d.sequence_index][analysis.live.head_index((d.layer, d.head))])
        stripes = {"induction": stripe_pairs(d.sequence.ids), "previous_token": previous_pairs(d.sequence.ids)}
        means = {n: float(np.mean([p[i, j] for i, j in got])) for n, got in stripes.items() if got}
        assert d.stripe == max(means, key=lambda n: means[n])
        assert d.attention == pytest.approx(means[d.stripe], abs=1e-6)


def test_figure_titles_name_the_text_and_the_stripe_never_why_it_attends(analysis):
    d = analysis.decompositions[-1]
    fig = plot_decomposition(d)
    title = fig._suptitle.get_text().replace("\n", " ")
    assert f"text {d.sequence_index + 1}" in title and "why it attends" not in title
    assert "stripe" in title and title.count("mean attention") == 1  # said once, with the stripe
    from headscope.render.qk_figures import plot_live

    live_title = plot_live(analysis.live, 1, 0)._suptitle.get_text()
    assert "text 2" in live_title and "sequence" not in live_title


def test_page_says_composition_is_a_weight_product_and_defines_every_score_column(analysis):
    view = view_of(analysis)
    legend = view.legend(analysis)
    assert "K-compose with" not in " ".join(QK_DEFINITIONS.values())
    assert WEIGHT_PRODUCT in legend["composition"] and "headscope circuit" in legend["composition"]
    assert "induction score" in legend and "previous-token score" in legend
    assert "key = query - 1" in legend["previous-token score"]
    for text in (legend["induction score"], legend["previous-token score"]):
        assert f"{QUICK_SCAN['batch']} sequences x {QUICK_SCAN['seq_len']} random tokens" in text and "10 x 50" in text
    html = "".join(s.html for s in view.sections(analysis))
    assert "why it attends" not in html.lower() and "largest non-BOS score" not in html
    assert "largest |score| of any chosen head on that text" in html
    assert WEIGHT_PRODUCT in html
    for f in analysis.findings():
        assert "sequence" not in f
    assert any("of text 1" in f for f in analysis.findings()) or not analysis.findings()


def test_the_quick_scan_is_named_with_its_size_wherever_its_scores_are_shown(analysis):
    said = f"quick scan ({QUICK_SCAN['batch']} sequences x {QUICK_SCAN['seq_len']} random tokens"
    full = ScanSettings()
    assert any(said in n for n in analysis.notes)
    assert f"`headscope induction`'s scan of {full.batch} x {full.seq_len}" in analysis.scan_words
    view = view_of(analysis)
    html = "".join(s.html for s in view.sections(analysis))
    assert said in html and said in view.legend(analysis)["induction score"]
    assert analysis.to_dict()["scan_scores_from"] == analysis.scan_words
