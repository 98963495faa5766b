"""The benchmark harness: worker subprocesses and interleaved rounds.

Every implementation of a case (``ours``, ``torch``, ``floor``, ``naive``)
runs in its own subprocess, started with ``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` set before NumPy is imported
and, where threadpoolctl is importable, ``threadpool_limits`` as well (torch
additionally gets ``torch.set_num_threads``), so both frameworks use the same
number of threads.

Two kinds of case:

- ``time``: each implementation lives in one long-lived worker that builds
  the case once, runs a warm-up round, then answers "run one round" requests.
  The parent asks the workers in turn, A B A B ..., for ``rounds`` rounds, so
  both see the same machine load; the paired ratio of each round's A and B is
  reported next to the ratio of the medians.
- ``fresh``: one new interpreter per implementation and round (peak resident
  memory, import time), again interleaved.

:func:`run` takes the cases to run as an argument (``python -m benchmarks``
picks them from :mod:`benchmarks.catalog`; this module imports no case
module) and returns the results dict that :mod:`benchmarks.report` summarizes,
lays out as a table and writes as JSON.

This module imports only the standard library at the top (and the package's
``case`` and ``report``, which import only the standard library), so a worker
or a fresh interpreter that measures ``import framework`` starts clean.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from benchmarks.case import IMPL_ORDER, Case
from benchmarks.report import paired_ratios, row_text, summarize

ROOT = Path(__file__).resolve().parent.parent
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")

#: Seconds the parent waits before each timed round (see ``run``).
SETTLE = 0.25


def _resolve(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


# -- inside a subprocess -----------------------------------------------------


def limit_threads(impl: str, threads: int) -> dict[str, Any]:
    """Pin NumPy's BLAS (and torch) to ``threads``; returns what was set, for the JSON."""
    info: dict[str, Any] = {"threads": threads}
    try:
        import numpy  # noqa: F401  (loads the BLAS so threadpoolctl can see it)
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(threads)
        info["threadpools"] = [
            {k: p.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for p in threadpool_info()
        ]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed; environment variables only"
    if impl == "torch":
        import torch

        torch.set_num_threads(threads)
        info["torch_threads"] = torch.get_num_threads()
    return info


def _serve(impl: str, threads: int, quick: bool, out: TextIO) -> None:
    """Worker loop: one JSON request per stdin line, one JSON answer per line on ``out``."""
    import warnings

    warnings.simplefilter("ignore")
    limits = limit_threads(impl, threads)
    runners: dict[str, Callable[[], float]] = {}

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    reply({"ready": True, "limits": limits})
    for line in sys.stdin:
        request = json.loads(line)
        case, spec = request["case"], request.get("spec")
        try:
            if request["op"] == "setup":
                runner = _resolve(spec)(quick)
                runner()  # warm-up: builds the model, allocates the workspaces
                runners[case] = runner
                reply({"ok": True})
            elif request["op"] == "run":
                reply({"value": float(runners[case]())})
            elif request["op"] == "drop":
                runners.pop(case, None)
                reply({"ok": True})
        except Exception as exc:  # reported in the table, the other cases go on
            reply({"error": f"{type(exc).__name__}: {exc}"})


def _oneshot(impl: str, spec: str, threads: int, quick: bool, out: TextIO) -> None:
    import warnings

    warnings.simplefilter("ignore")
    if not spec.endswith("_import"):  # the import cases pin threads themselves, after the clock starts
        limit_threads(impl, threads)
    result = _resolve(spec)(quick)
    if not isinstance(result, dict):
        result = {"value": float(result)}
    out.write(json.dumps(result) + "\n")
    out.flush()


# -- in the parent -----------------------------------------------------------


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONWARNINGS", None)
    return env


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.harness", *args]


class Worker:
    """A long-lived subprocess running one implementation's time cases."""

    def __init__(self, impl: str, threads: int, quick: bool) -> None:
        self.impl = impl
        args = ["--worker", impl, "--threads", str(threads)] + (["--quick"] if quick else [])
        self.proc = subprocess.Popen(
            _command(*args),
            cwd=ROOT,
            env=_env(threads),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
            bufsize=1,
        )
        hello = self._read()
        self.limits = hello.get("limits", {})

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"the {self.impl} worker exited (code {self.proc.poll()})")
        return json.loads(line)

    def request(self, **msg: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(msg) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _run_fresh(impl: str, spec: str, threads: int, quick: bool) -> dict[str, Any]:
    args = ["--oneshot", impl, spec, "--threads", str(threads)] + (["--quick"] if quick else [])
    proc = subprocess.run(
        _command(*args), cwd=ROOT, env=_env(threads), capture_output=True, text=True, timeout=900
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def torch_available() -> bool:
    """Whether ``import torch`` would succeed, without importing it here."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, load, Python/NumPy/torch versions and NumPy's BLAS (for the JSON and docs)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "L2 cache", "L3 cache"):
                info[key.strip()] = value.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    probe = (
        "import json, numpy\n"
        "d = {'numpy': numpy.__version__}\n"
        "try:\n"
        "    from threadpoolctl import threadpool_info\n"
        "    d['blas'] = [{k: p.get(k) for k in ('internal_api', 'version', 'architecture', 'num_threads')}"
        " for p in threadpool_info()]\n"
        "except ImportError:\n"
        "    d['blas'] = None\n"
        "print(json.dumps(d))\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
        info.update(json.loads(out.stdout))
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError):
        pass
    if torch_available():
        try:
            from importlib.metadata import version

            info["torch"] = version("torch")
        except Exception:
            info["torch"] = "installed"
    return info


def run(
    cases: Sequence[Case],
    rounds: int,
    threads: int,
    quick: bool,
    impls: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
    settle: float = SETTLE,
) -> dict[str, Any]:
    """Run ``cases`` interleaved; returns the results dict written as JSON.

    Before each timed round the parent waits ``settle`` seconds: after its last
    product, OpenBLAS keeps its worker threads spinning for about 0.1 s (2^28
    cycles), so a worker asked right after another would share the cores with
    the other's spinning threads (measured: our MLP step 4.8 ms against 2.5 ms
    alone, the GEMM floor 3.8 against 1.6 ms).
    """
    have_torch = torch_available()
    wanted = [i for i in IMPL_ORDER if (impls is None or i in impls) and (i != "torch" or have_torch)]
    started = time.time()
    results: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {"rounds": rounds, "threads": threads, "quick": quick, "impls": wanted, "settle": settle},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cases": {},
    }
    if not have_torch:
        log("torch is not importable: the torch column is skipped")
    workers: dict[str, Worker] = {}
    try:
        for case in cases:
            present = [i for i in wanted if i in case.impls]
            if not present:
                continue
            log(f"-- {case.name}: {case.title} ({', '.join(present)})")
            samples: dict[str, list[float]] = {i: [] for i in present}
            errors: dict[str, str] = {}
            extra: dict[str, list[dict[str, Any]]] = {i: [] for i in present}
            if case.kind == "time":
                for impl in present:
                    if impl not in workers:
                        workers[impl] = Worker(impl, threads, quick)
                    answer = workers[impl].request(op="setup", case=case.name, spec=case.impls[impl])
                    if "error" in answer:
                        errors[impl] = answer["error"]
                active = [i for i in present if i not in errors]
                for _ in range(rounds):
                    for impl in active:
                        time.sleep(settle)  # the previous worker's BLAS threads stop spinning
                        answer = workers[impl].request(op="run", case=case.name)
                        if "error" in answer:
                            errors[impl] = answer["error"]
                        else:
                            samples[impl].append(answer["value"])
                    active = [i for i in active if i not in errors]
                for impl in present:
                    if impl in workers:
                        workers[impl].request(op="drop", case=case.name)
            else:
                for _ in range(min(rounds, case.max_rounds or rounds)):
                    for impl in present:
                        if impl in errors:
                            continue
                        answer = _run_fresh(impl, case.impls[impl], threads, quick)
                        if "error" in answer:
                            errors[impl] = answer["error"]
                        else:
                            samples[impl].append(answer.pop("value"))
                            extra[impl].append(answer)
            entry: dict[str, Any] = {
                "title": case.title,
                "unit": case.unit,
                "kind": case.kind,
                "samples": {i: v for i, v in samples.items() if v},
                "stats": {i: summarize(v) for i, v in samples.items() if v},
                "errors": errors,
            }
            if any(extra.values()):
                entry["extra"] = {i: v for i, v in extra.items() if v}
            entry["ratios"] = paired_ratios(samples)
            results["cases"][case.name] = entry
            for impl, err in errors.items():
                log(f"   {impl}: ERROR {err}")
            log("   " + row_text(case.name, entry))
    finally:
        for worker in workers.values():
            worker.close()
    results["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["seconds"] = round(time.time() - started, 1)
    return results


def _subprocess_main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="benchmarks.harness", description="(internal) benchmark worker")
    parser.add_argument("--worker")
    parser.add_argument("--oneshot", nargs=2, metavar=("IMPL", "SPEC"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    # The protocol owns stdout; anything a library prints goes to stderr.
    protocol = sys.stdout
    sys.stdout = sys.stderr
    if args.worker:
        _serve(args.worker, args.threads, args.quick, protocol)
    elif args.oneshot:
        _oneshot(args.oneshot[0], args.oneshot[1], args.threads, args.quick, protocol)
    else:
        parser.error("run `python -m benchmarks`; this module is its worker")


if __name__ == "__main__":
    _subprocess_main(sys.argv[1:])
