"""Process-wide run-time settings and kernels: the default dtype, the random
generator, the fused BLAS routines the hot paths call and BLAS's thread count,
and the thread groups that share a batch under ``fit(threads=K)``.
"""
