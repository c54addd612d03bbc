"""What heads write: direct logit attribution, OV circuits, and the induction story of a head.

>>> import headscope
>>> model = headscope.load_model(tiny_gpt2_dir)   # or the default: headscope.load_model()
>>> len(headscope.logits.logit_attribution(model, "a b c a b c").top(5))
5
>>> len(headscope.logits.repeat_logit_effects(model, seq_len=8, batch=2).top(3))
3
>>> headscope.logits.ov_circuit(model, "L1H2", [" cat"]).to_frame()["token"].tolist()
[' cat']
"""

from ..results.logit_results import LogitAttribution, OVRows, RepeatLogitEffects
from .dla import direct_effects, logit_attribution, unembedding
from .ov_rows import ov_circuit, ov_rows
from .repeats import repeat_logit_effects
from .story import InductionStories, InductionStory, induction_stories

__all__ = [
    "InductionStories",
    "InductionStory",
    "LogitAttribution",
    "OVRows",
    "RepeatLogitEffects",
    "direct_effects",
    "induction_stories",
    "logit_attribution",
    "ov_circuit",
    "ov_rows",
    "repeat_logit_effects",
    "unembedding",
]
