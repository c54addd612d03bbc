"""SmolLM2's induction circuit by path patching (docs/circuits.md), on the real weights.

The path from previous-token head L16H0 into induction head L18H6's keys is the strongest of the
layer-14..17 senders, its interval above L17H8's; the numbers agree with the plain-`transformers`
reference of tests/test_circuits_patching.py to 1e-4 of the metric (grouped-query keys, rotary, RMSNorm).
"""

from __future__ import annotations

import numpy as np
import pytest

from headscope.circuits import induction_task
from headscope.circuits.path_patching import Receiver, path_metrics, path_patching
from headscope.circuits.runs import cache_run

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]


def test_l16h0_feeds_l18h6s_keys_most_and_matches_plain_transformers(smollm2):
    from test_circuits_patching import Parts, _hf, reference_path

    task = induction_task(smollm2, n_examples=4, seq_len=30, seed=0)
    caches = (cache_run(smollm2, task.clean, task), cache_run(smollm2, task.corrupt, task))
    senders = [(l, h) for l in range(14, 18) for h in range(9)]
    pp = path_patching(smollm2, task, senders, Receiver("k", 18, 6), caches=caches)
    (s1, _, e1, lo1, _), (s2, _, e2, _, hi2) = pp.top(2)
    assert (s1, s2) == ("L16H0", "L17H8") and lo1 > hi2 and e1 > 0.1
    assert "key/value head 2" in " ".join(pp.notes)
    p = Parts(_hf(smollm2.source.path))  # the same weights, as a plain transformers model
    paths = [((16, 0), Receiver("k", 18, 6)), ((18, 6), Receiver.logits())]
    got = path_metrics(smollm2, task, *caches, paths)
    want = np.stack([reference_path(p, task, s, r) for s, r in paths])
    np.testing.assert_allclose(got, want, atol=1e-4 * float(np.abs(want).max()), rtol=0)
