"""Model loading: every source, the cache, and the errors a person can act on.

The error cases are one table, each checked twice: through the Python API (the right
HeadscopeError subclass, a message that names the problem) and through the CLI (a non-zero
exit code, a short message, no traceback).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import headscope
from headscope.cli import app
from headscope.cli._common import STATE
from headscope.errors import BadInput, HeadscopeError, ModelLoadError
from headscope.models import builtin, cache, loading

SMOL_GGUF = builtin.BUILTINS["smollm2-135m-instruct-q4"].gguf_name


def cache_entries(root: Path) -> list[str]:
    """Everything under the cache's models/ folder, hidden partial folders included."""
    models = root / "models"
    return sorted(p.name for p in models.iterdir()) if models.is_dir() else []


def gpt2_in_hf_cache() -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache("gpt2", "config.json"), str)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "headscope-cache"
    monkeypatch.setenv("HEADSCOPE_CACHE", str(root))
    return root


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory) -> Path:
    """A tiny masked LM: a real Hugging Face model directory that is not a causal LM."""
    from transformers import BertConfig, BertForMaskedLM

    d = tmp_path_factory.mktemp("tiny-bert")
    BertForMaskedLM(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=100)
    ).save_pretrained(str(d))
    return d


# --- Errors a person can act on ---------------------------------------------------------


@dataclass
class Case:
    """What to pass (``spec``), which error it must raise, and what the message must say."""

    spec: str
    error: type[HeadscopeError]
    says: list[str]
    after: Callable[[], None] = field(default=lambda: None)  # checks on the state left behind


def _hub_unreachable(monkeypatch) -> None:
    # .invalid never resolves (RFC 2606): the reachability probe fails as with no network.
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def _case(name: str, tmp_path: Path, monkeypatch, request) -> Case:
    cache_root = Path(os.environ["HEADSCOPE_CACHE"])
    if name == "made-up hub id, hub unreachable":
        _hub_unreachable(monkeypatch)
        return Case("no-such-org/no-such-model", ModelLoadError, ["not in the Hugging Face cache", "unreachable"])
    if name == "gpt2 not in HF cache, hub unreachable":
        if gpt2_in_hf_cache():
            pytest.skip("gpt2 is in the Hugging Face cache here, so it loads offline")
        _hub_unreachable(monkeypatch)
        return Case("gpt2", ModelLoadError, ["'gpt2'", "not in the Hugging Face cache", "unreachable"])
    if name == "hub disabled by HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        return Case("no-such-org/no-such-model", ModelLoadError, ["HF_HUB_OFFLINE=1"])
    if name == "directory that does not exist":
        return Case(str(tmp_path / "no-such-dir"), BadInput, ["does not exist", "no-such-dir"])
    if name == ".gguf path that does not exist":
        return Case(str(tmp_path / "missing.gguf"), BadInput, ["does not exist", "missing.gguf"])
    if name == "truncated built-in GGUF in the cache":
        monkeypatch.setattr(builtin, "installed_gguf", lambda model: None)  # use the cache copy
        bad = cache_root / "downloads" / SMOL_GGUF
        bad.parent.mkdir(parents=True)
        bad.write_bytes(b"GGUF" + bytes(4096))

        def after():
            assert not bad.exists(), "a GGUF that failed its checksum must be removed"
            assert cache_entries(cache_root) == []

        return Case(
            "smollm2-135m-instruct-q4", ModelLoadError, ["checksum mismatch", "corrupt or truncated", "removed"], after
        )
    if name == "user .gguf file of garbage bytes":
        bad = tmp_path / "garbage.gguf"
        bad.write_bytes(os.urandom(8192))

        def after():
            assert cache_entries(cache_root) == [], "a failed conversion must leave nothing in the cache"

        return Case(str(bad), ModelLoadError, ["could not read GGUF file", "garbage.gguf"], after)
    if name == "model directory that is not a causal LM":
        return Case(
            str(request.getfixturevalue("bert_dir")),
            ModelLoadError,
            ["bert", "not a causal (decoder-only) language model"],
        )
    if name == "directory without config.json":
        (tmp_path / "just-files").mkdir()
        (tmp_path / "just-files" / "weights.bin").write_bytes(b"0")
        return Case(str(tmp_path / "just-files"), BadInput, ["without a config.json"])
    if name == "cache directory under a regular file":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        monkeypatch.setenv("HEADSCOPE_CACHE", str(blocker / "cache"))
        return Case(
            "smollm2-135m-instruct-q4", ModelLoadError, ["cannot write to the headscope cache", "HEADSCOPE_CACHE"]
        )
    if name == "cache path is a regular file (user .gguf)":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        monkeypatch.setenv("HEADSCOPE_CACHE", str(blocker))
        gguf = tmp_path / "model.gguf"
        gguf.write_bytes(b"GGUF")
        return Case(str(gguf), ModelLoadError, ["cannot write to the headscope cache"])
    raise AssertionError(name)


