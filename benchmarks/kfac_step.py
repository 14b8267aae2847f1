"""What a K-FAC step costs: against an SGD step, and eigenbasis vs dense damped inverse.

1. Per-iteration time of K-FAC (K-FAC-F, the default amortization: factors re-estimated
   every ``stat_interval=10`` steps, eigendecompositions every ``inv_interval=100``) against
   plain SGD on the same MLP 64-128-128-10, the same digits minibatches of 128, one run,
   CPU, both through the training engine (:class:`lecture_lib.engine.Trainer`). Target:
   K-FAC <= 2x SGD per step. Also reported: the cost of a statistics step and of an
   inversion step on their own, and K-FAC with statistics every step.
2. Applying :math:`(A \\otimes S + \\gamma I)^{-1}` to one gradient of a square layer of width
   n: two eigendecompositions + :func:`kron_damped_solve` against forming the n²×n² matrix
   and calling ``torch.linalg.solve``.

Usage: ``python benchmarks/kfac_step.py [--steps N] [--threads T]``. Last line: JSON.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks._common import emit, row  # noqa: E402
from lecture_lib import data, kronecker  # noqa: E402
from lecture_lib.engine import Trainer  # noqa: E402
from lecture_lib.models import MLP  # noqa: E402
from lecture_lib.optim import kfac, sgd  # noqa: E402

SIZES = [64, 128, 128, 10]
BATCH = 128


def _trainer(make_opt, seed: int) -> Trainer:
    model = MLP(SIZES, runs=1, seed=seed, device="cpu")
    return Trainer(model, data.digits(), "cross_entropy", make_opt(model), batch_size=BATCH, seed=0)


def step_times(makers: dict, steps: int) -> dict[str, list[float]]:
    """Wall-clock seconds of each engine step, the optimizers interleaved step by step (so that
    machine noise hits all of them alike), after 3 warm-up steps on throwaway models."""
    for make in makers.values():
        warm = _trainer(make, seed=1)
        for _ in range(3):
            warm.step()
    trainers = {name: _trainer(make, seed=0) for name, make in makers.items()}
    times = {name: [] for name in makers}
    for _ in range(steps):
        for name, t in trainers.items():
            start = time.perf_counter()
            t.step()
            times[name].append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"MLP {SIZES}, digits, batch {BATCH}, one run, CPU, {args.threads} thread(s), {args.steps} steps")
    times = step_times({
        "sgd": lambda m: sgd(lr=0.1),
        "kfac": lambda m: kfac(m, "cross_entropy", lr=0.1, damping=0.1),
        "kfac_every": lambda m: kfac(m, "cross_entropy", lr=0.1, damping=0.1, stat_interval=1, inv_interval=1),
    }, args.steps)
    sgd_t, kfac_t, kfac_every = times["sgd"], times["kfac"], times["kfac_every"]
    sgd_ms = 1e3 * sum(sgd_t) / len(sgd_t)
    kfac_ms = 1e3 * sum(kfac_t) / len(kfac_t)
    plain = [t for k, t in enumerate(kfac_t) if k % 10]                  # no statistics, no inversion
    stats = [t for k, t in enumerate(kfac_t) if k % 10 == 0 and k % 100]  # statistics only
    inv = [t for k, t in enumerate(kfac_t) if k % 100 == 0]               # statistics + inversion
    every_ms = 1e3 * sum(kfac_every) / len(kfac_every)
    row("SGD step", 1e3 * sgd_ms, "us")
    row("K-FAC step, amortized (stat 10, inv 100)", 1e3 * kfac_ms, "us")
    row("  a step without statistics or inversion", 1e6 * sum(plain) / len(plain), "us")
    row("  a statistics step", 1e6 * sum(stats) / max(len(stats), 1), "us")
    row("  a statistics + inversion step", 1e6 * sum(inv) / max(len(inv), 1), "us")
    row("K-FAC step, statistics and inversion every step", 1e3 * every_ms, "us")
    ratio = kfac_ms / sgd_ms
    print(f"  ratio K-FAC / SGD (amortized): {ratio:.2f}  (target <= 2)")

    widths = (4, 8, 16, 24, 32, 48, 64)
    timing = kronecker.time_inverses(widths=widths, repeats=3)
    print("damped inverse of A ⊗ S + γI applied to one gradient (square layer, width n):")
    print(f"  {'n':>4s} {'params':>7s} {'eigenbasis ms':>14s} {'dense ms':>10s} {'dense/eig':>10s} {'max rel diff':>13s}")
    for n, e, dn, diff in zip(timing.widths, timing.eigenbasis, timing.dense, timing.max_difference):
        print(f"  {n:>4d} {n * n:>7d} {1e3 * e:>14.3f} {1e3 * dn:>10.3f} {dn / e:>10.1f} {diff:>13.1e}")
    slope_eig, slope_dense = timing.slopes()
    print(f"  log-log slopes of time vs width: eigenbasis {slope_eig:.2f}, dense {slope_dense:.2f} "
          "(asymptotically 3 and 6)")
    emit({
        "benchmark": "kfac_step",
        "threads": args.threads,
        "sgd_step_ms": round(sgd_ms, 4),
        "kfac_step_ms": round(kfac_ms, 4),
        "kfac_every_step_ms": round(every_ms, 4),
        "kfac_over_sgd": round(ratio, 3),
        "target_met": bool(ratio <= 2.0),
        "inverse_widths": [int(n) for n in timing.widths],
        "eigenbasis_ms": [round(1e3 * t, 4) for t in timing.eigenbasis],
        "dense_ms": [round(1e3 * t, 4) for t in timing.dense],
        "dense_over_eigenbasis_at_largest": round(float(timing.dense[-1] / timing.eigenbasis[-1]), 1),
        "slopes": {"eigenbasis": round(slope_eig, 2), "dense": round(slope_dense, 2)},
    })


if __name__ == "__main__":
    main()
