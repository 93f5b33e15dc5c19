"""This machine's measured float32 matmul peak: XLA's GEMM (what our train step runs on) beside torch's (MKL /
oneDNN), on a large square product and on the SmolLM2-135M train step's own shapes, same run.

  python benchmarks/matmul_peak.py [--size 2048] [--repeats 5] [--json FILE]

The peak is the best GFLOP/s of either library on the square product; run.py divides the train steps' achieved
FLOP/s by it.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from common import add_json_flag, report

# (M, K, N) of the SmolLM2-135M step at batch 4 x 256 tokens: q/o projections, the MLP, the tied vocabulary.
MODEL_SHAPES = {"attention proj 1024x576x576": (1024, 576, 576), "mlp 1024x576x1536": (1024, 576, 1536),
                "vocab 1024x576x49152": (1024, 576, 49152)}


def _best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(shapes: dict[str, tuple[int, int, int]], repeats: int) -> list[dict]:
    import torch

    rows = []
    dot = jax.jit(jnp.dot)
    for name, (m, k, n) in shapes.items():
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        flops = 2.0 * m * k * n
        xla = flops / _best(lambda: dot(ja, jb).block_until_ready(), repeats) / 1e9
        with torch.no_grad():
            mkl = flops / _best(lambda: torch.mm(ta, tb), repeats) / 1e9
        rows.append({"product": name, "XLA GFLOP/s": xla, "torch GFLOP/s": mkl, "XLA / torch": xla / mkl})
    return rows


def peak_gflops(rows: list[dict]) -> float:
    """The best of either library on the square product (the first row)."""
    return max(rows[0]["XLA GFLOP/s"], rows[0]["torch GFLOP/s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="the square product only")
    add_json_flag(parser)
    args = parser.parse_args()
    import torch

    shapes = {f"square {args.size}^3": (args.size,) * 3, **({} if args.quick else MODEL_SHAPES)}
    rows = measure(shapes, args.repeats)
    notes = [f"peak float32 matmul here: {peak_gflops(rows):,.0f} GFLOP/s (best of XLA and torch on the square "
             f"product; torch {torch.__version__}, {torch.get_num_threads()} threads)"]
    report("float32 matmul peak", rows, notes, args.json)


if __name__ == "__main__":
    main()
