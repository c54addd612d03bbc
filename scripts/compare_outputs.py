"""Compare two runs' JSON outputs number by number (issue 9, point 9: nothing a user sees changes by accident).

    python scripts/compare_outputs.py BEFORE.json AFTER.json [--tol 1e-6]

Head labels are normalised ("18.6" and "L18H6" are the same head); keys that exist on one side only
and timings are listed but not counted as differences. Exit 1 when a number differs by more than --tol.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

_HEAD = re.compile(r"^L?(\d+)[.H](\d+)$")


def norm_key(k: str) -> str:
    m = _HEAD.match(k)
    return f"L{m.group(1)}H{m.group(2)}" if m else k


def norm(v):
    if isinstance(v, dict):
        return {norm_key(k): norm(x) for k, x in v.items()}
    if isinstance(v, list):
        return [norm(x) for x in v]
    if isinstance(v, str):
        return norm_key(v)
    return v


def walk(a, b, path, out, tol):
    if path.split(".")[-1] in (
        "timings",
        "definitions",
        "notes",
        "findings",
        "note",
        "method",
        "tokens",
        "pairs_tokens",
        "top_pairs",
        "directions",
        "text",
        "how",
    ):
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out["only"].append(f"{path}.{k} only {'after' if k in b else 'before'}")
            else:
                walk(a[k], b[k], f"{path}.{k}", out, tol)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out["diff"].append(f"{path}: length {len(a)} -> {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            walk(x, y, f"{path}[{i}]", out, tol)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        out["numbers"] += 1
        if abs(a - b) > tol:
            out["diff"].append(f"{path}: {a} -> {b}")
            out["max"] = max(out["max"], abs(a - b))
    elif a != b:
        out["diff"].append(f"{path}: {a!r} -> {b!r}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--tol", type=float, default=1e-6)
    args = ap.parse_args()
    a, b = (norm(json.load(open(p))) for p in (args.before, args.after))
    out = {"diff": [], "only": [], "numbers": 0, "max": 0.0}
    walk(a, b, "$", out, args.tol)
    print(
        f"{out['numbers']} numbers compared; {len(out['diff'])} differences beyond {args.tol}"
        f" (largest {out['max']:.3g}); {len(out['only'])} keys on one side only"
    )
    for line in out["diff"][:40] + out["only"][:20]:
        print("  " + line)
    return 1 if out["diff"] else 0


if __name__ == "__main__":
    sys.exit(main())
