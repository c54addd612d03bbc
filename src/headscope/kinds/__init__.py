"""More kinds of heads, each defined as its paper defines it (issue 12).

* :mod:`.sink` -- attention sinks (Gu et al. 2024): pattern reductions for the scan's pass,
  and :func:`sink_scores_on_text` on natural text.
* :mod:`.weight_kinds` -- successor heads (Gould et al. 2023) and copy suppression
  (McDougall et al. 2023), the registry's weight maths run on a loaded model.
* :mod:`.icl` -- Olsson et al.'s in-context learning score and each head's share in it.

Shared pieces: :mod:`headscope.models.embedding` (effective embeddings through block 0),
:mod:`headscope.scores.ov_factors` (a head's OV circuit as two low-rank factors),
:mod:`.documents` (natural text with no download).
"""

from ..scores.copy_suppression import CopySuppressionScores
from ..scores.successor import SuccessorScores, usable_ordinal_sets
from .icl import ICLResult, icl_score
from .sink import SinkScores, first_token_sum, sink_rate_sum, sink_scores_on_text
from .weight_kinds import copy_suppression_scores, successor_scores

__all__ = [
    "CopySuppressionScores",
    "ICLResult",
    "SinkScores",
    "SuccessorScores",
    "copy_suppression_scores",
    "first_token_sum",
    "icl_score",
    "sink_rate_sum",
    "sink_scores_on_text",
    "successor_scores",
    "usable_ordinal_sets",
]
