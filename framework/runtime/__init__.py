"""Process-wide run-time settings and kernels: the default dtype, the random
generator, and the fused BLAS routines the hot paths call.
"""