ERROR_CASES = [
    "made-up hub id, hub unreachable",
    "gpt2 not in HF cache, hub unreachable",
    "hub disabled by HF_HUB_OFFLINE",
    "directory that does not exist",
    ".gguf path that does not exist",
    "truncated built-in GGUF in the cache",
    "user .gguf file of garbage bytes",
    "model directory that is not a causal LM",
    "directory without config.json",
    "cache directory under a regular file",
    "cache path is a regular file (user .gguf)",
]


@pytest.mark.parametrize("name", ERROR_CASES)
def test_load_model_raises_an_actionable_error(name, fresh_cache, tmp_path, monkeypatch, request):
    case = _case(name, tmp_path, monkeypatch, request)
    import transformers

    _ = (transformers.AutoModelForCausalLM, transformers.AutoTokenizer)  # import them before the clock starts
    t0 = time.perf_counter()
    with pytest.raises(case.error) as info:
        headscope.load_model(case.spec, device="cpu")
    elapsed = time.perf_counter() - t0
    message = str(info.value)
    for phrase in case.says:
        assert phrase in message
    assert info.value.hint, "every error carries a hint saying what to do"
    # Fail fast: transformers' own retries take about a minute to give up without network.
    assert elapsed < 15, f"took {elapsed:.0f} s to fail"
    case.after()


@pytest.mark.parametrize("name", ERROR_CASES)
def test_fetch_cli_prints_the_error_without_traceback(name, fresh_cache, tmp_path, monkeypatch, request):
    monkeypatch.setitem(STATE, "debug", False)
    case = _case(name, tmp_path, monkeypatch, request)
    result = CliRunner().invoke(app, ["fetch", case.spec])
    assert result.exit_code == case.error.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit)  # the error was handled, not raised
    assert "Traceback" not in result.output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and len(error_lines[0]) < 300
    for phrase in case.says:
        assert phrase in result.stderr
    assert "hint: " in result.stderr
    case.after()


def test_debug_flag_shows_the_traceback_with_the_error_s_exit_code(fresh_cache, tmp_path, monkeypatch):
    monkeypatch.setitem(STATE, "debug", False)
    result = CliRunner().invoke(app, ["--debug", "fetch", str(tmp_path / "no-such-dir")])
    assert result.exit_code == BadInput.exit_code and "Traceback" in result.stderr and "BadInput" in result.stderr


