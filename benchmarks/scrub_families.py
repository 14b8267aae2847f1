"""The scrubbed panels: a fresh family against the single position each panel computed before it was scrubbed.

Each scrubbed panel (``ScrubPanel``) computes ALL positions of its slider at once, as one batched run (the
engine's run dimension) or one vectorised computation, whenever another control changes. This prints, per
panel, side by side:

* compute: the family vs what the panel computed before (one position; nb04 collapse: five α in one run);
* figures: building every position's figure (what ``ScrubPanel`` does once per family, to send every
  position's trace data to the page) vs building one.

Classroom settings by default (``--full`` sizes); ``--fast`` takes ``LECTURE_FAST`` sizes for notebooks 03–04
(01–02's panels use the same sizes in both). Wall seconds, fastest of ``--repeats``; the result cache is off
(``LECTURE_CACHE_DIR=off``), so every computation runs. Target: a fresh family costs at most 3× the old move.
Usage: ``OMP_NUM_THREADS=1 python benchmarks/scrub_families.py [--fast] [--repeats N]``. Last line: JSON.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

os.environ["LECTURE_CACHE_DIR"] = "off"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

from benchmarks._common import emit, row, timeit  # noqa: E402
from lecture_lib.experiments import adaptive as nb01  # noqa: E402
from lecture_lib.experiments import ics as nb02  # noqa: E402
from lecture_lib.experiments import implicit_decay as nb04  # noqa: E402
from lecture_lib.experiments import kronecker as nb03  # noqa: E402
from lecture_lib.viz import adaptive_panels as ap  # noqa: E402
from lecture_lib.viz import figures  # noqa: E402
from lecture_lib.viz import ics_panels as icp  # noqa: E402
from lecture_lib.viz import implicit_panels as ip  # noqa: E402
from lecture_lib.viz import kronecker_panels as kp  # noqa: E402

TARGET = 3.0
P = functools.partial


def cases(fast: bool):
    """panel: (family, one position as before, figure builder of one position)."""
    collapse_steps, growth_steps = ip.STEPS["collapse"][fast], ip.STEPS["growth"][fast]
    return {
        "nb01 decay (λ)": (P(nb01.decay_comparisons, weight_decay=ap.DECAY_GRID, steps=600),
                           P(nb01.decay_comparison, weight_decay=ap.DECAY_GRID[10], steps=600), ap.decay_figure),
        "nb01 sgd identity (ρ)": (P(nb01.sgd_decay_identities, momentum=ap.MOMENTA, steps=600),
                                  P(nb01.sgd_decay_identity, momentum=0.9, steps=600), ap.sgd_identity_figures),
        "nb02 outlier (‖m‖)": (P(nb02.outlier_family, mean_norm=icp.MEAN_NORMS, samples=20000),
                               P(nb02.outlier_experiment, mean_norm=3.0, samples=20000), icp.outlier_figure),
        "nb02 descent (‖m‖)": (P(nb02.descent_family, mean_norm=icp.MEAN_NORMS, steps=400),
                               P(nb02.descent_experiment, mean_norm=3.0, steps=400), icp.descent_figures),
        "nb03 spectrum, 12×10 (cond A)": (lambda: nb03.spectrum_family(12, 10, kp.SPECTRUM_CONDS, 100.0),
                                          lambda: nb03.spectrum_demo(12, 10, 10.0, 100.0), kp.spectrum_figure),
        "nb04 collapse (α)": (lambda: nb04.collapse(nb04.COLLAPSE_LRS, steps=collapse_steps).positions(),
                              lambda: nb04.collapse(0.01 * np.logspace(0, 3, 5), steps=collapse_steps).at(2),
                              ip.collapse_figure),
        "nb04 growth, toy (α)": (lambda: nb04.growth_family("toy", ip.GROWTH_LRS, steps=growth_steps["toy"]),
                                 lambda: nb04.growth("toy", 0.3, steps=growth_steps["toy"]), ip.growth_figure),
        "nb04 growth, BN (α)": (lambda: nb04.growth_family("bn", ip.GROWTH_LRS, steps=growth_steps["bn"]),
                                lambda: nb04.growth("bn", 0.3, steps=growth_steps["bn"]), ip.growth_figure),
    }


def _thin(built):
    return [figures.thin_traces(f) for f in built] if isinstance(built, (list, tuple)) else figures.thin_traces(built)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="LECTURE_FAST sizes instead of the classroom ones")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"settings: {'fast' if args.fast else '--full'}; fastest of {args.repeats}; seconds")
    summary = {"benchmark": "scrub_families", "settings": "fast" if args.fast else "full", "target_ratio": TARGET}
    for name, (family, single, build) in cases(args.fast).items():
        fam, one = list(family()), single()
        t_family = timeit(family, args.repeats, warmup=0)
        t_single = timeit(single, args.repeats, warmup=0)
        t_builds = timeit(lambda: [_thin(build(r)) for r in fam], args.repeats)
        t_build = timeit(lambda: _thin(build(one)), args.repeats)
        fresh, before = t_family + t_builds, t_single + t_build
        print(name)
        row(f"compute: the family of {len(fam)} positions / one position", f"{t_family:.3f} / {t_single:.3f}", "s")
        row(f"figures: {len(fam)} positions / one", f"{t_builds:.3f} / {t_build:.3f}", "s")
        row("fresh move: family / before (ratio)", f"{fresh:.3f} / {before:.3f} ({fresh / before:.2f}x)", "s")
        summary[name] = {"positions": len(fam), "family_compute_s": round(t_family, 4),
                         "single_compute_s": round(t_single, 4), "family_figures_s": round(t_builds, 4),
                         "single_figure_s": round(t_build, 4), "fresh_ratio": round(fresh / before, 2),
                         "within_target": fresh / before <= TARGET}
    emit(summary)


if __name__ == "__main__":
    main()
