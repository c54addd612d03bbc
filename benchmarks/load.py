"""Model load time: first load (fetch + dequantize + cache) vs a load from the cache.

Each load runs in a fresh Python process, timed from just before ``load_model`` to just
after it (imports are timed apart), so no warm state in the process helps:

- ``first``: an empty ``HEADSCOPE_CACHE`` holding only the downloaded GGUF file (copied in,
  so the network is not timed): sha256 check, dequantize with transformers + gguf, save
  safetensors, load and wrap in a TransformerBridge;
- ``cached``: the same call with the converted model already in the cache (``--cached-reps``
  processes, median);
- ``hf``: plain ``AutoModelForCausalLM.from_pretrained`` + ``AutoTokenizer`` of the cached
  directory: what loading costs without headscope and TransformerLens.

The operating system's file cache is warm for every run but the first one's GGUF read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _bench import emit, load_average, median, say  # noqa: E402

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads({threads})
import headscope
from transformers import AutoModelForCausalLM, AutoTokenizer
t_import = time.perf_counter() - t0
t0 = time.perf_counter()
if "{kind}" == "hf":
    path = headscope.models.resolve_source("{model}").path
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to("{device}")
    tok = AutoTokenizer.from_pretrained(path)
else:
    m = headscope.load_model("{model}", device="{device}", log=lambda s: None)
t_load = time.perf_counter() - t0
print("CHILD " + json.dumps({{"import_s": t_import, "load_s": t_load}}))
"""


def child(kind: str, model: str, device: str, threads: int, env: dict) -> dict:
    code = CHILD.format(kind=kind, model=model, device=device, threads=threads)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    line = next((line for line in proc.stdout.splitlines() if line.startswith("CHILD ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"{kind} load failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[6:])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model", default="smollm2-135m-instruct-q4", help="a built-in alias (its first load converts a GGUF)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--cached-reps", type=int, default=3)
    args = p.parse_args(argv)

    from headscope.models import builtin
    from headscope.models.loading import prepare_builtin

    say(f"load: {args.model} on {args.device}; load average at start {load_average()}")
    prepare_builtin(args.model)  # the cache under test holds the converted model
    spec = builtin.BUILTINS[builtin.canonical_alias(args.model, log=lambda s: None) or args.model]
    gguf = builtin.fetch_gguf(spec, log=lambda s: None)
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="headscope-bench-cache-") as fresh:
        os.makedirs(os.path.join(fresh, "downloads"))
        shutil.copy(gguf, os.path.join(fresh, "downloads", gguf.name))
        t0 = time.perf_counter()
        first = child("first", args.model, args.device, args.threads, {**env, "HEADSCOPE_CACHE": fresh})
        say(f"  first load (convert + cache): {first['load_s']:.1f} s ({time.perf_counter() - t0:.1f} s process)")
        meta = json.loads(open(os.path.join(fresh, "models", spec.folder, "headscope.json")).read())
    cached, hf = [], []
    for _ in range(args.cached_reps):  # interleaved
        cached.append(child("cached", args.model, args.device, args.threads, env))
        hf.append(child("hf", args.model, args.device, args.threads, env))
        say(f"  cached load {cached[-1]['load_s']:.2f} s, plain transformers {hf[-1]['load_s']:.2f} s")
    record = {
        "section": "load",
        "model": args.model,
        "device": args.device,
        "first_load_s": first["load_s"],
        "first_convert_s": meta.get("converted_seconds"),
        "cached_load_s": median([c["load_s"] for c in cached]),
        "cached_load_all_s": [c["load_s"] for c in cached],
        "hf_load_s": median([h["load_s"] for h in hf]),
        "import_s": median([c["import_s"] for c in cached]),
        "load_average_end": load_average(),
    }
    record["first / cached"] = record["first_load_s"] / record["cached_load_s"]
    emit(record)
    return record


if __name__ == "__main__":
    main()
