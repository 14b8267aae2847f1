"""Compute and save notebook 06's headline table (Zhang et al. 2019, Table 1, in kind, on the digits).

    .venv/bin/python scripts/make_headline_table.py            # full table + reduced CI table -> JSON
    .venv/bin/python scripts/make_headline_table.py --tune     # re-choose the lambdas on a validation split first
    .venv/bin/python scripts/make_headline_table.py --regime noisy --tune   # the 30%-label-noise table

The JSON (lecture_lib/data_files/headline_table.json) holds the table (per seed: accuracy, training loss and
which test images each run got right, so that the notebook can show paired differences with intervals), its
config, the library/torch/numpy/python versions, the wall-clock seconds of the tuning and of the table, the
validation scores behind the chosen lambdas, and a reduced table that tests/test_mechanisms.py regenerates
exactly. After --tune, copy the chosen lambdas into TableConfig's defaults or NOISY_CONFIG (the test checks they
agree). ``--regime noisy`` writes lecture_lib/data_files/headline_table_noisy.json. One thread: bit-reproducible on the CPU, and fastest on a
busy 2-core machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lecture_lib.experiments import mechanisms as M  # noqa: E402


def bar(fraction: float, start: float) -> None:
    n = int(30 * fraction)
    print(f"\r[{'#' * n}{'.' * (30 - n)}] {100 * fraction:5.1f}%  {time.time() - start:6.1f} s", end="", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tune", action="store_true", help="choose L2 and WD lambdas on a validation split first")
    ap.add_argument("--regime", choices=tuple(M.REGIMES), default="clean", help="which saved table (default: clean)")
    ap.add_argument("--out", type=Path, default=None, help="default: the regime's saved table")
    args = ap.parse_args()
    torch.set_num_threads(1)
    config, (l2_grid, wd_grid), path = M.REGIMES[args.regime]
    args.out = args.out or path
    tuning = None
    if args.tune:
        start = time.time()
        tuning = M.tune(config, l2_grid, wd_grid)
        tuning["seconds"] = round(time.time() - start, 1)
        print(f"tuned in {tuning['seconds']:.0f} s: l2={tuning['l2']} wd={tuning['wd']} at edge: {tuning['at_edge']}")
        config = dataclasses.replace(config, l2=tuning["l2"], wd=tuning["wd"])
    elif args.out.exists():
        tuning = M.load_table(args.out).get("tuning")
    start = time.time()
    table = M.headline_table(config, progress=lambda f: bar(f, start))
    print()
    table["seconds"] = round(time.time() - start, 1)
    table["tuning"] = tuning
    table["threads"] = torch.get_num_threads()
    table["reduced"] = M.headline_table(M.reduced_config(config))
    M.save_table(table, args.out)
    print(M.format_table(table))
    print(json.dumps({"seconds": table["seconds"], "path": str(args.out)}))


if __name__ == "__main__":
    main()
