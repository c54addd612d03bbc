"""from_json's text: an empty string is refused (not read as the current folder), and JSON that is not an
object says so instead of 'cannot read [1,2]: No such file'."""

from __future__ import annotations

import pytest

import headscope


@pytest.mark.parametrize("source", ["", "   "])
def test_an_empty_string_is_refused_not_read_as_the_current_folder(source, tmp_path, monkeypatch):
    (tmp_path / "scores.json").write_text("{}")
    monkeypatch.chdir(tmp_path)  # a scores.json here must not be read
    with pytest.raises(headscope.BadInput, match="InductionResult.from_json got an empty string"):
        headscope.InductionResult.from_json(source)


@pytest.mark.parametrize(
    ("text", "kind"),
    [("[1,2]", "a list"), (" [] ", "a list"), ("3", "a number"), ("null", "null"), ('"x"', "a string")],
)
def test_json_that_is_not_an_object_says_so(text, kind):
    with pytest.raises(headscope.BadInput, match=f"not the JSON of .* \\(not an object\\): it is JSON, but {kind}\n"):
        headscope.InductionResult.from_json(text)


def test_a_file_named_like_json_is_still_read_as_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "3").write_text("[1]")
    with pytest.raises(headscope.BadInput, match="it is JSON, but a list"):
        headscope.InductionResult.from_json("3")
    with pytest.raises(headscope.BadInput, match="cannot read nope.json"):
        headscope.InductionResult.from_json("nope.json")
