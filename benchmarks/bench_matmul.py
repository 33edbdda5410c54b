"""The machine's practical float32 peak: GFLOP/s of a 2048x2048 matmul in numpy, torch and
onnxruntime, at the bench's thread count.

    python -m stae_deploy.benchmarks.bench_matmul --threads T [--repeats N]

Each contender is timed best-of-N after one warm-up call; a matmul of n x n matrices is 2 n^3
FLOP. The measurement runs in a fresh process (:func:`matmul_gflops`) because numpy's BLAS
fixes its thread count when it loads, from ``OPENBLAS_NUM_THREADS`` and friends. Prints one JSON
line: contender -> GFLOP/s, plus ``best``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable

import numpy as np

from stae_deploy.benchmarks.bench_subprocess import run_module_json
from stae_deploy.runtime.errors import exit_code_of

MATMUL_SIZE = 2048
MATMUL_REPEATS = 5
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def matmul_gflops(threads: int, repeats: int = MATMUL_REPEATS) -> dict[str, float]:
    """Contender ("numpy", "torch", "onnxruntime") -> best GFLOP/s of a 2048x2048 float32
    matmul on ``threads`` threads, and ``"best"``: the highest of them."""
    return run_module_json("stae_deploy.benchmarks.bench_matmul",
                           ["--threads", str(threads), "--repeats", str(repeats)],
                           env={name: str(threads) for name in THREAD_VARIABLES})


def best_gflops(matmul: Callable[[], object], size: int, repeats: int) -> float:
    """GFLOP/s of the fastest of ``repeats`` calls of ``matmul`` (size x size), after a warm-up."""
    matmul()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul()
        seconds.append(time.perf_counter() - start)
    return 2 * size ** 3 / min(seconds) / 1e9


def _numpy(a: np.ndarray, b: np.ndarray, threads: int) -> Callable[[], object]:
    return lambda: a @ b            # threads: set by THREAD_VARIABLES before numpy loaded


def _torch(a: np.ndarray, b: np.ndarray, threads: int) -> Callable[[], object]:
    import torch

    torch.set_num_threads(threads)
    left, right = torch.from_numpy(a), torch.from_numpy(b)
    return lambda: torch.mm(left, right)


def _onnxruntime(a: np.ndarray, b: np.ndarray, threads: int) -> Callable[[], object]:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def value(name: str) -> object:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(a.shape))

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                              [value("a"), value("b")], [value("c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"a": a, "b": b})


CONTENDERS = {"numpy": _numpy, "torch": _torch, "onnxruntime": _onnxruntime}


def print_gflops(threads: int, repeats: int) -> None:
    """Time every contender on ``threads`` threads, best of ``repeats``; print one JSON line."""
    generator = np.random.default_rng(0)
    a, b = (generator.random((MATMUL_SIZE, MATMUL_SIZE), dtype=np.float32) for _ in range(2))
    gflops = {name: best_gflops(make(a, b, threads), MATMUL_SIZE, repeats)
              for name, make in CONTENDERS.items()}
    print(json.dumps({**gflops, "best": max(gflops.values())}))


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module doc); 2 on a user error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=MATMUL_REPEATS)
    args = parser.parse_args(argv)
    return exit_code_of("bench_matmul", lambda: print_gflops(args.threads, args.repeats))


if __name__ == "__main__":
    sys.exit(main())
