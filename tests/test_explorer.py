"""The live explorer (`headscope serve`): its computations against the project's own analyses, and its API."""

from __future__ import annotations

import pytest

from headscope.explorer import Explorer


@pytest.fixture(scope="module", params=["tiny_llama", "tiny_gpt2"])
def explorer(request):
    return Explorer(request.getfixturevalue(request.param), max_tokens=128)


TEXT = "The cat sat on the mat. The cat sat on the mat."


def test_text_view_smoke(explorer):
    v = explorer.text_view(TEXT)
    assert v["n_tokens"] == len(v["tokens"])
    hv = explorer.head_view(TEXT, "L1H2", 5)
    pv = explorer.position_view(TEXT, 5)
    print(v["columns"], hv["qk"], pv["top_heads"][:3])
