"""ICS and outlier eigenvalues (SCIENCE.md §2): the identities in float64, the measurements with their tolerances."""
import copy

import numpy as np
import pytest
import torch

from lecture_lib import data, ics
from lecture_lib.experiments import ics as experiments
from lecture_lib.engine import train
from lecture_lib.models import MLP
from lecture_lib.optim import sgd

F64 = torch.float64


# ---------------------------------------------------------------- 1. the outlier of A = E[aa^T]

def test_outlier_eigenvalue_of_uncentered_inputs():
    # a ~ N(m, I), ||m|| = 3, D = 20, 1e5 samples: top eigenvalue ~ ||m||^2 + 1 = 10, the rest ~ 1
    x, m, _ = data.gaussian_inputs(100_000, 20, mean_norm=3.0, cond=1.0, seed=0)
    spec = ics.moment_spectrum(x)
    assert ics.predicted_outlier(m) == pytest.approx(10.0, rel=1e-12)
    assert spec.eigenvalues[0] == pytest.approx(10.0, rel=0.02)
    assert spec.eigenvalues[1] < 1.2
    assert spec.eigenvalues[-1] > 0.8
    assert spec.alignment > 0.999                     # the outlier's eigenvector is m


def test_centered_inputs_have_no_outlier():
    x, _, _ = data.gaussian_inputs(50_000, 20, mean_norm=0.0, seed=1)
    assert ics.moment_spectrum(x).eigenvalues[0] < 1.2


def test_logistic_units_are_uncentered_tanh_units_are_not():
    logistic = ics.moment_spectrum(ics.unit_features("logistic", 16, 20_000, seed=0))
    tanh = ics.moment_spectrum(ics.unit_features("tanh", 16, 20_000, seed=0))
    assert logistic.mean.mean() == pytest.approx(0.5, abs=0.01)
    assert logistic.eigenvalues[0] == pytest.approx(16 / 4 + logistic.variance, rel=0.02)   # ||m||^2 ~ D/4
    assert logistic.condition_number > 50
    assert tanh.condition_number < 1.5


