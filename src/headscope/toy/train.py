"""Train a small attention-only transformer on the CPU and save checkpoints headscope can load.

The model is a Hugging Face GPT-2 (``GPT2LMHeadModel``: learned absolute positions,
LayerNorm before each attention layer and at the end) whose MLPs are zeroed and frozen, so
every block adds only its attention output to the residual stream: an attention-only
transformer, saved in the ordinary GPT-2 layout. Its tokenizer is a word-level vocabulary
``t0 .. t{vocab-1}`` plus ``<bos>`` and ``<unk>`` (the ``tokenizers`` library, saved as a
``PreTrainedTokenizerFast``), so ``headscope.load_model(checkpoint_dir)``, ``headscope
sweep`` and every other command work on the checkpoints unchanged.

Training data: :mod:`headscope.toy.data` (short spans copied from 3 to ~61 tokens back). Every
``log_every`` steps the model is evaluated on the induction scan's own sequences --
``[BOS] + r + r`` with ``r`` drawn exactly as :func:`headscope.scan.sequences.repeated_tokens`
draws it for these checkpoints -- so the live numbers (later-repeat loss, best induction
score, best previous-token score in layer 0) are the scan's numbers, computed here from
the Hugging Face model's own attention weights.

Deterministic for a seed: weights are initialised from ``seed`` (inside ``fork_rng``, the
caller's random state is left alone), batches come from a generator seeded with ``seed``,
and the thread count is fixed for the run (it is recorded; a different thread count may
change the last bits of a float sum and so, over many steps, the curves).

A run is all or nothing on disk (as every command's results, :mod:`headscope.pipeline.outputs`):
it holds ``--out``'s lock from the first check to the end, trains into a staging folder
``.OUT.partial-PID-*`` beside ``--out`` and moves it into place only when complete, so Ctrl-C,
SIGTERM, a full or read-only disk leave an earlier run byte for byte as it was (exit 130, 143,
5) and nothing half-made behind.

Output directory::

    out/run.json                  settings, status, checkpoints, timings
    out/train_log.csv             one row per log step (see LOG_COLUMNS)
    out/checkpoints/step0000/     config.json, model.safetensors, tokenizer.json,
                                  tokenizer_config.json, toy.json (step and live numbers)
    out/checkpoints/step0100/ ...
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ..errors import BadInput, OutputError, OutputExists
from ..head_labels import head_label
from ..jsonsafe import dumps
from ..models.loading import quiet_progress
from ..scan.losses import first_repeat_mean, later_repeat_mean, token_losses
from ..scores import reduce_pattern
from ..scores import score as declared
from ..scores.copy_suppression import DEFAULT_K as SUPPRESSION_K
from ..scores.layout import RepeatLayout
from ..settings import whole_number
from .data import CopyRecipe, copy_batch

RUN_KIND = "headscope-toy-run"
BOS, UNK = "<bos>", "<unk>"
#: The smallest vocabulary whose checkpoints the scan can score: the copy-suppression score ranks each token
#: among the SUPPRESSION_K + 1 lowest logits of the whole vocabulary (the ordinary tokens plus <bos> and <unk>);
#: measured: 8 fails every scan of every checkpoint, 9 works.
MIN_VOCAB = SUPPRESSION_K + 1 - 2
#: Seeds are unsigned 64-bit numbers below 2**63, the command line's --seed range (cli/_numbers.py's SEED_MAX).
SEED_MAX = 2**63 - 1
#: What a run writes into its directory; ``--overwrite`` removes these names and nothing else.
RUN_FILES = ("run.json", "train_log.csv", "checkpoints", "sweep", "phase")
LOG_COLUMNS = {
    "step": "Optimizer steps taken.",
    "loss": "Mean training loss (nats, every target of the batch) over the steps since the last row.",
    "loss_later_repeats": "Loss (nats) on the second copy of [BOS] + r + r, the induction scan's sequences, "
    "its first token left out (no context predicts it; scores.layout.later_repeat_targets).",
    "loss_first_repeat": "Loss (nats) on the first copy: about ln(vocab), nothing to predict.",
    "induction_best": "Highest induction score over all heads (ARENA definition, as the scan).",
    "induction_head": "The head that has it.",
    "previous_token_best": "Highest previous-token score among layer-0 heads.",
    "previous_token_head": "The head that has it.",
    "seconds": "Wall-clock seconds since training started.",
}


@dataclass(frozen=True)
class ToyConfig:
    """Everything that fixes a run: model shape, data recipe, optimiser, schedule and the live evaluation."""

    steps: int = 1500
    every: int = 50  # checkpoint interval (steps); step 0 and the last step are always saved
    seed: int = 0
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    vocab: int = 64
    n_ctx: int = 64
    block: int = 12  # longest copy (copies are 2..block tokens, 3..n_ctx-3 tokens back: toy/data.py)
    copies: int = 4  # copies written into each training sequence
    batch: int = 64
    lr: float = 3e-3
    log_every: int = 25
    eval_seq_len: int = 24  # the scan's --seq-len for these checkpoints: copies 24 tokens apart
    eval_batch: int = 32
    eval_seed: int = 0

    @property
    def recipe(self) -> CopyRecipe:
        return CopyRecipe(n_ctx=self.n_ctx, vocab=self.vocab, block=self.block, copies=self.copies)

    @classmethod
    def default(cls, name: str):
        """The default of field ``name`` (what the hints quote: read here, never restated)."""
        return cls.__dataclass_fields__[name].default

    @classmethod
    def names(cls) -> list[str]:
        """Every setting's name, in declaration order (what ``train_toy``'s keywords may be)."""
        return list(cls.__dataclass_fields__)

    def check(self) -> ToyConfig:
        """Raise :class:`BadInput` for settings that cannot make a run; return self.

        >>> ToyConfig(vocab=3).check()
        Traceback (most recent call last):
        ...
        headscope.errors.BadInput: vocab (--vocab) must be at least 9 (got 3): the scan's copy-suppression score ranks each token among the 11 lowest logits of the vocabulary (with <bos> and <unk>)
          hint: use --vocab 9 or more (the default is 64)
        """
        for name in self.names():
            if name != "lr":
                whole_number(name, getattr(self, name))
        if isinstance(self.lr, bool) or not isinstance(self.lr, numbers.Real):
            raise BadInput(f"lr must be a number, got {self.lr!r} ({type(self.lr).__name__})", hint="e.g. lr=3e-3")
        for name in ("seed", "eval_seed"):
            if not 0 <= getattr(self, name) <= SEED_MAX:
                raise BadInput(
                    f"{name}{' (--seed)' if name == 'seed' else ''} must be from 0 to {SEED_MAX} (got {getattr(self, name)})",
                    hint="a seed is an unsigned 64-bit number (below 2**63), e.g. 0",
                )
        if self.steps < 1:
            raise BadInput(
                f"--steps must be at least 1 (got {self.steps})", hint=f"the default is {self.default('steps')}"
            )
        if self.every < 1:
            raise BadInput(
                f"--every must be at least 1 (got {self.every})", hint=f"the default is {self.default('every')}"
            )
        if self.every > self.steps:
            raise BadInput(
                f"--every {self.every} is larger than the run (--steps {self.steps}): only step 0 and the last "
                "step would be saved, too few checkpoints to see anything form",
                hint=f"use --every {max(1, self.steps // 20)} for about 20 checkpoints",
            )
        if self.n_layers < 2:
            raise BadInput(
                f"--layers must be at least 2 (got {self.n_layers}): an induction head reads what a "
                "previous-token head in an earlier layer wrote",
                hint=f"the default is {self.default('n_layers')}",
            )
        # the command line spells n_heads --heads; eval_batch and log_every are API settings only
        for name, opt in (
            ("n_heads", "--heads"),
            ("batch", "--batch"),
            ("eval_batch", "eval_batch"),
            ("log_every", "log_every"),
        ):
            if getattr(self, name) < 1:
                raise BadInput(
                    f"{opt} must be at least 1 (got {getattr(self, name)})", hint=f"the default is {self.default(name)}"
                )
        if self.d_model < self.n_heads or self.d_model % self.n_heads:
            d, h = self.default("d_model"), self.default("n_heads")
            raise BadInput(
                f"--d-model {self.d_model} must be a multiple of --heads {self.n_heads}",
                hint=f"the default is {d} with {h} heads (d_head {d // h})",
            )
        if not (self.lr > 0 and self.lr <= 1):  # also refuses nan and inf
            raise BadInput(
                f"--lr must be more than 0 and at most 1 (got {self.lr})", hint=f"the default is {self.default('lr')}"
            )
        self.recipe.check()
        if self.vocab < MIN_VOCAB:
            raise BadInput(
                f"vocab (--vocab) must be at least {MIN_VOCAB} (got {self.vocab}): the scan's copy-suppression score "
                f"ranks each token among the {SUPPRESSION_K + 1} lowest logits of the vocabulary (with {BOS} and {UNK})",
                hint=f"use --vocab {MIN_VOCAB} or more (the default is {self.default('vocab')})",
            )
        if self.eval_seq_len < 2 or 1 + 2 * self.eval_seq_len > self.n_ctx:
            raise BadInput(
                f"--eval-seq-len {self.eval_seq_len} does not fit twice (plus BOS) in --n-ctx {self.n_ctx}",
                hint=f"use at most {(self.n_ctx - 1) // 2}",
            )
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def checkpoint_name(step: int, steps: int) -> str:
    """``step0100`` for step 100 of a 2000-step run: zero-padded so names sort by step."""
    return f"step{step:0{len(str(steps))}d}"


def checkpoint_steps(steps: int, every: int) -> list[int]:
    """0, every, 2 every, ... and the last step."""
    return sorted(set(range(0, steps + 1, every)) | {steps})


# --- model and tokenizer -----------------------------------------------------------------------
def build_tokenizer(vocab: int):
    """Word-level tokenizer: ``t0 .. t{vocab-1}`` are ids ``0 .. vocab-1``, ``<bos>`` is ``vocab``, ``<unk>`` ``vocab+1``.

    Encoding text (with special tokens) prepends ``<bos>``, as training does.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab)}
    words[BOS], words[UNK] = vocab, vocab + 1
    tok = Tokenizer(models.WordLevel(words, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=BOS, unk_token=UNK, model_max_length=None
    )


def build_model(config: ToyConfig):
    """GPT-2 with the MLPs zeroed and frozen (attention-only), no dropout, untied unembedding,
    weights drawn with standard deviation ``0.8 / sqrt(d_model)``.

    Weights are drawn from ``config.seed`` without touching the caller's random state.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    V = config.vocab + 2  # + <bos>, <unk>
    cfg = GPT2Config(
        vocab_size=V,
        n_positions=config.n_ctx,
        n_embd=config.d_model,
        n_layer=config.n_layers,
        n_head=config.n_heads,
        n_inner=4,  # the MLPs are zero: keep them tiny
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,
        bos_token_id=config.vocab,
        eos_token_id=config.vocab,
        # TransformerLens's init scale, 0.8 / sqrt(d_model) = 0.1 for d_model 64. GPT-2's 0.02
        # leaves every attention pattern near uniform for longer: measured here, no induction
        # head by step 1900 with 0.02, one at step ~650 with 0.1 (lr 3e-3, otherwise the same).
        initializer_range=0.8 / config.d_model**0.5,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = GPT2LMHeadModel(cfg)
    for block in model.transformer.h:
        # MLP(x) = c_proj(gelu(c_fc(ln_2(x)))) = 0 when every MLP weight and bias is 0; frozen so it
        # stays 0, and ln_2 (read only by the MLP) frozen too so weight decay cannot drift it.
        for p in list(block.mlp.parameters()) + list(block.ln_2.parameters()):  # type: ignore[union-attr]
            p.requires_grad_(False)
        for p in block.mlp.parameters():  # type: ignore[union-attr]
            p.data.zero_()
    model.config.attn_implementation = "eager"  # the live evaluation reads attention weights
    model.set_attn_implementation("eager")
    return model


def is_attention_only(model) -> bool:
    """Every MLP weight and bias of a (GPT-2) model is exactly zero."""
    return all(bool((p == 0).all()) for block in model.transformer.h for p in block.mlp.parameters())


# --- live evaluation -------------------------------------------------------------------------
def eval_tokens(config: ToyConfig) -> tuple[torch.Tensor, RepeatLayout]:
    """``[eval_batch, 1 + 2 eval_seq_len]``: the sequences ``headscope.scan_induction`` draws for these
    checkpoints with ``seq_len=eval_seq_len, batch=eval_batch, seed=eval_seed``.

    The scan draws ``r`` as ``pool[randint(len(pool), (batch, seq_len))]`` with ``pool`` the
    ordinary token ids (here ``0 .. vocab-1``, so ``pool[i] = i``), then prepends BOS.
    """
    gen = torch.Generator().manual_seed(config.eval_seed)
    r = torch.randint(config.vocab, (config.eval_batch, config.eval_seq_len), generator=gen)
    bos = torch.full((config.eval_batch, 1), config.vocab, dtype=torch.long)
    return torch.cat([bos, r, r], dim=1), RepeatLayout(config.eval_seq_len, 2, True)


@torch.no_grad()
def evaluate(model, tokens: torch.Tensor, layout: RepeatLayout) -> dict:
    """Scores ``[L, H]`` (induction, previous_token) and the repeat losses, from HF attention weights."""
    was_training = model.training
    model.eval()
    out = model(tokens, output_attentions=True)
    if was_training:
        model.train()
    per_pos = token_losses(out.logits, tokens).mean(0)  # [n - 1]
    ind, prev = [], []
    reads_ind, reads_prev = declared("induction").reads, declared("previous_token").reads
    assert reads_ind is not None and reads_prev is not None  # both are attention scores
    for pattern in out.attentions:  # [batch, head, query, key] per layer; the registry's own reductions
        s, c = reduce_pattern(reads_ind, pattern, layout)
        ind.append(s / c)
        s, c = reduce_pattern(reads_prev, pattern, layout)
        prev.append(s / c)
    return {
        "induction": torch.stack(ind),
        "previous_token": torch.stack(prev),
        "loss_later_repeats": float(later_repeat_mean(per_pos, layout)),
        "loss_first_repeat": float(first_repeat_mean(per_pos, layout)),
    }


def _summary(step: int, loss: float, ev: dict, seconds: float) -> dict:
    ind, prev = ev["induction"], ev["previous_token"]
    i = int(ind.argmax())
    j = int(prev[0].argmax())
    H = ind.shape[1]
    return {
        "step": step,
        "loss": round(loss, 6),
        "loss_later_repeats": round(ev["loss_later_repeats"], 6),
        "loss_first_repeat": round(ev["loss_first_repeat"], 6),
        "induction_best": round(float(ind.flatten()[i]), 6),
        "induction_head": head_label(i // H, i % H),
        "previous_token_best": round(float(prev[0, j]), 6),
        "previous_token_head": head_label(0, j),
        "seconds": round(seconds, 3),
    }


# --- the run directory -----------------------------------------------------------------------
def read_run(out_dir: str | os.PathLike) -> dict | None:
    """The run.json of a train-toy run in ``out_dir``, or None if it holds none."""
    try:
        rec = json.loads((Path(out_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("kind") == RUN_KIND else None


def check_run_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an ``out_dir`` a new run may not replace (nothing is touched); returns it as a Path.

    Missing or empty: fine. A FIFO, device, socket or symbolic link, or a file: :class:`OutputError`
    (exit 5). An earlier train-toy run: refused unless ``overwrite`` (:class:`OutputExists`, exit 4),
    and also refused when it holds files of its own beside the run's (a new run replaces the
    folder whole). Anything else: always refused (exit 4).
    """
    from ..pipeline.outputs import refuse_special

    out = Path(out_dir)
    refuse_special(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a directory", hint="choose another --out")
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not present:
        return out
    run = read_run(out)
    if run is None:
        shown = ", ".join(present[:4]) + (" ..." if len(present) > 4 else "")
        raise OutputExists(
            f"{out} holds files that are not a train-toy run ({shown}); nothing was written",
            hint="choose a new or empty --out (--overwrite replaces only an earlier train-toy run)",
        )
    if not overwrite:
        n = len(run.get("checkpoints", []))
        raise OutputExists(
            f"{out} already holds a train-toy run ({run.get('status', '?')}, {n} checkpoints, seed "
            f"{run.get('config', {}).get('seed', '?')}); nothing was written",
            hint="pass --overwrite to replace it, or choose another --out",
        )
    extra = [n for n in present if n not in RUN_FILES and not n.startswith(".")]
    if extra:
        raise OutputExists(
            f"{out} holds a train-toy run and other files ({', '.join(extra[:4])}); a new run replaces the "
            "folder whole, so nothing was written",
            hint="move those files elsewhere first, or choose another --out",
        )
    return out


def _disk_error(exc: BaseException, out: Path) -> OutputError:
    """A full or read-only disk as one line, whether the OS or safetensors (its own error type) reports it."""
    import errno
    import re

    from ..pipeline.outputs import describe_os_error

    if isinstance(exc, OSError):
        return describe_os_error(exc, out)
    m = re.search(r"code: (\d+)", str(exc)) or re.search(r"os error (\d+)", str(exc))
    code = int(m.group(1)) if m else errno.EIO
    return describe_os_error(OSError(code, os.strerror(code)), out)


def _write_json(path: Path, obj) -> None:
    from ..pipeline.outputs import write_file_atomic

    write_file_atomic(path, json.dumps(obj, indent=2))


def save_checkpoint(model, tokenizer, path: Path, meta: dict) -> Path:
    """Save model + tokenizer + ``toy.json`` into ``path`` via a temporary sibling, renamed when complete."""
    tmp = path.parent / f".{path.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    with quiet_progress():  # no "Writing model shards" bar per checkpoint
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    (tmp / "toy.json").write_text(json.dumps(meta, indent=2))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


# --- the run -----------------------------------------------------------------------------------
@dataclass
class ToyRun:
    """A finished (or interrupted) training run: the log rows and where the checkpoints are."""

    out_dir: Path
    config: ToyConfig
    log: list[dict]
    checkpoints: list[dict]  # {"step", "path" relative to out_dir}
    seconds: dict[str, float] = field(default_factory=dict)
    threads: int = 1
    status: str = "done"

    def to_dict(self) -> dict:
        return {
            "kind": RUN_KIND,
            "status": self.status,
            "config": self.config.to_dict(),
            "threads": self.threads,
            "torch": torch.__version__,
            "checkpoints": self.checkpoints,
            "seconds": self.seconds,
            "final": self.log[-1] if self.log else None,
            "columns": LOG_COLUMNS,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return dumps(self.to_dict(), indent=indent)  # strict JSON: NaN/Infinity -> null

    def to_frame(self):
        """The training log, one row per log step."""
        import pandas as pd

        return pd.DataFrame(self.log, columns=list(LOG_COLUMNS))

    @property
    def checkpoint_dirs(self) -> list[Path]:
        return [Path(self.out_dir) / c["path"] for c in self.checkpoints]


def default_threads() -> int:
    """One thread. The toy's matrices are tiny (64 x 64), so a second thread buys little on a quiet
    machine, and on a busy one it costs dearly: measured here on 2 shared cores under load,
    0.3 s per step with 1 thread, 2.4-4.4 s with 2 (the threads wait on each other)."""
    return 1


def train_toy(
    out_dir: str | os.PathLike,
    config: ToyConfig | None = None,
    *,
    overwrite: bool = False,
    threads: int | None = None,
    on_log: Callable[[dict], None] | None = None,
    **overrides,
) -> ToyRun:
    """Train the toy model and save checkpoints into ``out_dir`` (layout: module docstring).

    ``config`` (default :class:`ToyConfig`) may be adjusted with keyword ``overrides``
    (``steps=300, every=50``). ``on_log(row)`` hears every log row (columns:
    :data:`LOG_COLUMNS`) as it is made. Bad settings raise :class:`BadInput` and an output
    directory that holds anything raises :class:`OutputExists`, both before anything is
    written; ``overwrite`` replaces an earlier train-toy run only, and only once the new run is
    complete (it is trained in a staging folder beside ``out_dir``). A full or read-only disk
    raises :class:`OutputError`, with nothing left behind. The run holds ``out_dir``'s output
    lock (``pipeline.outputs.hold_out``), as every command that writes does.

    >>> from headscope.toy import train_toy
    >>> run = train_toy("toy-run", steps=2000, every=100)     # doctest: +SKIP
    >>> run.to_frame().tail(3)                                 # doctest: +SKIP
    """
    from safetensors import SafetensorError

    from ..pipeline.outputs import describe_os_error, hold_out, make_staging, normal_permissions, replace_dir

    config = configure(config, overrides)
    n_threads = check_threads(threads)
    out = Path(out_dir)
    with hold_out(out):
        check_run_dir(out, overwrite)
        try:
            staging = make_staging(out)
        except OSError as exc:
            raise describe_os_error(exc, out) from None
        try:
            (staging / "checkpoints").mkdir()
            with torch_threads(n_threads):
                run = _train(staging, staging / "checkpoints", config, n_threads, on_log)
            normal_permissions(staging)  # save_pretrained and mkdtemp make private files and folders
            replace_dir(staging, out)
        except (OSError, SafetensorError) as exc:
            raise _disk_error(exc, out) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    run.out_dir = out
    return run


def configure(config: ToyConfig | None, overrides: dict) -> ToyConfig:
    """``config`` (default :class:`ToyConfig`) with ``overrides`` replaced, checked; an unknown name is :class:`BadInput`.

    >>> configure(None, {"stepz": 3})
    Traceback (most recent call last):
    ...
    headscope.errors.BadInput: unknown toy setting(s): stepz
      hint: use: steps, every, seed, n_layers, n_heads, d_model, vocab, n_ctx, block, copies, batch, lr, log_every, eval_seq_len, eval_batch, eval_seed
    """
    unknown = sorted(set(overrides) - set(ToyConfig.names()))
    if unknown:
        raise BadInput(f"unknown toy setting(s): {', '.join(unknown)}", hint=f"use: {', '.join(ToyConfig.names())}")
    return replace(config or ToyConfig(), **overrides).check()


def check_threads(threads: int | None) -> int:
    """The torch CPU threads to run with: ``threads``, or :func:`default_threads` for None; 0 or less is refused
    (as the command line's ``--threads`` refuses it: no value means "every core")."""
    if threads is None:
        return default_threads()
    if whole_number("threads", threads) < 1:
        raise BadInput(f"threads (--threads) must be at least 1 (got {threads})", hint="None (the default) runs 1")
    return int(threads)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads, then restore the caller's setting."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _train(out: Path, ckpt_root: Path, config: ToyConfig, n_threads: int, on_log) -> ToyRun:
    import pandas as pd

    tokenizer = build_tokenizer(config.vocab)
    model = build_model(config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(config.seed)
    ev_tokens, layout = eval_tokens(config)
    save_at = set(checkpoint_steps(config.steps, config.every))
    log_at = set(range(0, config.steps + 1, min(config.log_every, config.every))) | save_at
    run = ToyRun(out, config, [], [], threads=n_threads, status="training")
    _write_json(out / "run.json", run.to_dict())

    t_start = time.perf_counter()
    t_ckpt = 0.0
    loss_sum, loss_n = 0.0, 0
    V = config.vocab + 2
    try:
        for step in range(config.steps + 1):
            if step in log_at:
                ev = evaluate(model, ev_tokens, layout)
                row = _summary(step, loss_sum / loss_n if loss_n else float("nan"), ev, time.perf_counter() - t_start)
                loss_sum, loss_n = 0.0, 0
                run.log.append(row)
                if on_log:
                    on_log(row)
                if step in save_at:
                    t0 = time.perf_counter()
                    path = ckpt_root / checkpoint_name(step, config.steps)
                    save_checkpoint(
                        model,
                        tokenizer,
                        path,
                        {"kind": RUN_KIND, "step": step, "config": config.to_dict(), "live": row},
                    )
                    run.checkpoints.append({"step": step, "path": str(path.relative_to(out))})  # the run can move
                    pd.DataFrame(run.log, columns=list(LOG_COLUMNS)).to_csv(out / "train_log.csv", index=False)
                    _write_json(out / "run.json", run.to_dict())
                    t_ckpt += time.perf_counter() - t0
            if step == config.steps:
                break
            batch = copy_batch(config.recipe, config.batch, gen)
            logits = model(batch.tokens).logits  # [batch, n_ctx, V]
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), batch.tokens[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item()
            loss_n += 1
        run.status = "done"
    except KeyboardInterrupt:
        run.status = "interrupted"
        raise
    finally:
        total = time.perf_counter() - t_start
        run.seconds = {"train": round(total - t_ckpt, 3), "checkpoints": round(t_ckpt, 3), "total": round(total, 3)}
        pd.DataFrame(run.log, columns=list(LOG_COLUMNS)).to_csv(out / "train_log.csv", index=False)
        _write_json(out / "run.json", run.to_dict())
    return run