def test_cli_subprocess_exits_with_the_error_code_and_shows_traceback_only_with_debug(tmp_path):
    import subprocess
    import sys

    env = dict(os.environ, HEADSCOPE_CACHE=str(tmp_path / "c"), HF_ENDPOINT="https://hub.invalid")
    env.pop("HF_HUB_OFFLINE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "headscope", "fetch", "no-such-org/no-such-model"],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert proc.returncode == ModelLoadError.exit_code
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: cannot load 'no-such-org/no-such-model'")

    debug = subprocess.run(
        [sys.executable, "-m", "headscope", "--debug", "fetch", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert debug.returncode == BadInput.exit_code  # the same code as without --debug
    assert "Traceback" in debug.stderr and "BadInput" in debug.stderr


# --- Conversion into the cache is all or nothing --------------------------------------------


@pytest.fixture
def fake_gguf_loaders(monkeypatch, tiny_llama_dir):
    """Make transformers 'dequantize' any .gguf path into the tiny Llama (no real GGUF needed)."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir))
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", staticmethod(lambda *a, **k: model))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", staticmethod(lambda *a, **k: tok))
    return model


def test_conversion_failing_midway_leaves_nothing_in_the_cache(fresh_cache, tmp_path, fake_gguf_loaders):
    def save_half_then_fail(directory, *args, **kwargs):
        (Path(directory) / "model.safetensors").write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    fake_gguf_loaders.save_pretrained = save_half_then_fail
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="could not write the converted model.*No space left"):
        loading.prepare_gguf(gguf)
    assert cache_entries(fresh_cache) == []
    assert loading.list_cached() == []


def test_user_gguf_is_converted_once_then_reused(fresh_cache, tmp_path, fake_gguf_loaders, monkeypatch):
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    first = headscope.models.resolve_source(str(gguf))
    assert first.kind == "gguf"
    target = Path(first.path)
    assert target.parent == fresh_cache / "models"
    assert (target / "headscope.json").is_file() and (target / "model.safetensors").is_file()
    assert json.loads((target / "headscope.json").read_text())["gguf"] == str(gguf.resolve())

    def must_not_convert(*a, **k):
        raise AssertionError("converted again although the cache holds the result")

    monkeypatch.setattr(loading, "convert_gguf", must_not_convert)
    assert headscope.models.resolve_source(str(gguf)).path == first.path
    assert [c["name"] for c in loading.list_cached()] == [target.name]


def test_cache_entry_missing_its_weights_is_not_trusted(fresh_cache, tmp_path, fake_gguf_loaders):
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    target = Path(headscope.models.resolve_source(str(gguf)).path)
    (target / "model.safetensors").unlink()
    assert loading.list_cached() == []
    assert (Path(headscope.models.resolve_source(str(gguf)).path) / "model.safetensors").is_file()


def test_cache_dir_follows_headscope_cache(fresh_cache):
    assert cache.cache_dir() == fresh_cache


def test_cache_dir_defaults_to_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("HEADSCOPE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "headscope"


# --- GPT-2, offline -------------------------------------------------------------------


def test_tiny_gpt2_loads_through_load_model_with_gpt2_tokenizer(tiny_gpt2, tiny_gpt2_dir):
    assert tiny_gpt2.source.kind == "local"
    assert tiny_gpt2.source.path == str(tiny_gpt2_dir)
    assert tiny_gpt2.tokenizer("Hello world", add_special_tokens=False).input_ids == [15496, 995]
    assert tiny_gpt2.tokenizer.eos_token_id == 50256


def test_attention_hooks_fire_with_transformer_lens_shapes(tiny_gpt2):
    n_heads, d_head = tiny_gpt2.cfg.n_heads, tiny_gpt2.cfg.d_head
    tokens = tiny_gpt2.to_tokens("The cat sat on the mat because it was warm")
    batch, pos = tokens.shape
    seen: dict[str, tuple] = {}

    def recorder(name):
        # Keyed by the name asked for: hook_z is an alias, so hook.name is the bridge's own
        # name for the same point (blocks.{l}.attn.o.hook_in).
        def record(tensor, hook):
            seen[name] = tuple(tensor.shape)

        return record

    names = [
        f"blocks.{l}.attn.{h}"
        for l in range(tiny_gpt2.cfg.n_layers)
        for h in ("hook_pattern", "hook_attn_scores", "hook_z")
    ]
    with torch.no_grad():
        tiny_gpt2.run_with_hooks(tokens, fwd_hooks=[(n, recorder(n)) for n in names])
    for l in range(tiny_gpt2.cfg.n_layers):
        assert seen[f"blocks.{l}.attn.hook_pattern"] == (batch, n_heads, pos, pos)
        assert seen[f"blocks.{l}.attn.hook_attn_scores"] == (batch, n_heads, pos, pos)
        assert seen[f"blocks.{l}.attn.hook_z"] == (batch, pos, n_heads, d_head)


def test_attention_pattern_rows_are_causal_distributions(tiny_gpt2):
    tokens = tiny_gpt2.to_tokens("one two three four five")
    with torch.no_grad():
        _, cache_ = tiny_gpt2.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    pattern = cache_["blocks.0.attn.hook_pattern"][0]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1]))
    assert torch.triu(pattern, diagonal=1).abs().max() == 0


def test_bridge_logits_equal_plain_transformers_logits(tiny_gpt2, tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2_dir), attn_implementation="eager").eval()
    tokens = tiny_gpt2.to_tokens("Hello world, this is a test of induction heads")
    with torch.no_grad():
        ours = tiny_gpt2(tokens)
        ref = hf(tokens).logits
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_tiny_llama_keeps_grouped_query_heads(tiny_llama):
    assert (tiny_llama.cfg.n_layers, tiny_llama.cfg.n_heads) == (3, 4)
    assert tiny_llama.W_K.shape[1] == 2 and tiny_llama.W_Q.shape[1] == 4


def test_local_load_prints_no_loading_weights_bar(tiny_gpt2_dir, capfd):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    headscope.load_model(str(tiny_gpt2_dir), device="cpu")
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled(), "the user's progress-bar setting must be restored"


def test_unknown_device_and_dtype_are_bad_input(tiny_gpt2_dir):
    with pytest.raises(BadInput, match="unknown device"):
        headscope.load_model(str(tiny_gpt2_dir), device="tpu")
    with pytest.raises(BadInput, match="unknown dtype"):
        headscope.load_model(str(tiny_gpt2_dir), device="cpu", dtype="int3")


def test_cuda_device_names_are_checked_and_the_message_names_the_device_asked_for(monkeypatch):
    """``cuda:x`` is no device; ``cuda:N`` is named as asked and checked against the GPUs torch sees."""
    with pytest.raises(BadInput, match="unknown device 'cuda:x'"):
        loading.resolve_device("cuda:x")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BadInput, match="--device cuda:1 was asked for, but torch sees no CUDA GPU") as e:
        loading.resolve_device("cuda:1")
    assert "--device cpu" in (e.value.hint or "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert loading.resolve_device("cuda:1") == "cuda:1"
    assert loading.resolve_device("cuda") == "cuda"
    with pytest.raises(
        BadInput, match=r"--device cuda:2 was asked for, but torch sees 2 CUDA GPUs \(cuda:0..cuda:1\)"
    ) as e:
        loading.resolve_device("cuda:2")
    assert "from 0 to 1" in (e.value.hint or "")


@pytest.mark.skipif(
    not gpt2_in_hf_cache(), reason="needs the real gpt2 weights in the Hugging Face cache (the hub is unreachable here)"
)
def test_real_gpt2_head_4_11_is_a_previous_token_head():
    """Published fact (ARENA 1.2; Wang et al. 2022): head 4.11 attends to the previous token."""
    model = headscope.load_model("gpt2", device="cpu")
    assert model.tokenizer("Hello world", add_special_tokens=False).input_ids == [15496, 995]
    seq_len, batch = 50, 4
    gen = torch.Generator().manual_seed(0)
    rand = torch.randint(1000, 50000, (batch, seq_len), generator=gen)
    bos = torch.full((batch, 1), model.tokenizer.bos_token_id)
    tokens = torch.cat([bos, rand, rand], dim=1)
    patterns = {}

    def keep(pattern, hook):
        patterns["p"] = pattern.detach()

    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.4.attn.hook_pattern", keep)])
    prev = patterns["p"][:, 11].diagonal(offset=-1, dim1=-2, dim2=-1)  # query i -> key i-1, i >= 1
    assert prev.mean().item() > 0.9


# --- The real SmolLM2 default -----------------------------------------------------------


@pytest.mark.smollm2
def test_smollm2_has_30_layers_9_heads_and_3_kv_heads(smollm2):
    assert smollm2.source.kind == "builtin"
    assert (smollm2.cfg.n_layers, smollm2.cfg.n_heads, smollm2.cfg.d_model) == (30, 9, 576)
    assert tuple(smollm2.W_K.shape) == (30, 3, 576, 64)
    assert tuple(smollm2.W_Q.shape) == (30, 9, 576, 64)
    assert smollm2.tokenizer.vocab_size == 49152


@pytest.mark.smollm2
def test_smollm2_second_load_comes_from_the_cache(smollm2, monkeypatch):
    cached = Path(smollm2.source.path)
    assert (cached / "headscope.json").is_file() and (cached / "model.safetensors").is_file()
    assert (
        json.loads((cached / "headscope.json").read_text())["sha256"]
        == builtin.BUILTINS["smollm2-135m-instruct-q4"].sha256
    )

    def must_not_run(*a, **k):
        raise AssertionError("the second load must not fetch or convert again")

    monkeypatch.setattr(loading, "convert_gguf", must_not_run)
    monkeypatch.setattr(builtin, "fetch_gguf", must_not_run)
    again = loading.resolve_source("smollm2-135m-instruct-q4")
    assert (again.kind, again.path) == ("builtin", str(cached))


@pytest.mark.smollm2
def test_smollm2_predicts_ordinary_text(smollm2):
    # Real weights, dequantized correctly: "The capital of France is" -> " Paris".
    tokens = smollm2.to_tokens("The capital of France is", prepend_bos=False)
    with torch.no_grad():
        next_id = smollm2(tokens)[0, -1].argmax().item()
    assert smollm2.tokenizer.decode([next_id]).strip() == "Paris"


@pytest.mark.smollm2
def test_truncated_user_gguf_is_a_load_error(smollm2, fresh_cache, tmp_path):
    real = builtin.fetch_gguf(builtin.BUILTINS["smollm2-135m-instruct-q4"])
    cut = tmp_path / "cut.gguf"
    with open(real, "rb") as f:
        cut.write_bytes(f.read(5_000_000))  # the header parses, the tensor data runs out
    with pytest.raises(ModelLoadError, match="could not read GGUF file"):
        headscope.load_model(str(cut), device="cpu")
    assert cache_entries(fresh_cache) == []


@pytest.mark.smollm2
@pytest.mark.slow
def test_user_gguf_loads_and_shows_dequantize_progress_only(smollm2, fresh_cache, capfd):
    real = builtin.fetch_gguf(builtin.BUILTINS["smollm2-135m-instruct-q4"])
    capfd.readouterr()
    model = headscope.load_model(str(real), device="cpu")
    err = capfd.readouterr().err
    assert "de-quantizing GGUF tensors" in err  # the long step keeps its bar
    assert "Loading weights" not in err
    assert model.source.kind == "gguf"
    assert model.cfg.n_layers == 30
    assert [c["name"] for c in loading.list_cached()] == [Path(model.source.path).name]


def test_old_alias_loads_the_renamed_model_from_the_folder_it_was_converted_into(fresh_cache, monkeypatch):
    # Weights converted by an earlier version sit in models/smollm2-135m. Both names must find them
    # without fetching or converting again; the old name says once what the model is now called,
    # and the source (what every output's model name comes from) carries the new name.
    from safetensors.torch import save_file

    old = fresh_cache / "models" / "smollm2-135m"
    old.mkdir(parents=True)
    save_file({"w": torch.zeros(3)}, str(old / "model.safetensors"))
    (old / "headscope.json").write_text(json.dumps({"alias": "smollm2-135m"}))

    def must_not_run(*a, **k):
        raise AssertionError("a converted folder must be used as it is")

    monkeypatch.setattr(loading, "convert_gguf", must_not_run)
    monkeypatch.setattr(builtin, "fetch_gguf", must_not_run)
    said: list[str] = []
    src = loading.resolve_source("smollm2-135m", log=said.append)
    assert (src.name, src.kind, src.path) == ("smollm2-135m-instruct-q4", "builtin", str(old))
    assert len(said) == 1 and "'smollm2-135m-instruct-q4'" in said[0] and "Q4_1" in said[0]
    said.clear()
    assert loading.resolve_source("smollm2-135m-instruct-q4", log=said.append) == src
    assert said == []  # the new name says nothing
    assert builtin.DEFAULT_MODEL == "smollm2-135m-instruct-q4"


def test_a_mistyped_builtin_name_is_answered_with_the_name_it_meant(monkeypatch):
    """`--model SmolLM2-135M-Instruct-Q4` (or a letter missing) said only that the hub was unreachable."""
    _hub_unreachable(monkeypatch)
    for typo in ("SmolLM2-135M-Instruct-Q4", "smolm2-135m-instruct-q4"):
        with pytest.raises(ModelLoadError) as e:
            headscope.load_model(typo)
        assert "did you mean --model smollm2-135m-instruct-q4?" in e.value.hint