def test_regression_hessian_with_bias_is_the_augmented_moment():
    x, m, cov = data.gaussian_inputs(4, 3, mean_norm=2.0, cond=5.0, seed=2)
    H = ics.regression_hessian(x)
    x1 = torch.cat([x, torch.ones(4, 1, dtype=F64)], 1)
    torch.testing.assert_close(H, x1.T @ x1 / 4, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("mean_norm", [0.5, 1.0, 3.0, 5.0])
def test_a_bias_column_moves_the_outlier_to_about_norm_squared_plus_two(mean_norm):
    # exact: the population matrix [[I + m m^T, m], [m^T, 1]] has top (mu^2 + 2 + mu sqrt(mu^2 + 4))/2 and 1/top
    x, m, _ = data.gaussian_inputs(2, 5, mean_norm=mean_norm, seed=3)
    m1 = torch.cat([m, torch.ones(1, dtype=F64)])
    population = torch.eye(6, dtype=F64) + torch.outer(m1, m1)
    population[-1, -1] = 1.0
    ev = torch.linalg.eigvalsh(population)
    top, partner = ics.predicted_bias_outlier(m)
    assert float(ev[-1]) == pytest.approx(top, rel=1e-12) and float(ev[0]) == pytest.approx(partner, rel=1e-10)
    assert float(ev[-1] / ev[0]) == pytest.approx(top ** 2, rel=1e-10)
    assert abs(top - (mean_norm ** 2 + 2 - mean_norm ** -2)) < 2.5 * mean_norm ** -4   # the expansion
    # sampled: n = 1e5, D = 20; measured |top/predicted - 1| <= 0.41% over seeds 0-2 and these norms
    x, m, _ = data.gaussian_inputs(100_000, 20, mean_norm=mean_norm, cond=1.0, seed=0)
    ev = torch.linalg.eigvalsh(ics.regression_hessian(x))
    top, partner = ics.predicted_bias_outlier(m)
    assert float(ev[-1]) == pytest.approx(top, rel=0.01)
    assert float(ev[0]) == pytest.approx(partner, rel=0.02)
    assert float(ev[-1] / ev[0]) == pytest.approx(top ** 2, rel=0.02)     # kappa(H) = nu_+^2
    # the bias-free prediction ||m||^2 + 1 misses by far more than this one's sampling error
    assert abs(float(ev[-1]) - ics.predicted_outlier(m)) > 10 * abs(float(ev[-1]) - top)


def test_descent_notes_predict_the_bias_outlier_from_the_true_mean():
    r = experiments.descent_experiment(mean_norm=3.0, cond=1.0, dim=10, steps=5)
    assert r.predicted_outlier == pytest.approx(0.5 * (11 + 3 * 13 ** 0.5), rel=1e-12)
    assert r.hessian_eigenvalues[0][0] == pytest.approx(r.predicted_outlier, rel=0.1)   # n = 512 samples
    assert np.isnan(experiments.descent_experiment(mean_norm=3.0, cond=10.0, dim=10, steps=5).predicted_outlier)


def test_descent_is_slow_on_uncentered_features():
    r = experiments.descent_experiment(mean_norm=3.0, cond=1.0, dim=10, steps=100)
    kappa = dict(zip(r.labels, r.condition_numbers))
    assert kappa["uncentered"] > 50 * kappa["centered"]
    final = dict(zip(r.labels, [e[-1] for e in r.excess_loss]))
    assert final["centered"] < 1e-10 < final["uncentered"]


def test_outlier_family_member_is_the_single_mean_computation():
    # the panel's scrubbed family: every A_μ from one expansion and one batched eigendecomposition
    norms = (0.0, 1.0, 2.5, 6.0)
    family = experiments.outlier_family("gaussian", norms, dim=8, samples=3000)
    for member, mean_norm in zip(family, norms):
        one = experiments.outlier_experiment("gaussian", mean_norm, dim=8, samples=3000)
        torch.testing.assert_close(member.eigenvalues, one.eigenvalues, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(member.mean, one.mean, rtol=1e-12, atol=1e-14)
        assert member.variance == pytest.approx(one.variance, rel=1e-12)
        assert member.predicted == pytest.approx(one.predicted, rel=1e-12)
        assert member.alignment == pytest.approx(one.alignment, rel=1e-10)
        if mean_norm > 0:                    # the outlier stands apart: its eigenvector is defined up to sign
            torch.testing.assert_close(member.top_vector.abs(), one.top_vector.abs(), rtol=1e-10, atol=1e-12)
    assert float(family[-1].eigenvalues[0]) == pytest.approx(37.0, rel=0.05)          # ‖m‖² + 1
    # hidden units do not read ‖m‖: one spectrum for every position
    units = experiments.outlier_family("tanh", norms, dim=8, samples=3000)
    torch.testing.assert_close(units[-1].eigenvalues, experiments.outlier_experiment("tanh", 0.0, 8, 3000).eigenvalues)


@pytest.mark.parametrize("cond", [1.0, 10.0])
def test_descent_family_member_is_the_single_mean_computation(cond):
    # the panel's scrubbed family: every ‖m‖ (and all three parameterizations) trained as one batched run;
    # member p is descent_experiment at ‖m‖ = mean_norm[p], up to float64 rounding
    norms = (0.0, 1.5, 4.0)
    family = experiments.descent_family(norms, cond=cond, dim=6, steps=60, n=128)
    assert len(family) == len(norms)
    for member, mean_norm in zip(family, norms):
        one = experiments.descent_experiment(mean_norm=mean_norm, cond=cond, dim=6, steps=60, n=128)
        assert member.labels == one.labels
        for a, b in zip(member.records, one.records):
            np.testing.assert_array_equal(a.steps, b.steps)
            np.testing.assert_allclose(a.loss, b.loss, rtol=1e-12, atol=1e-15)
            np.testing.assert_array_equal(a.diverged_at, b.diverged_at)
        for name in ("excess_loss", "hessian_eigenvalues"):
            for a, b in zip(getattr(member, name), getattr(one, name)):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(member.condition_numbers, one.condition_numbers, rtol=1e-10)
        np.testing.assert_allclose(member.lrs, one.lrs, rtol=1e-12)
        np.testing.assert_allclose(member.predicted_outlier, one.predicted_outlier, rtol=1e-12)  # nan unless Σ = I
    # the members differ where they should: the uncentered run's outlier grows with ‖m‖, the centered one's does not
    top = [[float(ev[0]) for ev in m.hessian_eigenvalues] for m in family]
    assert top[0][0] < top[1][0] < top[2][0] and top[2][0] > 10 * top[2][1]


# ---------------------------------------------------------------- 2. ICS Conditioning Hypothesis

def test_conditioning_report_outliers_match_nu_lambda_s():
    x, _, _ = data.gaussian_inputs(600, 6, mean_norm=3.0, cond=1.0, seed=0)
    model = MLP([6, 8, 2], activation="tanh", seed=0)
    rep = ics.conditioning_report(model, x)
    assert rep.predicted.shape == (2,)
    # the M = 2 outliers of the exact GN block sit near nu * lambda_i(S), along m (x) v_i
    torch.testing.assert_close(rep.exact[:2], rep.predicted, rtol=0.1, atol=0.0)
    assert float(rep.exact[2]) < 0.5 * float(rep.predicted[1])
    assert (rep.alignment > 0.9).all()


def test_kronecker_alignment_of_an_exact_kronecker_vector():
    m = torch.tensor([1.0, 2.0, 2.0], dtype=F64)
    v = torch.tensor([0.6, 0.8], dtype=F64)
    u = torch.outer(v, m / 3).reshape(-1, 1)             # row-major (H, D) of v m^T = m (x) v
    other = torch.outer(v, torch.tensor([2.0, -1.0, 0.0], dtype=F64) / 5 ** 0.5).reshape(-1, 1)
    torch.testing.assert_close(ics.kronecker_alignment(torch.cat([u, other], 1), m, 2),
                               torch.tensor([1.0, 0.0], dtype=F64), rtol=0, atol=1e-14)


# ---------------------------------------------------------------- 3. the fix by reparameterization

@pytest.mark.parametrize("norm", ["none", "batch"])
def test_reparameterized_network_computes_the_same_function(norm):
    x, m, cov = data.gaussian_inputs(64, 5, mean_norm=3.0, cond=20.0, seed=3)
    model = MLP([5, 7, 3], norm=norm, activation="tanh", runs=2, seed=[0, 1], dtype=F64)
    tilde = ics.reparameterize(model, m, cov)
    x_tilde = ics.whiten(x, m, cov)
    assert x_tilde.shape == x.shape and x_tilde.dtype == x.dtype
    torch.testing.assert_close(tilde(x_tilde), model(x), rtol=1e-12, atol=1e-12)


def test_gradient_step_in_new_coordinates_is_quasi_diagonal_preconditioning():
    # theta = R theta~  =>  a step on theta~ is the step -alpha R R^T grad on theta
    x, m, cov = data.gaussian_inputs(32, 3, mean_norm=2.0, cond=4.0, seed=4)
    y = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    model = MLP([3, 2], runs=1, seed=0, dtype=F64)           # one affine layer: theta = (vec W, b)
    tilde = ics.reparameterize(model, m, cov)
    x_tilde = ics.whiten(x, m, cov)
    lr = 0.1
    qd = ics.quasi_diagonal(m, cov, out_features=2)

    def grad_step(net, inputs):
        net = copy.deepcopy(net)
        loss = 0.5 * (net(inputs)[0] - y).pow(2).sum(1).mean()
        loss.backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= lr * p.grad
        return net

    theta = ics.flat_first_layer(model).detach()
    g = torch.autograd.functional.jacobian(
        lambda t: 0.5 * (x @ t[:6].reshape(3, 2) + t[6:] - y).pow(2).sum(1).mean(), theta)
    expected = theta - lr * qd["preconditioner"] @ g
    stepped = ics.flat_first_layer(grad_step(tilde, x_tilde)).detach()
    back = qd["R"] @ stepped                               # theta = R theta~
    torch.testing.assert_close(back, expected, rtol=1e-12, atol=1e-12)
    # and [R R^T]^{-1} is the exact GN (= Hessian) of this linear layer with squared error
    H = torch.autograd.functional.hessian(
        lambda t: 0.5 * (x @ t[:6].reshape(3, 2) + t[6:] - y).pow(2).sum(1).mean(), theta)
    x1 = torch.cat([x, torch.ones(32, 1, dtype=F64)], 1)
    moment = x1.T @ x1 / 32
    torch.testing.assert_close(H, torch.kron(moment, torch.eye(2, dtype=F64)), rtol=1e-12, atol=1e-12)
    pop = torch.zeros(4, 4, dtype=F64)
    pop[:3, :3], pop[:3, 3], pop[3, :3], pop[3, 3] = cov + torch.outer(m, m), m, m, 1.0
    torch.testing.assert_close(qd["curvature"], torch.kron(pop, torch.eye(2, dtype=F64)), rtol=1e-12, atol=1e-12)


def test_reparameterization_removes_the_outliers():
    r = experiments.reparam_experiment(mean_norm=3.0, cond=10.0, steps=20, n=128, lrs=[0.1])
    assert r.max_output_gap < 1e-12
    top_original, top_tilde = r.gn_eigenvalues[0][0], r.gn_eigenvalues[1][0]
    assert top_original > 1.5 * top_tilde


# ---------------------------------------------------------------- 4. the wrinkle

@pytest.mark.parametrize("norm", ["batch", "center"])
def test_shifting_activations_before_a_normalizer_leaves_the_trajectory_unchanged(norm):
    ds = data.teacher(n=64, sizes=(4, 8, 1), activation="tanh", seed=0, dtype=F64)
    model = ics.ShiftedMLP([4, 8, 8, 1], norm=norm, shift=torch.tensor([0.0, 5.0]), runs=2, seed=0, dtype=F64)
    rec = train(model, ds, "mse", sgd(lr=0.1, momentum=0.9), steps=100, batch_size=16, record_every=1)
    assert rec.loss[-1, 0] < 0.8 * rec.loss[0, 0]           # it did train
    np.testing.assert_allclose(rec.loss[:, 0], rec.loss[:, 1], rtol=1e-10, atol=1e-12)
    for p in model.parameters():
        torch.testing.assert_close(p[0], p[1], rtol=1e-9, atol=1e-10)


def test_without_a_normalizer_the_shift_matters():
    ds = data.teacher(n=64, sizes=(4, 8, 1), activation="tanh", seed=0, dtype=F64)
    model = ics.ShiftedMLP([4, 8, 8, 1], norm="none", shift=torch.tensor([0.0, 5.0]), runs=2, seed=0, dtype=F64)
    rec = train(model, ds, "mse", sgd(lr=0.05), steps=20)
    assert np.abs(rec.loss[:, 0] - rec.loss[:, 1]).max() > 1e-3


def test_wrinkle_kfac_factor_has_the_outlier_exact_curvature_does_not():
    r = experiments.wrinkle_experiment(shift=5.0, steps=5, sizes=(4, 8, 8, 1), n=64)
    i = {n: k for k, n in enumerate(r.norms)}
    for norm in ("center", "batch"):
        assert r.kfac_top[i[norm], 1] > 20 * r.kfac_top[i[norm], 0]           # A sees the shift
        assert r.exact_top[i[norm], 1] == pytest.approx(r.exact_top[i[norm], 0], rel=1e-8)
        assert r.max_gap[i[norm]] < 1e-10
    assert r.exact_top[i["none"], 1] > 5 * r.exact_top[i["none"], 0]


# ---------------------------------------------------------------- 5. batch centering

@pytest.mark.parametrize("shift", [0.0, 3.0])
def test_batch_centering_gradient_is_s_bar_transpose_centered_a(shift):
    g = torch.Generator().manual_seed(5)
    a = torch.randn(16, 5, generator=g, dtype=F64) + shift
    W = torch.randn(3, 5, generator=g, dtype=F64)
    target = torch.randn(16, 3, generator=g, dtype=F64)
    r = ics.centering_gradient(a, W, lambda s_hat: (s_hat - target).pow(3).abs().sum())
    torch.testing.assert_close(r.autograd, r.centered, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(r.direct_autograd, r.direct, rtol=1e-12, atol=1e-12)   # direct path: S̄^T A
    if shift:
        assert (r.direct - r.autograd).abs().max() > 1e-3      # the statistics path matters


def test_centering_gradient_does_not_depend_on_the_shift():
    r = experiments.centering_experiment(shift=1.0)
    np.testing.assert_allclose(r.norm_autograd, r.norm_autograd[0], rtol=1e-10)
    assert r.norm_direct.max() > 2 * r.norm_direct.min()


def test_bad_arguments_raise_value_errors_naming_the_parameter():
    with pytest.raises(ValueError, match="features"):
        experiments.outlier_experiment(features="sigmoid")
    with pytest.raises(ValueError, match="lr_scale"):
        experiments.descent_experiment(lr_scale=2.5)
    with pytest.raises(ValueError, match="mean_norm"):
        experiments.outlier_experiment(mean_norm=-1.0)


def test_symmetric_power_roots_multiply_back():
    _, _, cov = data.gaussian_inputs(2, 4, mean_norm=1.0, cond=30.0, seed=6)
    root, inverse_root = ics.symmetric_power(cov, 0.5), ics.symmetric_power(cov, -0.5)
    torch.testing.assert_close(root @ root, cov, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(root @ inverse_root, torch.eye(4, dtype=F64), rtol=1e-12, atol=1e-12)


def test_panel_experiments_have_one_outlier_per_output():
    rep = experiments.conditioning_experiment(mean_norm=3.0, outputs=2, n=300)
    assert rep.predicted.shape == (2,)
    qd = experiments.quasi_diagonal_experiment(mean_norm=0.0, cond=1.0)
    torch.testing.assert_close(qd["preconditioner"], torch.eye(8, dtype=F64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("outputs", [1, 3])
def test_s_has_more_than_m_nonzero_eigenvalues_but_m_dominate(outputs):
    # per input, Ds spans at most M directions; averaged over inputs S has more (so "at most M" would be wrong),
    # yet in the notebook's 6 -> 10 -> M tanh network the (M+1)-th is >10x below the M-th (measured 13x and 36x)
    lam = torch.linalg.eigvalsh(experiments.conditioning_experiment(mean_norm=3.0, outputs=outputs).S).flip(0)
    assert float(lam[outputs]) > 1e-6 * float(lam[0])
    assert float(lam[outputs - 1]) > 10 * float(lam[outputs])
