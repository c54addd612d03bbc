"""Scoring functions fed hand-made attention patterns give exactly the expected numbers."""

import torch

from headscope.scores import RepeatLayout, prepare, reduce_pattern, score
from headscope.scores.reads import prefix_mask


def one_hot_pattern(n: int, target) -> torch.Tensor:
    """[1, 1, n, n] pattern where query q puts all its attention on key target(q)."""
    p = torch.zeros(1, 1, n, n)
    for q in range(n):
        p[0, 0, q, target(q)] = 1.0
    return p


def mean_of(sum_count):
    s, c = sum_count
    return (s / c).item()


LAYOUT = RepeatLayout(seq_len=4, repeats=2, bos=True)  # [BOS] a b c d a b c d -> 9 tokens
TOKENS = torch.tensor([[0, 11, 12, 13, 14, 11, 12, 13, 14]])


def read(name, pattern, layout=LAYOUT, tokens=TOKENS):
    """(sum, count) of the registry's score ``name`` read from ``pattern``, as the scan reads it."""
    reads = score(name).reads
    return reduce_pattern(reads, pattern, layout, prepare(reads, tokens, layout))


def test_perfect_induction_head_scores_one_and_others_zero():
    s = LAYOUT.seq_len
    # later-repeat queries attend to q - s + 1; earlier queries to BOS.
    p = one_hot_pattern(9, lambda q: q - s + 1 if q >= LAYOUT.later_start else 0)
    assert mean_of(read("induction", p)) == 1.0
    assert mean_of(read("duplicate_token", p)) == 0.0
    assert mean_of(read("prefix_matching", p)) == 1.0


def test_previous_token_head_scores_one_on_previous_token_only():
    p = one_hot_pattern(9, lambda q: max(q - 1, 0))
    assert mean_of(read("previous_token", p)) == 1.0
    assert mean_of(read("induction", p)) == 0.0


def test_duplicate_token_head_scores_one():
    s = LAYOUT.seq_len
    p = one_hot_pattern(9, lambda q: q - s if q >= LAYOUT.later_start else 0)
    assert mean_of(read("duplicate_token", p)) == 1.0
    assert mean_of(read("induction", p)) == 0.0


def test_induction_counts_only_later_repeat_queries_and_averages_them():
    # Half the later-repeat queries are perfect induction, the other half attend to BOS.
    s = LAYOUT.seq_len
    p = one_hot_pattern(9, lambda q: q - s + 1 if q in (5, 6) else 0)
    s_sum, count = read("induction", p)
    assert count == 4  # queries 5..8, one sequence
    assert s_sum.item() == 2.0


def test_uniform_attention_gives_one_over_number_of_keys():
    n = 9
    p = torch.tril(torch.ones(n, n))
    p = (p / p.sum(-1, keepdim=True))[None, None]
    expected = sum(1 / (q + 1) for q in range(5, 9)) / 4  # later queries q see q+1 keys
    assert abs(mean_of(read("induction", p)) - expected) < 1e-7
    expected_prev = sum(1 / (q + 1) for q in range(1, 9)) / 8
    assert abs(mean_of(read("previous_token", p)) - expected_prev) < 1e-7


def test_prefix_matching_sums_over_every_earlier_copy_with_four_repeats():
    layout = RepeatLayout(seq_len=2, repeats=4, bos=True)  # [BOS] a b a b a b a b
    tokens = torch.tensor([[0, 5, 6, 5, 6, 5, 6, 5, 6]])
    n = 9
    p = torch.zeros(1, 1, n, n)
    q = 7  # token a in repeat 4: earlier a's at 1, 3, 5 -> followers at 2, 4, 6
    p[0, 0, :, 0] = 1.0
    p[0, 0, q] = 0.0
    p[0, 0, q, [2, 4, 6]] = torch.tensor([0.2, 0.3, 0.4])
    p[0, 0, q, 0] = 0.1
    mask = prefix_mask(tokens, layout)
    assert mask[0, q - layout.later_start].nonzero().squeeze(1).tolist() == [2, 4, 6]
    s_sum, count = read("prefix_matching", p, layout, tokens)
    assert count == 6  # queries 3..8
    assert abs(s_sum.item() - 0.9) < 1e-6


def test_layout_without_bos_shifts_every_position():
    layout = RepeatLayout(seq_len=3, repeats=2, bos=False)  # a b c a b c
    assert layout.n_tokens == 6 and layout.later_start == 3
    p = one_hot_pattern(6, lambda q: q - 3 + 1 if q >= 3 else 0)
    assert mean_of(read("induction", p, layout, tokens=None)) == 1.0


# --- the registry is the only source --------------------------------------------------------


def test_pass_scores_declare_the_positions_they_average():
    from headscope.scores.layout import first_repeat_targets, later_repeat_targets

    # 1 BOS + 3 repeats of 5: position p predicts token p + 1; repeat 1's targets are tokens 1..5
    lay = RepeatLayout(seq_len=5, repeats=3, bos=True)
    first, later = score("direct_logit_first").from_pass, score("direct_logit_later").from_pass
    assert first is first_repeat_targets and later is later_repeat_targets  # the layout's one rule
    assert first(lay).tolist() == [0, 1, 2, 3, 4]
    assert later(lay).tolist() == list(range(6, 15))  # not 5: the first token of repeat 2 has no context
    no_bos = RepeatLayout(seq_len=5, repeats=2, bos=False)  # token 0 has nothing before it: no target there
    assert first(no_bos).tolist() == [0, 1, 2, 3]


def test_one_role_filter_keeps_registry_order_and_needs_both_score_and_threshold():
    from headscope.scores import SCORES, roles_present

    everything = {s.name: None for s in SCORES}
    thresholds = {s.name: 0.5 for s in SCORES if s.threshold is not None}
    names = [s.name for s in roles_present(everything, thresholds)]
    assert names == [s.name for s in SCORES if s.threshold is not None]  # no pass score has a role
    assert [s.name for s in roles_present({"copying": 0, "induction": 0}, {"copying": 0.7})] == ["copying"]


def test_weight_score_notes_are_described_by_their_declaration(monkeypatch):
    import dataclasses

    from headscope.scores import registry

    notes = {"successor": {"sets": ["days"], "skipped": {"letters": "'A' is more than one token"}}, "copying": {}}
    assert registry.weight_notes(notes) == [
        "Successor score's ordinal sets: days (skipped: letters: 'A' is more than one token)."
    ]
    # a new weight score with its own notes needs its declaration only
    new = dataclasses.replace(registry.score("copying"), name="new_kind", describe_notes=lambda n: f"{n['k']} things")
    monkeypatch.setattr(registry, "SCORES", (*registry.SCORES, new))
    assert registry.weight_notes({**notes, "new_kind": {"k": 3}})[-1] == "3 things"
