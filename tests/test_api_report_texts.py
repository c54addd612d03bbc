"""build_report takes one text as a plain string, as every other analysis does."""

from __future__ import annotations

from headscope.pipeline.report_builder import texts_to_sequences


def test_one_string_is_one_text_not_one_per_character(tiny_gpt2):
    text = "a b c a b c"
    (seq,) = texts_to_sequences(tiny_gpt2, text)
    assert seq.text == text
    assert [s.text for s in texts_to_sequences(tiny_gpt2, [text, "x y"])] == [text, "x y"]
    assert [s.title for s in texts_to_sequences(tiny_gpt2, [("mine", text)])] == ["mine"]
