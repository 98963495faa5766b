"""Benchmarks of this framework against PyTorch CPU, a GEMM floor and a naive baseline.

Run ``python -m benchmarks --help``; see ``docs/benchmarks.md`` for the method
and the latest results. Importing this package imports nothing heavy (no NumPy,
no framework, no torch): each implementation runs in its own subprocess.
"""
