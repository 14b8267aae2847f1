"""32 learning rates trained as ONE batched run vs the same 32 runs in a Python loop.

Model: a batch-norm MLP 64-W-W-10 (W = ``--width``, default 32) on the scikit-learn digits,
SGD with momentum 0.9, minibatches of 64, 32 learning rates log-spaced over [1e-3, 1]. Both sides run the same
engine (:func:`lecture_lib.engine.train`), the same number of steps, the same recording.
The batched side takes ``runs=32`` and a ``(32,)`` learning-rate tensor; the loop side
trains 32 models with ``runs=1``. Reports steps/s (one step = one update of all 32
configurations) and the speedup; on a CUDA machine also the batched run on the GPU.

The batched side's advantage is the per-step Python overhead it pays once instead of 32
times, so it shrinks as the per-run arithmetic grows (``--width 64`` is closer to 10x on a
2-core CPU). Usage: ``python benchmarks/batched_sweep.py [--steps N] [--record-every K]
[--width W]``. Last line: JSON.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks._common import cuda_timeit, emit, row, timeit  # noqa: E402
from lecture_lib import data, engine  # noqa: E402
from lecture_lib.models import MLP  # noqa: E402
from lecture_lib.optim import sgd  # noqa: E402

CONFIGS = 32
TARGET = 10.0  # the batched run should be at least this many times faster than the loop


def sizes(width):
    return [64, width, width, 10]


def batched(d, lrs, steps, record_every, device, width):
    model = MLP(sizes(width), norm="batch", runs=CONFIGS, seed=0, device=device)
    return engine.train(model, d, None, sgd(lrs.to(device), momentum=0.9), steps=steps, batch_size=64,
                        seed=0, record_every=record_every)


def looped(d, lrs, steps, record_every, device, width):
    records = []
    for lr in lrs.tolist():
        model = MLP(sizes(width), norm="batch", runs=1, seed=0, device=device)
        records.append(engine.train(model, d, None, sgd(lr, momentum=0.9), steps=steps, batch_size=64,
                                    seed=0, record_every=record_every))
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--record-every", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=32, help="hidden width W")
    args = parser.parse_args()

    d = data.digits(device="cpu")
    lrs = torch.logspace(-3, 0, CONFIGS)
    steps = args.steps

    # same numbers on both sides (a sanity check, not a timing): run 5 of the batch == run 5 alone
    check = batched(d, lrs, 10, 1, "cpu", args.width)
    alone = looped(d, lrs[5:6], 10, 1, "cpu", args.width)[0]
    max_rel = float(abs(check.loss[:, 5] - alone.loss[:, 0]).max() / abs(alone.loss[:, 0]).max())

    every, width = args.record_every, args.width
    t_batched = timeit(lambda: batched(d, lrs, steps, every, "cpu", width), repeats=args.repeats)
    t_loop = timeit(lambda: looped(d, lrs, steps, every, "cpu", width), repeats=max(1, args.repeats - 1))
    summary = {
        "configs": CONFIGS, "steps": steps, "record_every": every,
        "model": "BN-MLP " + "-".join(map(str, sizes(width))),
        "threads": torch.get_num_threads(),
        "cpu_batched_steps_per_s": round(steps / t_batched, 1),
        "cpu_loop_steps_per_s": round(steps / t_loop, 1),
        "speedup_batched_vs_loop": round(t_loop / t_batched, 2),
        "target_speedup": TARGET,
        "meets_target": t_loop / t_batched >= TARGET,
        "max_rel_loss_diff_batched_vs_alone": max_rel,
    }
    print(f"{CONFIGS} configurations x {steps} steps, {summary['model']} on digits, SGD+momentum, B=64, "
          f"{torch.get_num_threads()} threads")
    row("CPU, batched (runs=32, one computation)", summary["cpu_batched_steps_per_s"], "steps/s")
    row("CPU, Python loop over 32 runs", summary["cpu_loop_steps_per_s"], "steps/s")
    row("speedup batched / loop", summary["speedup_batched_vs_loop"], "x")
    row("max relative loss difference (run 5)", f"{max_rel:.1e}")

    if torch.cuda.is_available():
        d_gpu = d.to("cuda")
        t_gpu = cuda_timeit(lambda: batched(d_gpu, lrs, steps, every, "cuda", width), repeats=args.repeats)
        t_gpu_loop = cuda_timeit(lambda: looped(d_gpu, lrs, steps, every, "cuda", width), repeats=1, warmup=0)
        summary.update({
            "gpu": torch.cuda.get_device_name(0),
            "gpu_batched_steps_per_s": round(steps / t_gpu, 1),
            "gpu_loop_steps_per_s": round(steps / t_gpu_loop, 1),
            "speedup_gpu_batched_vs_cpu_batched": round(t_batched / t_gpu, 2),
        })
        row(f"GPU ({summary['gpu']}), batched", summary["gpu_batched_steps_per_s"], "steps/s")
        row("GPU, Python loop over 32 runs", summary["gpu_loop_steps_per_s"], "steps/s")
        row("GPU batched / CPU batched", summary["speedup_gpu_batched_vs_cpu_batched"], "x")
    else:
        summary["gpu"] = None
        print("  (no CUDA device: GPU timing skipped)")
    emit(summary)


if __name__ == "__main__":
    main()
