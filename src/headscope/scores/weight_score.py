"""The contract of a weight score: maths from the head weights and a few given inputs.

A weight score of the registry is a function ``(HeadWeights, WeightInputs) -> WeightScore``.
It runs no model: what it needs beyond the weights (the tokenizer, effective embeddings
through block 0) comes in :class:`WeightInputs`, made by the layer allowed to run the model
(:func:`headscope.models.embedding.weight_inputs`). A hand-built ``WeightInputs`` tests a
score on a hand-built case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class WeightInputs:
    """What a weight score may read besides the head weights.

    ``embed(token_ids, convention)``: ``[n, d_model]`` effective embeddings (conventions of
    :mod:`headscope.models.embedding`); ``tokenizer`` and ``d_vocab``: which token ids exist.
    """

    tokenizer: Any
    d_vocab: int
    embed: Callable[[torch.Tensor, str], torch.Tensor]


@dataclass
class WeightScore:
    """One weight score of every head: ``values`` ``[n_layers, n_heads]`` and ``notes`` on how it was computed.

    ``notes`` is plain JSON data (which token sets, sample size, convention); the score's
    ``describe_notes`` in the registry turns it into a sentence.
    """

    values: torch.Tensor
    notes: dict = field(default_factory=dict)
