"""A token that holds part of a character is labelled by its bytes, not by U+FFFD like every other such token."""

from __future__ import annotations

import codecs

from headscope.tokens import token_text


def test_tokens_that_split_a_character_show_their_bytes_and_are_told_apart(tiny_gpt2):
    tok = tiny_gpt2.tokenizer
    text = "🚀 שלום"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    labels = [token_text(tok, i) for i in ids]
    partial = [x for x in labels if "\\x" in x]
    assert partial, labels  # GPT-2's BPE splits this text inside characters
    assert "\ufffd" not in "".join(labels)
    # every byte is there, in order: the labels read back as escapes give the text's UTF-8 exactly
    raw = b"".join(codecs.escape_decode(x.encode("utf-8"))[0] if "\\x" in x else x.encode() for x in labels)
    assert raw.decode("utf-8") == text


def test_whole_tokens_and_a_literal_replacement_character_are_unchanged(tiny_gpt2):
    tok = tiny_gpt2.tokenizer
    for text in (" the", " naïve", "\ufffd"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert "".join(token_text(tok, i) for i in ids) == text


def test_control_characters_are_labelled_with_escapes_the_figure_font_can_draw():
    """A vertical-tab token drew as a box in attention_repeated.png; so did '␍', which the font lacks too."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from headscope.render._mpl import show_token
    from headscope.tokens import visible_whitespace

    labels = [visible_whitespace(t) for t in ("\x0b", "\r\n", "\x0c", "a\x00", "\x7f", "\x85")]
    assert labels == ["\\v", "\\r↵", "\\f", "a\\x00", "\\x7f", "\\x85"]
    fig, ax = plt.subplots()
    ax.set_xticks(range(len(labels)), [show_token(t) for t in ("\x0b", "\r", "\x0c", "\x00", "\x7f", "\x85")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.canvas.draw()
    plt.close(fig)
    assert not [w for w in caught if "missing from font" in str(w.message)]
