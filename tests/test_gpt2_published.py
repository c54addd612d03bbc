"""Published GPT-2 small facts, checked when the real weights are in the Hugging Face cache.

The hub is unreachable on the machines headscope is developed on, so this runs only where
someone has `gpt2` cached (e.g. after one online run); elsewhere it is skipped with the reason.
"""

import pytest


def _gpt2_cached() -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache("gpt2", "model.safetensors"), str)
    except Exception:
        return False


pytestmark = pytest.mark.skipif(
    not _gpt2_cached(),
    reason="real GPT-2 weights are not in the Hugging Face cache "
    "(the hub is unreachable here); run once online to enable this test",
)


@pytest.fixture(scope="module")
def gpt2_scan():
    import headscope

    return headscope.scan_induction(headscope.load_model("gpt2", device="cpu"), top_k=5, progress=False)


def test_arena_induction_heads_are_found(gpt2_scan):
    top = {(l, h) for l, h, _ in gpt2_scan.top_heads("induction", 8)}
    assert len(top & {(5, 1), (5, 5), (6, 9), (7, 2), (7, 10)}) >= 4


def test_previous_token_head_4_11_is_near_perfect(gpt2_scan):
    assert gpt2_scan.scores["previous_token"][4, 11] > 0.9


def test_duplicate_token_heads(gpt2_scan):
    top = {(l, h) for l, h, _ in gpt2_scan.top_heads("duplicate_token", 6)}
    assert len(top & {(0, 1), (0, 10), (3, 0)}) >= 2
