"""Summaries of the servers' cProfile files (``roomcast bench --profile DIR``).

Each server ran as ``python -m cProfile -o DIR/<name>.prof -m <module>``; after it exited, this
module reads the file with :mod:`pstats`, writes ``<name>.txt`` (the top functions by own and by
cumulative time) next to it and returns the same top lists for the JSON results.
"""

from __future__ import annotations

import io
import pathlib
import pstats
from typing import Any

__all__ = ["summarize", "summarize_dir"]


def _rows(stats: pstats.Stats, key: str, top: int) -> list[dict[str, Any]]:
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    items = sorted(table.items(), key=lambda kv: kv[1][2 if key == "tottime" else 3], reverse=True)
    rows = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in items[:top]:
        rows.append(
            {
                "function": f"{pathlib.Path(filename).name}:{line}({func})",
                "ncalls": ncalls,
                "tottime_s": round(tottime, 4),
                "cumtime_s": round(cumtime, 4),
            }
        )
    return rows


def summarize(path: pathlib.Path, top: int = 20) -> dict[str, Any]:
    stats = pstats.Stats(str(path))
    text = io.StringIO()
    printer = pstats.Stats(str(path), stream=text)
    printer.sort_stats("tottime").print_stats(top)
    printer.sort_stats("cumulative").print_stats(top)
    path.with_suffix(".txt").write_text(text.getvalue(), encoding="utf-8")
    total: float = stats.total_tt  # type: ignore[attr-defined]
    return {
        "file": str(path),
        "total_s": round(total, 3),
        "by_self": _rows(stats, "tottime", top),
        "by_cumulative": _rows(stats, "cumtime", top),
    }


def summarize_dir(root: pathlib.Path, top: int = 20) -> dict[str, Any]:
    """Every ``*.prof`` under ``root`` (keyed by its path relative to root, without suffix)."""
    out: dict[str, Any] = {}
    for path in sorted(root.rglob("*.prof")):
        key = str(path.relative_to(root).with_suffix(""))
        try:
            out[key] = summarize(path, top)
        except (OSError, EOFError, TypeError, ValueError) as exc:
            out[key] = {"file": str(path), "error": f"{type(exc).__name__}: {exc}"}
    return out
