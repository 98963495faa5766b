"""The report of a run: statistics of the samples, paired ratios, the table and the JSON file.

:func:`summarize` and :func:`paired_ratios` turn the samples the harness collects
into the ``stats`` and ``ratios`` of each case's entry; :func:`table` lays a
results dict (fresh from :func:`benchmarks.harness.run` or read back from the
JSON) out as text or Markdown, :func:`row_text` as one line of the progress
log; :func:`write_json` saves it. Standard library only.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.case import IMPL_ORDER

RESULTS = Path(__file__).resolve().parent / "results"


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max, quartiles and the relative spread ``(q3 - q1) / median``."""
    vals = sorted(values)
    med = statistics.median(vals)
    if len(vals) >= 4:
        q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive")
    else:
        q1, q3 = vals[0], vals[-1]
    return {
        "median": med,
        "min": vals[0],
        "max": vals[-1],
        "q1": q1,
        "q3": q3,
        "iqr_rel": (q3 - q1) / med if med else 0.0,
        "n": len(vals),
    }


def paired_ratios(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """``other / ours`` per round (paired) and of the medians, for each other implementation."""
    ours = samples.get("ours") or []
    ratios: dict[str, dict[str, float]] = {}
    for impl, vals in samples.items():
        if impl == "ours" or not vals or not ours:
            continue
        paired = [b / a for a, b in zip(ours, vals) if a > 0]
        ratios[impl] = {
            "of_medians": statistics.median(vals) / statistics.median(ours),
            "paired_median": statistics.median(paired) if paired else float("nan"),
            "paired_min": min(paired) if paired else float("nan"),
            "paired_max": max(paired) if paired else float("nan"),
        }
    return ratios


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _cell(stats: dict[str, float] | None) -> str:
    if not stats:
        return "-"
    return f"{_fmt(stats['median'])} ±{100 * stats['iqr_rel'] / 2:.0f}%"


def _ratio_text(name: str, entry: dict[str, Any]) -> str:
    parts = []
    for impl, r in entry["ratios"].items():
        if impl == "floor":
            label, value = "ours/floor", 1.0 / r["paired_median"]
        elif entry["unit"] in ("MB",):
            label, value = f"ours/{impl}", 1.0 / r["paired_median"]
        else:
            label, value = f"{impl}/ours", r["paired_median"]
        parts.append(f"{label} {value:.2f}x [{_range(impl, r, entry['unit'])}]")
    return "; ".join(parts)


def _range(impl: str, r: dict[str, float], unit: str) -> str:
    lo, hi = r["paired_min"], r["paired_max"]
    if impl == "floor" or unit == "MB":
        lo, hi = 1.0 / hi, 1.0 / lo
    return f"{lo:.2f}-{hi:.2f}"


def row_text(name: str, entry: dict[str, Any]) -> str:
    stats = entry["stats"]
    cells = "  ".join(f"{i} {_cell(stats.get(i))}" for i in IMPL_ORDER if i in stats)
    return f"{entry['unit']:<9} {cells}  {_ratio_text(name, entry)}"


def table(results: dict[str, Any], markdown: bool = False) -> str:
    """The results as a text (or Markdown) table: medians ± half the IQR, and paired ratios."""
    impls = [i for i in IMPL_ORDER if any(i in e["stats"] for e in results["cases"].values())]
    header = ["case", "unit", *impls, "ratios (paired median [min-max])"]
    rows = []
    for name, entry in results["cases"].items():
        cells = []
        for i in impls:
            if i in entry["errors"]:
                cells.append("error")
            else:
                cells.append(_cell(entry["stats"].get(i)))
        rows.append([name, entry["unit"], *cells, _ratio_text(name, entry)])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows]
    )


def write_json(results: dict[str, Any], path: Path | None) -> Path:
    """Write ``results`` to ``path`` (default ``benchmarks/results/latest.json``)."""
    if path is None:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / "latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path
