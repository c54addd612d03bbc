"""ov_circuit reads token ids as token_qk does: integers only; 5.0 is BadInput in both, not a token in one."""

from __future__ import annotations

import numpy as np
import pytest

import headscope


@pytest.mark.parametrize("tokens", [[5.0], [5, 2.5], 5.0, [None]])
def test_a_non_integer_token_id_is_refused_as_token_qk_refuses_it(tiny_gpt2, tokens):
    with pytest.raises(headscope.BadInput, match="integer token ids, got"):
        headscope.ov_circuit(tiny_gpt2, "1.2", tokens)
    with pytest.raises(headscope.BadInput, match="token ids must be a list of integers"):
        headscope.token_qk(tiny_gpt2, "1.2", tokens if isinstance(tokens, list) else [tokens])


def test_integer_ids_of_any_integer_type_are_read(tiny_gpt2):
    want = headscope.ov_circuit(tiny_gpt2, "1.2", [5, 6]).token_ids
    assert headscope.ov_circuit(tiny_gpt2, "1.2", np.array([5, 6])).token_ids == want == [5, 6]
    assert headscope.ov_circuit(tiny_gpt2, "1.2", np.int64(5)).token_ids == [5]
