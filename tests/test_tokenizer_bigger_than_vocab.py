"""A model whose tokenizer has more tokens than its embedding has rows (the weights and the tokenizer
do not belong together): text with a token the model cannot read is refused in the one input path,
with the token, its id and both sizes, instead of an IndexError deep in a forward pass."""

from __future__ import annotations

import pytest
from conftest import save_tiny
from typer.testing import CliRunner

import headscope
from headscope.cli import app
from headscope.errors import BadInput
from headscope.models.inputs import encode, single_tokens
from headscope.models.model import FirstToken
from headscope.scores.successor import usable_ordinal_sets

runner = CliRunner()
VOCAB = 1000


@pytest.fixture(scope="module")
def small_vocab_dir(tmp_path_factory, gpt2_tokenizer_dir):
    """A 2-layer GPT-2 with a 1,000-row embedding saved with GPT-2's 50,257-token tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=64, vocab_size=VOCAB)
    return save_tiny(GPT2LMHeadModel(cfg), gpt2_tokenizer_dir, tmp_path_factory.mktemp("gpt2-v1000"))


@pytest.fixture(scope="module")
def small_vocab(small_vocab_dir):
    return headscope.load_model(str(small_vocab_dir), device="cpu")


def test_encode_refuses_a_token_past_the_embedding(small_vocab, monkeypatch):
    # GPT-2's first token (<|endoftext|>, 50256) is itself past 1,000 rows: named as the first token
    with pytest.raises(BadInput) as exc:
        encode(small_vocab, "The elephant sat.")
    msg = str(exc.value)
    assert "'<|endoftext|>' (id 50256, the first token put before every text)" in msg
    assert "vocabulary of 1000 ids" in msg and "the tokenizer has 50257 tokens" in msg
    assert "do not belong together" in exc.value.hint and "own tokenizer" in exc.value.hint

    monkeypatch.setattr(small_vocab, "first_token", FirstToken(None, "none"))
    elephant = small_vocab.tokenizer(" elephant", add_special_tokens=False)["input_ids"]
    assert len(elephant) == 1 and elephant[0] >= VOCAB
    with pytest.raises(BadInput) as exc:
        encode(small_vocab, "The elephant sat. The elephant", title="--text 1")
    msg = exc.value.message
    assert msg.startswith("--text 1 has ") and f"' elephant' (id {elephant[0]})" in msg
    assert msg.count("' elephant'") == 1 and "\n" not in msg  # each distinct token once, one line
    assert encode(small_vocab, "The").ids[0] < VOCAB  # a text the model can read still goes through


def test_a_named_token_past_the_embedding_is_refused(small_vocab):
    with pytest.raises(BadInput, match=r"' elephant' \(id \d+\)"):
        single_tokens(small_vocab.tokenizer, [" elephant"], minimum=1, what="the token to explain", d_vocab=VOCAB)
    assert single_tokens(small_vocab.tokenizer, [" elephant"], minimum=1, d_vocab=None)  # no size given: no check


@pytest.mark.parametrize(
    "args",
    [
        ["qk", "--text", "The elephant sat. The elephant sat.", "--head", "1.0", "--no-figures"],
        ["logits", "--text", "The elephant sat.", "--head", "1.0", "--seq-len", "10", "--batch", "2", "--no-figures"],
    ],
    ids=["qk", "logits"],
)
def test_cli_says_why_and_exits_2(small_vocab_dir, tmp_path, args):
    res = runner.invoke(app, [*args, "--model", str(small_vocab_dir), "--device", "cpu", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "IndexError" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "outside the model's vocabulary of 1000 ids" in errors[0], res.output


def test_successor_skip_reason_names_the_vocabulary(gpt2_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir))
    three = tok(" three", add_special_tokens=False)["input_ids"]
    assert len(three) == 1 and three[0] >= VOCAB
    words = "one two three four five six".split()
    _, skipped = usable_ordinal_sets(tok, VOCAB, sets={"number_words": words})
    assert skipped["number_words"] == f"' three' is token {three[0]}, outside the model's vocabulary of {VOCAB}"
    _, skipped = usable_ordinal_sets(tok, 60000, sets={"words": [" supercalifragilistic"] * 5})
    assert skipped["words"] == "'  supercalifragilistic' is more than one token"


def test_the_scan_on_such_a_model_is_refused_not_an_index_error(small_vocab, tmp_path):
    """Random tokens are drawn below the embedding's size, but GPT-2's first token (50256) is not below 1,000:
    the scan raised IndexError from torch.embedding."""
    with pytest.raises(BadInput) as e:
        headscope.scan_induction(small_vocab, seq_len=6, batch=2, top_k=1, progress=False)
    assert "'<|endoftext|>' (id 50256, the first token put before every text)" in str(e.value)
    assert "do not belong together" in (e.value.hint or "")
    r = runner.invoke(
        app,
        [
            "induction",
            "--model",
            str(small_vocab.source.path),
            "--seq-len",
            "6",
            "--batch",
            "2",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
