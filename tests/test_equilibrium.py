"""Tests for lecture_lib.equilibrium: the weight-decay equilibrium of scale-invariant weights.

Formulas are checked against each other in float64; the toy model checks the
measured equilibrium against the predictions within the 15% SCIENCE.md allows
(measured ratio ≈ 1.04)."""
import math
import sys

import numpy as np
import pytest
import torch

from lecture_lib import equilibrium as eq


def test_formulas_agree_with_the_lecture():
    a, lam, rho = 0.1, 5e-4, 0.9
    assert eq.equilibrium_ratio(a, lam) == pytest.approx(math.sqrt(a / (2 * lam)), rel=1e-14)
    assert eq.equilibrium_ratio(a, lam, rho) == pytest.approx(math.sqrt(a / (2 * lam * (1 - rho))), rel=1e-14)
    assert eq.equilibrium_angular_step(a, lam, rho) == pytest.approx(math.sqrt(2 * a * lam * (1 - rho)), rel=1e-14)
    # the angular step is alpha / ratio: SGD+WD at equilibrium is LARS with eta = sqrt(2 alpha lambda (1-rho))
    assert eq.equilibrium_angular_step(a, lam, rho) == pytest.approx(a / eq.equilibrium_ratio(a, lam, rho), rel=1e-14)
    assert eq.relaxation_steps(a, lam) == pytest.approx(1 / (4 * a * lam), rel=1e-14)
    assert eq.relaxation_steps(a, lam, rho) == pytest.approx((1 - rho) / (4 * a * lam), rel=1e-14)


def test_per_run_hyperparameters_give_per_run_predictions():
    lr = torch.tensor([0.1, 0.4, 0.1], dtype=torch.float64)
    wd = torch.tensor([5e-4, 5e-4, 5e-3], dtype=torch.float64)
    out = eq.equilibrium_ratio(lr, wd)
    assert out.shape == (3,)
    for r in range(3):
        assert out[r] == pytest.approx(eq.equilibrium_ratio(float(lr[r]), float(wd[r])), rel=1e-14)


def test_sq_norm_map_settles_on_the_predicted_fixed_point_with_the_predicted_relaxation():
    a, lam, G = 0.1, 5e-3, 0.7
    x_star = eq.equilibrium_sq_norm(a, lam, G)
    tau = eq.relaxation_steps(a, lam)
    xs = eq.sq_norm_map(x_star * 1.01, a, lam, G, steps=int(10 * tau))
    assert xs[-1] == pytest.approx(x_star, rel=1e-3)  # O(alpha lambda) correction to the fixed point
    # the small deviation decays by exp(-1) per relaxation time
    dev = xs - xs[-1]
    k = int(round(tau))
    assert dev[k] / dev[0] == pytest.approx(math.exp(-1), rel=0.02)
    # at the fixed point shrink and growth balance
    shrink, growth = eq.norm_balance(np.sqrt(xs[-1]), G / np.sqrt(xs[-1]), a, lam)
    assert float(shrink) == pytest.approx(float(growth), rel=1e-3)


def test_sq_norm_scales_as_sqrt_lr_over_weight_decay():
    # Labatie (2020): ||w||^2 at equilibrium / sqrt(alpha/lambda) is the same for every (alpha, lambda)
    pairs = [(0.05, 1e-3), (0.2, 1e-3), (0.05, 4e-3), (0.8, 1e-4)]
    vals = [eq.equilibrium_sq_norm(a, lam, 0.3) / math.sqrt(a / lam) for a, lam in pairs]
    assert max(vals) == pytest.approx(min(vals), rel=1e-12)


def test_without_weight_decay_the_norm_follows_the_square_root_law():
    a, G, x0, K = 0.1, 1.0, 1.0, 5000
    xs = eq.sq_norm_map(x0, a, 0.0, G, steps=K)
    k = np.arange(K + 1)
    assert np.allclose(xs, np.sqrt(x0 ** 2 + 2 * a ** 2 * G ** 2 * k), rtol=2e-3)
    assert np.all(np.diff(xs) > 0)


@pytest.mark.parametrize("bad", [dict(lr=0.0), dict(weight_decay=-1e-3), dict(momentum=1.0)])
def test_bad_hyperparameters_raise_value_errors_naming_them(bad):
    kw = dict(lr=0.1, weight_decay=5e-4, momentum=0.0) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        eq.equilibrium_ratio(**kw)


def test_science_module_does_not_import_plotting():
    import subprocess
    code = "import sys, lecture_lib.equilibrium; print('plotly' in sys.modules, 'ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"
