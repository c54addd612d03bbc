"""GPT-2 small's IOI circuit (Wang et al. 2022, arXiv 2211.00593), checked by path patching as published.

Name movers 9.9, 9.6, 10.0 copy the indirect object's name to the logits; S-inhibition heads
7.3, 7.9, 8.6, 8.10 move the subject's duplicate signal into the name movers' queries. On ABBA
prompts with the ABC corruption (every name replaced by another), the name movers must be among
the strongest direct paths to the logits, and the S-inhibition heads among the strongest senders
into a name mover's queries. Runs only where the real ``gpt2`` weights are cached (the hub is not
reachable on the machines headscope is developed on, so this has never run there).
"""

from __future__ import annotations

import itertools
import json

import pytest

from test_gpt2_published import needs_gpt2

NAME_MOVERS = {"L9H9", "L9H6", "L10H0"}
S_INHIBITION = {"L7H3", "L7H9", "L8H6", "L8H10"}
NAMES = [" Mary", " John", " Tom", " James", " Anna", " Paul", " Sarah", " David", " Kate", " Mark"]
TEMPLATES = [  # the same token count each (one batch)
    "When{A} and{B} went to the store,{B} gave a drink to",
    "When{A} and{B} went to the park,{B} gave a ball to",
    "When{A} and{B} got to the house,{B} gave a book to",
]


def ioi_pairs(path, n: int = 24) -> None:
    """ABBA prompts (answer: A) and their ABC corruption (three other names), one JSON line each."""
    rows = []
    for i, (a, b) in enumerate(itertools.islice(itertools.permutations(NAMES, 2), n)):
        t = TEMPLATES[i % len(TEMPLATES)]
        others = [x for x in NAMES if x not in (a, b)]
        c1, c2, c3 = others[i % 8], others[(i + 1) % 8], others[(i + 2) % 8]
        clean = t.replace("{A}", a).replace("{B}", b)
        corrupt = t.replace("{A}", c1).replace("{B}", c2, 1).replace("{B}", c3)
        rows.append(json.dumps({"clean": clean, "corrupt": corrupt, "answer": a, "wrong": b}))
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def gpt2_ioi(tmp_path_factory):
    import headscope
    from headscope.circuits import load_pairs

    model = headscope.load_model("gpt2", device="cpu")
    p = tmp_path_factory.mktemp("ioi") / "ioi.jsonl"
    ioi_pairs(p)
    return model, load_pairs(model, p)


@needs_gpt2
def test_name_movers_are_among_the_strongest_direct_paths_to_the_logits(gpt2_ioi):
    from headscope.circuits.path_patching import Receiver, path_patching

    model, task = gpt2_ioi
    pp = path_patching(model, task, None, Receiver.logits())
    top = {s for s, _, e, _, _ in pp.top(6) if e > 0}
    assert len(NAME_MOVERS & top) >= 2, pp.top(6)


@needs_gpt2
def test_s_inhibition_heads_feed_the_name_movers_queries(gpt2_ioi):
    from headscope.circuits.path_patching import Receiver, path_patching

    model, task = gpt2_ioi
    pp = path_patching(model, task, None, Receiver("q", 9, 9))
    top = {s for s, _, _, _, _ in pp.top(8)}
    assert len(S_INHIBITION & top) >= 2, pp.top(8)


def test_the_ioi_pairs_line_up_on_the_gpt2_tokenizer(tiny_gpt2, tmp_path):
    """What runs everywhere: the prompts tokenise to aligned pairs with one-token names (GPT-2's own tokenizer)."""
    from headscope.circuits import load_pairs

    p = tmp_path / "ioi.jsonl"
    ioi_pairs(p)
    task = load_pairs(tiny_gpt2, p)
    assert task.n_examples == 24 and (task.answer != task.wrong).all()
    assert ((task.clean != task.corrupt).sum(1) == 3).all()  # exactly the three names differ
