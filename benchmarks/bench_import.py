"""Time ``import framework`` and the discovery of every plugin, each in a fresh interpreter.

Each round starts a new Python process that measures, with
``time.perf_counter`` inside the process (so interpreter start-up is not
counted):

- ``import framework``;
- ``import framework`` followed by ``framework.registry.manager.REGISTRY.load()``
  (entry-point discovery plus importing and registering every plugin);
- ``import numpy`` alone, the floor under both (the framework imports it);
- ``import torch``, for comparison, when torch is importable.

Prints the median and the spread (min..max, and the interquartile range) over
``--rounds`` rounds. Run it with::

    python benchmarks/bench_import.py --rounds 15
    python benchmarks/bench_import.py --json     # machine-readable

Plugin warnings (a declared built-in module that does not exist yet) are
silenced so they do not distort the timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

SNIPPETS = {
    "import numpy (baseline)": "import numpy",
    "import framework": "import framework",
    "import framework + REGISTRY.load()": "import framework\nframework.registry.REGISTRY.load()",
    "import torch": "import torch",
}

TEMPLATE = """
import time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
{body}
t1 = time.perf_counter()
{check}
print(t1 - t0)
"""

CHECK = {
    "import framework + REGISTRY.load()": (
        "import framework.registry.manager\nassert framework.registry.manager.REGISTRY.loaded\n"
        "assert framework.registry.manager.REGISTRY.names('layers')"
    ),
}


def measure(label: str, rounds: int) -> list[float]:
    """Seconds spent in ``SNIPPETS[label]``, one fresh interpreter per round."""
    body = SNIPPETS[label]
    if "REGISTRY" in body:
        body = "import framework.registry.manager\n" + body
    code = TEMPLATE.format(body=body, check=CHECK.get(label, ""))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWORK_")}
    env["PYTHONDONTWRITEBYTECODE"] = "0"
    times = []
    for _ in range(rounds):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"{label!r} failed:\n{result.stderr}")
        times.append(float(result.stdout.strip().splitlines()[-1]))
    return times


def summary(times: list[float]) -> dict[str, Any]:
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {
        "rounds": len(times),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "iqr_s": q[2] - q[0],
    }


def torch_available() -> bool:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)",
        ],
        capture_output=True,
    )
    return result.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11, help="fresh interpreters per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--target", type=float, default=0.15, help="seconds the discovery should stay under")
    args = parser.parse_args(argv)

    labels = ["import numpy (baseline)", "import framework", "import framework + REGISTRY.load()"]
    if torch_available():
        labels.append("import torch")
    # One warm-up run each, so the first measured round does not pay for a cold disk cache.
    for label in labels:
        measure(label, 1)
    results = {label: summary(measure(label, args.rounds)) for label in labels}
    if "import torch" not in results:
        results["import torch"] = None

    if args.json:
        info = {"python": sys.version.split()[0], "loadavg": os.getloadavg(), "results": results}
        print(json.dumps(info, indent=2))
        return 0
    print(
        f"Python {sys.version.split()[0]}, {args.rounds} fresh interpreters each (time inside the process)\n"
    )
    print(f"{'measurement':<38} {'median':>9} {'min':>9} {'max':>9} {'IQR':>9}")
    for label, r in results.items():
        if r is None:
            print(f"{label:<38} {'(torch is not installed)':>39}")
            continue
        print(
            f"{label:<38} {r['median_s'] * 1e3:>7.1f}ms {r['min_s'] * 1e3:>7.1f}ms "
            f"{r['max_s'] * 1e3:>7.1f}ms {r['iqr_s'] * 1e3:>7.1f}ms"
        )
    full = results["import framework + REGISTRY.load()"]["median_s"]
    own = full - results["import numpy (baseline)"]["median_s"]
    verdict = "within" if full < args.target else "OVER"
    print(
        f"\nimport + discovery: {full * 1e3:.1f} ms median, {verdict} the {args.target * 1e3:.0f} ms target"
    )
    print(f"of which the framework's own (above import numpy): {own * 1e3:.1f} ms")
    print(f"load average while measuring: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
