"""Fresh-process cases: peak resident memory of a training run, and import time.

Peak memory (at most 3 rounds): a new interpreter per implementation and round builds the model,
makes the fixed data set (``MEMORY_BATCHES`` batches, the same arrays for both
frameworks) and trains ``MEMORY_STEPS`` steps; the value is ``ru_maxrss`` (the
process's peak resident set, interpreter and libraries included), in MB. The
resident set after imports and after setup is recorded in the JSON too.

Import time: a bare ``python -c`` interpreter times ``import framework`` plus
plugin discovery (``REGISTRY.load()``), or ``import torch``, with
``time.perf_counter`` inside the process (interpreter start-up not counted),
after one unmeasured import that brings the bytecode cache up to date.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from typing import Any

from benchmarks.case import Case

MEMORY_STEPS = 200
MEMORY_BATCHES = 40


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    """This process's peak resident memory. On Linux ``VmHWM``: ``ru_maxrss`` also counts the
    peak a child inherits from the parent that forked it, a floor under every measurement."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _memory(model: str, impl: str, quick: bool) -> dict[str, Any]:
    from benchmarks import cases_models as cm

    batches = 3 if quick else MEMORY_BATCHES
    epochs = 2 if quick else MEMORY_STEPS // MEMORY_BATCHES
    if impl == "torch":
        import torch

        imported = _rss_mb()
        x_np, y_np, batch = cm._data(model, quick, batches)
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
        net, optimizer = cm.build_torch(model)
        setup = _rss_mb()
        for _ in range(epochs):
            cm.torch_train_loop(net, optimizer, x, y, batch)
    else:
        import framework  # noqa: F401

        imported = _rss_mb()
        x, y, batch = cm._data(model, quick, batches)
        net = cm.build_ours(model)
        setup = _rss_mb()
        net.fit(x, y, epochs=epochs, batch_size=batch, shuffle=False, verbose=0)
    return {
        "value": _peak_mb(),
        "rss_after_import_mb": imported,
        "rss_after_setup_mb": setup,
        "steps": epochs * batches,
    }


def mlp_memory_ours(quick: bool) -> dict[str, Any]:
    return _memory("mlp", "ours", quick)


def mlp_memory_torch(quick: bool) -> dict[str, Any]:
    return _memory("mlp", "torch", quick)


def lenet_memory_ours(quick: bool) -> dict[str, Any]:
    return _memory("lenet", "ours", quick)


def lenet_memory_torch(quick: bool) -> dict[str, Any]:
    return _memory("lenet", "torch", quick)


def fashion_memory_ours(quick: bool) -> dict[str, Any]:
    return _memory("fashion_cnn", "ours", quick)


def fashion_memory_torch(quick: bool) -> dict[str, Any]:
    return _memory("fashion_cnn", "torch", quick)


_IMPORT = """
import time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
{body}
t1 = time.perf_counter()
print(t1 - t0)
"""


def _import_seconds(body: str) -> float:
    """Seconds of ``body`` in a fresh interpreter, after one unmeasured run.

    The unmeasured run writes any stale bytecode (``PYTHONDONTWRITEBYTECODE``
    is dropped for it), so the measured run sees an installed package's steady
    state rather than the cost of compiling sources edited since the last run.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", _IMPORT.format(body=body)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=True,
        )
    return float(out.stdout.strip().splitlines()[-1])


def ours_import(quick: bool) -> float:
    """``import framework`` plus plugin discovery, seconds."""
    return _import_seconds("import framework\nfrom framework.registry import REGISTRY\nREGISTRY.load()")


def torch_import(quick: bool) -> float:
    return _import_seconds("import torch")


def _memory_case(model: str, prefix: str, title: str) -> Case:
    impls = {"ours": f"{__name__}:{prefix}_memory_ours", "torch": f"{__name__}:{prefix}_memory_torch"}
    title = f"{title}: peak RSS of {MEMORY_STEPS} training steps"
    return Case(f"{model}_peak_memory", title, "MB", impls, "fresh", max_rounds=3)


CASES = [
    _memory_case("mlp", "mlp", "MLP"),
    _memory_case("lenet", "lenet", "LeNet-5"),
    _memory_case("fashion_cnn", "fashion", "Fashion-MNIST CNN"),
    Case(
        "import",
        "import framework + plugin discovery (vs import torch)",
        "s",
        {"ours": f"{__name__}:ours_import", "torch": f"{__name__}:torch_import"},
        "fresh",
    ),
]


if __name__ == "__main__":  # pragma: no cover - a debugging aid
    print(json.dumps(_memory(sys.argv[1], sys.argv[2], "--quick" in sys.argv)))
