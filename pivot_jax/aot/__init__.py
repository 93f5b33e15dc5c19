"""Ahead-of-time planning for TPU slices: the trainer's own step compiled for a slice on any host, with libtpu.

    topology  Cloud slice names (v5p-64, v5litepod-16, v6e-8, v4-32) -> shapes, per-chip HBM and bandwidth, and
              libtpu's compile-only devices
    plan      one compile: per-device memory against HBM, the FLOPs (analytic, counted, XLA's), the roofline
    flops     the matmul FLOPs of a step counted in its jaxpr, loops multiplied out
    search    the smallest change that fits: mesh, remat policy, micro-batches, then a larger slice
    planner   the three together: what `python -m pivot_jax.aot` prints and writes

`python -m pivot_jax.aot` is the command over them.
"""
