"""Reading the user's texts (--text / --file) and parsing small option values."""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInput


def read_texts(texts: list[str] | None, files: list[Path] | None) -> list[tuple[str, str]]:
    """``[(title, text)]`` from repeated --text and --file options, each checked non-empty and UTF-8."""
    out: list[tuple[str, str]] = []
    for i, t in enumerate(texts or [], 1):
        if not t.strip():
            raise BadInput(f"--text number {i} is empty", hint="give some text, ideally one that repeats itself")
        out.append((f"--text {i}", t))
    for f in files or []:
        path = Path(f)
        if not path.is_file():
            raise BadInput(f"--file {path} does not exist or is not a file", hint="check the path")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(
                f"--file {path} is not UTF-8 text (byte {exc.start} cannot be decoded)",
                hint="convert it first, e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8`",
            ) from None
        if not text.strip():
            raise BadInput(f"--file {path} is empty", hint="give a file with some text in it")
        out.append((path.name, text))
    return out


def parse_thresholds(items: list[str] | None, known: dict[str, float]) -> dict[str, float]:
    """``["induction=0.5", ...]`` -> dict, names checked against ``known``."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in known:
            raise BadInput(f"bad --threshold {item!r}", hint=f"use NAME=VALUE with NAME one of: {', '.join(known)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise BadInput(f"bad --threshold {item!r}: {value!r} is not a number") from None
    return out


def slug(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(name).name or name)
    return keep.strip("-.") or "model"
