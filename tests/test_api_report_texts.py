"""build_report takes one text as a plain string, as every other analysis does."""

from __future__ import annotations

from headscope.pipeline.report_builder import texts_to_sequences


def test_one_string_is_one_text_not_one_per_character(tiny_gpt2):
    text = "a b c a b c"
    (seq,) = texts_to_sequences(tiny_gpt2, text)
    assert seq.text == text
    assert [s.text for s in texts_to_sequences(tiny_gpt2, [text, "x y"])] == [text, "x y"]
    assert [s.title for s in texts_to_sequences(tiny_gpt2, [("mine", text)])] == ["mine"]


def test_an_empty_list_of_texts_is_refused_not_read_as_the_samples(tiny_gpt2):
    """``build_report(model, texts=[])`` drew the built-in samples: a page about texts the user never gave."""
    import pytest

    from headscope.errors import BadInput
    from headscope.pipeline.report_builder import build_report

    with pytest.raises(BadInput, match="holds no text") as e:
        build_report(tiny_gpt2, texts=[], seq_len=6, batch=2, top_k=1, qk=False, logits=False, sinks=False)
    assert "texts=None" in e.value.hint and "builtin_texts=False" in e.value.hint
    rep = build_report(  # no texts and no samples: the scan's page alone, as the command line asks for it
        tiny_gpt2, texts=[], builtin_texts=False, seq_len=6, batch=2, top_k=1, qk=False, logits=False, sinks=False
    )
    assert rep.sections()
