"""Tests for lecture_lib.adaptive and experiments.adaptive: the claims notebook 01 makes, checked numerically.

Identities in float64 with tight tolerances; statistical claims with fixed seeds
and tolerances several times the spread measured over seeds 0-5.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch

from lecture_lib import adaptive as A
from lecture_lib import optim
from lecture_lib.experiments import adaptive as X
from lecture_lib.optim.base import chain, stateless

F64 = torch.float64


# --------------------------------------------------------------------------- 1. trajectories

def test_descend_with_sgd_is_the_closed_form_of_gradient_descent():
    q = A.ill_conditioned_quadratic(condition=30.0, angle=20.0)
    w0 = torch.tensor([[-2.0, 1.0], [0.5, -0.3]], dtype=F64)
    lr, steps = 0.7, 25
    path = A.descend(optim.sgd(lr), lambda w, k: q.grad(w), w0, steps)
    step_matrix = torch.eye(2, dtype=F64) - lr * q.hessian
    expected = w0 @ torch.linalg.matrix_power(step_matrix, steps).T
    assert path.shape == (steps + 1, 2, 2)
    torch.testing.assert_close(path[0], w0, rtol=0, atol=0)
    torch.testing.assert_close(path[-1], expected, rtol=1e-12, atol=1e-14)


def test_quadratic_has_the_requested_curvatures_and_rotation():
    q = A.ill_conditioned_quadratic(condition=50.0, angle=45.0, top=2.0)
    evals, evecs = torch.linalg.eigh(q.hessian)
    torch.testing.assert_close(evals, torch.tensor([2.0 / 50.0, 2.0], dtype=F64), rtol=1e-12, atol=1e-14)
    flat = evecs[:, 0]  # the valley floor runs along the 45° diagonal
    assert abs(abs(float(flat[0])) - abs(float(flat[1]))) < 1e-12
    w = torch.tensor([0.3, -1.2], dtype=F64)
    torch.testing.assert_close(q.loss(w), 0.5 * w @ q.hessian @ w, rtol=1e-14, atol=0)


@pytest.mark.parametrize("beta2", [0.0, 0.9, 0.99])
def test_rmsprop_first_step_moves_every_coordinate_equally(beta2):
    # s_1 = (1 - β) g², so the first step is -α sign(g) / sqrt(1 - β): a diagonal
    # preconditioner equalizes coordinates whatever their curvature.
    q = A.ill_conditioned_quadratic(condition=100.0)
    w0 = torch.tensor([[-3.0, 1.0]], dtype=F64)
    lr = 0.1
    path = A.descend(optim.rmsprop(lr, beta2=beta2, eps=1e-30), lambda w, k: q.grad(w), w0, 1)
    step = path[1] - path[0]
    expected = -lr * torch.sign(q.grad(w0)) / (1 - beta2) ** 0.5
    torch.testing.assert_close(step, expected, rtol=1e-12, atol=0)


def test_diverged_at_marks_first_bad_row():
    v = np.array([[1.0, 1.0, 1.0], [2.0, np.inf, 1.0], [1e9, np.nan, 1.0]])
    assert A.diverged_at(v).tolist() == [2, 1, -1]


# --------------------------------------------------------------------------- 2. empirical vs true Fisher

def _autograd_quantities(x, t, w):
    """Hessian diagonal and per-example squared-gradient mean, by autograd (the reference)."""
    def nll(w_):
        return torch.nn.functional.binary_cross_entropy_with_logits(x @ w_, t)

    hess_diag = torch.autograd.functional.hessian(nll, w).diagonal()
    per_example = torch.func.vmap(torch.func.grad(
        lambda w_, xi, ti: torch.nn.functional.binary_cross_entropy_with_logits(xi @ w_, ti)),
        in_dims=(None, 0, 0))(w, x, t)
    return hess_diag, (per_example ** 2).mean(0)


@pytest.mark.parametrize("misspecified", [False, True])
def test_fisher_diagonals_match_autograd(misspecified):
    p = A.logistic_problem(n=500, dim=5, misspecified=misspecified, seed=3)
    w = A.point_away(p, 0.7)
    f = A.fisher_diagonals(p.x, p.t, w)
    hess_diag, emp_diag = _autograd_quantities(p.x, p.t, w)
    torch.testing.assert_close(f.empirical, emp_diag, rtol=1e-12, atol=1e-15)
    # canonical link: for logistic regression the true Fisher IS the Hessian
    torch.testing.assert_close(f.true, hess_diag, rtol=1e-12, atol=1e-15)


def test_fisher_diagonals_match_the_curvature_module():
    # the same quantities from lecture_lib.curvature (full matrices of a one-unit network)
    from lecture_lib import curvature, models
    p = A.logistic_problem(n=60, dim=4, misspecified=True, seed=4)
    w = A.point_away(p, 0.5)
    net = models.BatchedLinear(4, 1, bias=False, dtype=F64)
    with torch.no_grad():
        net.weight.copy_(w.reshape(1, 1, 4))
    f = A.fisher_diagonals(p.x, p.t, w)
    torch.testing.assert_close(f.true, curvature.fisher(net, p.x, "logistic").diagonal(), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(f.empirical, curvature.empirical_fisher(net, p.x, p.t, "logistic").diagonal(),
                               rtol=1e-12, atol=1e-15)


def test_sampled_true_fisher_converges_to_the_exact_expectation():
    p = A.logistic_problem(n=2000, dim=6, seed=1)
    exact = A.fisher_diagonals(p.x, p.t, p.w_opt)
    sampled = A.fisher_diagonals(p.x, p.t, p.w_opt, samples=400, seed=0)
    torch.testing.assert_close(sampled.empirical, exact.empirical, rtol=0, atol=0)
    assert float((sampled.true - exact.true).norm() / exact.true.norm()) < 0.02


def test_fit_logistic_reaches_a_stationary_point():
    p = A.logistic_problem(n=3000, dim=4, seed=2)
    grad = p.x.T @ (torch.sigmoid(p.x @ p.w_opt) - p.t) / len(p.t)
    assert float(grad.norm()) < 1e-10


def test_fit_logistic_rejects_separable_data():
    x = torch.tensor([[1.0, 0.0], [2.0, 1.0], [-1.0, 0.5], [-2.0, -1.0]], dtype=F64)
    t = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=F64)
    with pytest.raises(ValueError, match="separable"):
        A.fit_logistic(x, t)


def test_empirical_and_true_fisher_agree_at_a_well_specified_optimum():
    # measured relative differences 0.001-0.009 over seeds 0-5 at n = 1e5
    p = A.logistic_problem(n=100_000, misspecified=False, seed=0)
    f = A.fisher_diagonals(p.x, p.t, p.w_opt)
    assert f.relative_difference < 0.03
    ratio = f.empirical / f.true
    assert float((ratio - 1).abs().max()) < 0.05


def test_empirical_fisher_is_far_off_away_from_the_optimum():
    # measured 4.0-9.3 at distance 1 (seed 0: 5.05); the empirical one is the larger
    p = A.logistic_problem(n=100_000, misspecified=False, seed=0)
    f = A.fisher_diagonals(p.x, p.t, A.point_away(p, 1.0))
    assert f.relative_difference > 1.0
    assert bool((f.empirical > 1.5 * f.true).all())


def test_empirical_fisher_is_off_at_a_misspecified_optimum():
    # measured 0.54-1.14 over seeds 0-5, every coordinate's ratio >= 1.51
    p = A.logistic_problem(n=100_000, misspecified=True, seed=0)
    f = A.fisher_diagonals(p.x, p.t, p.w_opt)
    assert f.relative_difference > 0.3
    assert bool((f.empirical > 1.3 * f.true).all())


def test_fisher_along_path_starts_at_the_optimum():
    p = A.logistic_problem(n=5000, seed=0)
    path = X.fisher_along_path(p, [0.0, 0.5, 1.0])
    at_opt = A.fisher_diagonals(p.x, p.t, p.w_opt)
    np.testing.assert_allclose(path.empirical[0], at_opt.empirical.numpy(), rtol=1e-14)
    assert path.relative_difference.shape == (3,)
    assert path.relative_difference[0] < path.relative_difference[2]


@pytest.mark.parametrize("kwargs", [dict(n=5), dict(outlier_fraction=0.9), dict(dim=0)])
def test_logistic_problem_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        A.logistic_problem(**kwargs)


# --------------------------------------------------------------------------- 3. L2 vs decoupled weight decay

def _fixed_preconditioner(c: torch.Tensor):
    """C⁻¹ with a fixed diagonal C: u <- u / c."""
    return stateless(lambda updates, params: {k: u / c for k, u in updates.items()})


def test_lecture_formulas_for_l2_and_decoupled_decay_with_a_fixed_preconditioner():
    # L2:        w <- (I - αλC⁻¹) w - αC⁻¹∇J(w)
    # decoupled: w <- (1 - αλ) w - αC⁻¹∇J(w)
    c = torch.tensor([4.0, 0.25, 1.5], dtype=F64)
    lr, wd = 0.3, 0.2
    w = {"w": torch.tensor([[1.0, -2.0, 0.5]], dtype=F64)}
    g = {"w": torch.tensor([[0.3, 0.7, -1.1]], dtype=F64)}
    l2 = chain(optim.add_decayed_weights(wd), _fixed_preconditioner(c), optim.scale_by_lr(lr))
    dec = chain(_fixed_preconditioner(c), optim.add_decayed_weights(wd), optim.scale_by_lr(lr))
    u_l2, _ = l2.update(g, l2.init(w), w)
    u_dec, _ = dec.update(g, dec.init(w), w)
    expect_l2 = (1 - lr * wd / c) * w["w"] - lr * g["w"] / c
    expect_dec = (1 - lr * wd) * w["w"] - lr * g["w"] / c
    torch.testing.assert_close(w["w"] + u_l2["w"], expect_l2, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(w["w"] + u_dec["w"], expect_dec, rtol=1e-14, atol=1e-15)
    assert float((u_l2["w"] - u_dec["w"]).abs().max()) > 0.01


WDS = np.array([0.0, 0.01, 0.1, 0.3, 1.0])


@pytest.fixture(scope="module")
def sweep():
    problem = A.regression_problem(seed=0)
    opts = {"sgd": lambda wd: optim.sgd(0.5, weight_decay=wd),
            "sgdw": lambda wd: optim.sgdw(0.5, weight_decay=wd),
            "adam": lambda wd: optim.adam(0.02, weight_decay=wd),
            "adamw": lambda wd: optim.adamw(0.02, weight_decay=wd)}
    return X.regularization_sweep(problem, opts, WDS, steps=600, batch_size=8, seed=0)


def test_l2_and_decoupled_decay_coincide_for_sgd(sweep):
    np.testing.assert_allclose(sweep.paths["sgdw"], sweep.paths["sgd"], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_sgd_l2_equals_weight_decay_only_without_momentum(rho):
    r = X.sgd_decay_identity(lr=0.05, weight_decay=0.3, momentum=rho, steps=1500)
    assert r.gap(0.0).max() < 1e-14                          # plain SGD: one algorithm (measured: 0 exactly)
    # with momentum the decay in the buffer (PyTorch) and after it (SGDW) agree at step 1, then part:
    # w2(L2) - w2(W) = -alpha rho lambda w0 (only the buffer's memory of lambda w0 differs)
    p = r.paths[rho]
    assert np.abs(p["SGD + L2"][1] - p["SGDW"][1]).max() < 1e-15
    np.testing.assert_allclose(p["SGD + L2"][2] - p["SGDW"][2], -0.05 * rho * 0.3 * r.w0, rtol=1e-10, atol=1e-15)
    assert r.gap(rho)[2] == pytest.approx(r.predicted_second_step_gap, rel=1e-10)
    # fixed points: the buffer holds grad/(1 - rho), so SGDW's decay acts like L2 with (1 - rho) lambda
    np.testing.assert_allclose(p["SGD + L2"][-1], r.ridge["λ"], atol=1e-8)
    np.testing.assert_allclose(p["SGDW"][-1], r.ridge["(1−ρ)λ"], atol=1e-8)
    assert np.linalg.norm(r.ridge["λ"] - r.ridge["(1−ρ)λ"]) > 0.1


def test_sgd_identity_family_member_is_the_single_momentum_computation():
    # the panel's scrubbed family: every ρ (and the ρ = 0 reference) in one batched run per chain
    momenta = (0.0, 0.5, 0.9)
    family = X.sgd_decay_identities(lr=0.05, weight_decay=0.3, momentum=momenta, steps=200)
    assert [m.momentum for m in family] == list(momenta)
    for member, rho in zip(family, momenta):
        one = X.sgd_decay_identity(lr=0.05, weight_decay=0.3, momentum=rho, steps=200)
        assert member.paths.keys() == one.paths.keys()
        for r in one.paths:
            for name in ("SGD + L2", "SGDW"):
                np.testing.assert_allclose(member.paths[r][name], one.paths[r][name], rtol=1e-12, atol=1e-14)
        for key in one.ridge:
            np.testing.assert_allclose(member.ridge[key], one.ridge[key], rtol=1e-12, atol=1e-14)
    assert family[0].gap(0.0).max() < 1e-14 < family[2].gap(0.9).max()


def test_full_batch_grad_is_the_gradient_of_the_loss():
    p = A.regression_problem(seed=3)
    w = torch.tensor([[0.3, -1.2]], dtype=F64, requires_grad=True)
    p.loss(w).sum().backward()
    torch.testing.assert_close(p.grad(w.detach()), w.grad, rtol=1e-13, atol=1e-15)


def test_l2_and_decoupled_decay_differ_for_adam(sweep):
    assert np.abs(sweep.paths["adam"][:, 0] - sweep.paths["adamw"][:, 0]).max() == 0.0  # λ = 0: same method
    gap = np.abs(sweep.final["adam"][1:] - sweep.final["adamw"][1:]).max(axis=1)
    assert gap[-1] > 0.5 and bool((gap > 0.01).all())


def test_l2_methods_settle_at_the_ridge_solution(sweep):
    # whatever the preconditioner, L2's fixed point is the minimizer of J + (λ/2)‖w‖²
    for name in ("sgd", "adam"):
        err = np.linalg.norm(sweep.final[name] - sweep.ridge, axis=1) / np.linalg.norm(sweep.ridge, axis=1)
        assert err.max() < 0.05, (name, err)


def test_adamw_settles_where_the_preconditioned_penalty_predicts(sweep):
    # decoupled decay = preconditioned descent on J + (λ/2) wᵀCw with C = sqrt(ŝ) + ε (measured err < 2%)
    pred = sweep.decoupled_prediction["adamw"]
    err = np.linalg.norm(sweep.final["adamw"] - pred, axis=1) / np.linalg.norm(pred, axis=1)
    assert err.max() < 0.05, err
    # ...and that is far from the ridge solution at strong decay
    assert np.linalg.norm(sweep.final["adamw"][-1] - sweep.ridge[-1]) > 0.5


def test_decay_family_member_is_the_single_weight_decay_computation():
    # the panel's scrubbed family: every λ of the grid trained together; member p = decay_comparison at λ_p
    grid = (0.0, 0.01, 0.1, 0.3, 1.0)
    family = X.decay_comparisons(lr=0.05, weight_decay=grid, steps=120, batch_size=8, lr_sgd=0.2)
    assert [m.weight_decay for m in family] == list(grid)
    for p in (0, 2, 4):
        one = X.decay_comparison(lr=0.05, weight_decay=grid[p], steps=120, batch_size=8, lr_sgd=0.2, grid=grid)
        a, b = family[p].sweep, one.sweep
        np.testing.assert_array_equal(a.weight_decays, b.weight_decays)
        for name in X.DECAY_OPTIMIZERS:
            np.testing.assert_allclose(a.paths[name], b.paths[name], rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(a.final[name], b.final[name], rtol=1e-12, atol=1e-14)
            np.testing.assert_array_equal(a.diverged_at[name], b.diverged_at[name])
        for name in ("Adam + L2", "AdamW"):
            np.testing.assert_allclose(a.decoupled_prediction[name], b.decoupled_prediction[name], rtol=1e-12,
                                       atol=1e-14)
        np.testing.assert_allclose(a.ridge, b.ridge, rtol=1e-12, atol=1e-14)
    # the members differ where they should: the chosen λ's path
    assert np.abs(family[0].sweep.paths["AdamW"][:, -1] - family[4].sweep.paths["AdamW"][:, -1]).max() > 0.1


def test_preconditioned_ridge_with_identity_is_ridge():
    p = A.regression_problem(seed=1)
    torch.testing.assert_close(p.preconditioned_ridge(0.3, torch.ones(2, dtype=F64)), p.ridge(0.3),
                               rtol=1e-13, atol=1e-14)


def test_minibatch_grad_averages_to_the_full_gradient_over_an_epoch():
    p = A.regression_problem(n=64, seed=2)
    grad = p.minibatch_grad(batch_size=8, seed=0)
    w = torch.tensor([[0.3, -0.4]], dtype=F64)
    epoch = torch.stack([grad(w, k) for k in range(8)]).mean(0)
    full = (w @ p.x.T - p.y) @ p.x / len(p.y)
    torch.testing.assert_close(epoch, full, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- 4. grafting

def _optimizer(name: str):
    """``name`` from the one factory, with the learning rate notebook 01 gives it."""
    return optim.get(name, lr=X.DEFAULT_LR[name])


def _params_and_grads(seed: int, runs: int = 3):
    g = torch.Generator().manual_seed(seed)
    shapes = {"linears.0.weight": (runs, 5, 4), "linears.0.bias": (runs, 5), "linears.1.weight": (runs, 2, 5)}
    params = {k: torch.randn(s, generator=g, dtype=F64) for k, s in shapes.items()}
    grads = [{k: torch.randn(s, generator=g, dtype=F64) for k, s in shapes.items()} for _ in range(4)]
    return params, grads


@pytest.mark.parametrize("m_name,d_name", [("sgd", "adam"), ("adam", "sgd"), ("rmsprop", "adam")])
def test_grafted_step_has_m_norm_and_d_direction_per_layer(m_name, d_name):
    params, grads = _params_and_grads(0)
    m, d = _optimizer(m_name), _optimizer(d_name)
    grafted = optim.graft(_optimizer(m_name), _optimizer(d_name))
    s_m, s_d, s_g = m.init(params), d.init(params), grafted.init(params)
    for g in grads:  # several steps, so that the optimizers' states are non-trivial
        u_m, s_m = m.update(g, s_m, params)
        u_d, s_d = d.update(g, s_d, params)
        u_g, s_g = grafted.update(g, s_g, params)
        for k in params:
            norm_g, norm_m = u_g[k].flatten(1).norm(dim=1), u_m[k].flatten(1).norm(dim=1)
            torch.testing.assert_close(norm_g, norm_m, rtol=1e-12, atol=0)
            unit_g = u_g[k].flatten(1) / norm_g[:, None]
            unit_d = u_d[k].flatten(1) / u_d[k].flatten(1).norm(dim=1, keepdim=True)
            torch.testing.assert_close(unit_g, unit_d, rtol=1e-12, atol=1e-14)


def test_step_comparison_reports_the_grafted_step():
    params, grads = _params_and_grads(1, runs=2)
    m, d = _optimizer("sgd"), _optimizer("adam")
    grafted = optim.graft(m, d)
    state = grafted.init(params)
    for g in grads[:3]:
        _, state = grafted.update(g, state, params)
    comp = A.step_comparison(m, d, grads[3], state, params)
    u, _ = grafted.update(grads[3], state, params)
    assert comp.shape == (2, 3, 4)
    for i, k in enumerate(params):
        torch.testing.assert_close(comp[:, i, 0], u[k].flatten(1).norm(dim=1), rtol=1e-12, atol=0)
    torch.testing.assert_close(comp[..., 0], comp[..., 1], rtol=1e-12, atol=0)   # ‖u‖ = ‖u_M‖
    torch.testing.assert_close(comp[..., 3], torch.ones(2, 3, dtype=F64), rtol=0, atol=1e-12)  # u ∥ u_D


def _log_loss(record) -> np.ndarray:
    return np.log(np.asarray(record.loss, dtype=float)[:, 0])


@pytest.mark.parametrize("m_name,d_name", [("rmsprop", "sgd"), ("sgd", "rmsprop")])
def test_graft_follows_the_loss_curve_of_the_magnitude_optimizer(m_name, d_name):
    """Notebook 01's 'Try' at the panel's full settings (300 steps): the graft's loss curve stays near M's (mean
    |log-loss gap| measured 0.08-0.18 over seeds 0-1) and far from D's (1.4-1.6), whichever of the pair supplies M."""
    r = X.grafting_experiment(m_name, d_name, steps=300)
    m, d, g = (_log_loss(r.records[k]) for k in (f"M = {m_name}", f"D = {d_name}", f"graft({m_name}, {d_name})"))
    assert 3 * np.mean(np.abs(g - m)) < np.mean(np.abs(g - d))


def test_adam_magnitude_does_not_suit_the_sgd_direction():
    """Notebook 01: graft(Adam, SGD) ends above both Adam and SGD alone (final losses 0.089 against 0.027 and 0.050,
    seed 0): Adam's smoothed step size does not suit SGD's noisier direction."""
    r = X.grafting_experiment("adam", "sgd", steps=300)
    final = {k: float(np.asarray(v.loss, dtype=float)[-1, 0]) for k, v in r.records.items()}
    assert final["graft(adam, sgd)"] > 1.3 * max(final["M = adam"], final["D = sgd"])


@pytest.fixture(scope="module")
def small_digits():
    from lecture_lib import data
    return data.digits(seed=0)


def test_grafting_experiment_records_m_norms_and_d_directions(small_digits):
    r = X.grafting_experiment("sgd", "adam", steps=30, sizes=(64, 16, 10), record_every=3, data=small_digits)
    assert set(r.records) == {"M = sgd", "D = adam", "graft(sgd, adam)"}
    assert r.layer_names == ["linears.0.weight", "linears.0.bias", "linears.1.weight", "linears.1.bias"]
    assert r.step_norms["graft"].shape == (10, 4)
    np.testing.assert_allclose(r.step_norms["graft"], r.step_norms["M"], rtol=1e-5)
    np.testing.assert_allclose(r.step_norms["cos_D"], 1.0, atol=1e-5)
    assert np.abs(r.step_norms["D"] / r.step_norms["M"] - 1).max() > 0.5  # the two really differ
    for rec in r.records.values():
        assert np.isfinite(rec.loss).all()
        assert rec.loss[-1, 0] < rec.loss[0, 0]


def test_grafting_an_optimizer_onto_itself_changes_nothing(small_digits):
    r = X.grafting_experiment("adam", "adam", steps=20, sizes=(64, 16, 10), record_every=1, data=small_digits)
    np.testing.assert_allclose(r.records["graft(adam, adam)"].loss, r.records["M = adam"].loss, rtol=1e-5)


def test_unknown_optimizer_names_are_rejected():
    with pytest.raises(ValueError, match="magnitude must be one of 'sgd', 'rmsprop', 'adam'"):
        X.grafting_experiment("lbfgs")
    with pytest.raises(ValueError, match="direction must be one of 'sgd', 'rmsprop', 'adam'"):
        X.grafting_experiment("sgd", "lbfgs")
    with pytest.raises(ValueError, match="name must be one of .*'sgd'.*got 'lbfgs'"):
        optim.get("lbfgs", lr=0.1)


# --------------------------------------------------------------------------- the notebook's figure builders

def _all_finite(fig) -> bool:
    for trace in fig.data:
        for key in ("x", "y"):
            values = getattr(trace, key, None)
            values = None if values is None else [v for v in values if v is not None]   # None: a gap in a line
            if values is not None and len(values) and not np.isfinite(np.asarray(values, dtype=float)).all():
                return False
    return True


def _unique_names(fig) -> bool:
    names = [trace.name for trace in fig.data]
    return None not in names and len(set(names)) == len(names)


def test_trajectory_figure_truncates_a_diverged_run_and_keeps_its_traces():
    from lecture_lib.viz import adaptive_panels as P
    ok = X.trajectories(lr_sgd=1.0, steps=30)
    bad = X.trajectories(lr_sgd=3.0, steps=30)
    assert ok.diverged_at["SGD"] == -1 and bad.diverged_at["SGD"] > 0
    f_ok, f_bad = P.trajectory_figure(ok), P.trajectory_figure(bad)
    assert len(f_ok.data) == len(f_bad.data)  # the panel only copies trace data
    assert [t.name for t in f_ok.data] == [t.name for t in f_bad.data] and _unique_names(f_ok)
    assert _all_finite(f_bad)
    assert "diverged at step" in P._trajectory_notes(bad)
    # every axis fixed, the step axis over all steps also when a run diverged: a move back redraws the paths alone
    for fig in (f_ok, f_bad):
        axes = [fig.layout[name] for name in ("xaxis", "yaxis", "xaxis2", "yaxis2")]
        assert all(ax.range is not None and ax.autorange in (None, False) for ax in axes)
        assert tuple(fig.layout.xaxis2.range) == (0, 30)


def test_trajectory_start_turns_with_the_valley_so_sgd_paths_are_rotations():
    a, b = X.trajectories(angle=0.0, steps=20), X.trajectories(angle=90.0, steps=20)
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    np.testing.assert_allclose(b.paths["SGD"], a.paths["SGD"] @ rot.T, atol=1e-12)
    np.testing.assert_allclose(b.loss["SGD"], a.loss["SGD"], rtol=1e-10)


def test_fisher_and_decay_figures_have_stable_trace_counts():
    from lecture_lib.viz import adaptive_panels as P
    f1 = P.fisher_figure(X.fisher_comparison(0.0, False, n=5000))
    f2 = P.fisher_figure(X.fisher_comparison(1.5, True, n=5000))
    assert len(f1.data) == len(f2.data) and _all_finite(f2)
    assert [t.name for t in f1.data] == [t.name for t in f2.data] and _unique_names(f1)
    d1 = P.decay_figure(X.decay_comparison(lr=0.02, weight_decay=0.3, steps=40))
    d2 = P.decay_figure(X.decay_comparison(lr=0.1, weight_decay=0.001, steps=40))
    assert len(d1.data) == len(d2.data) and _all_finite(d2)
    assert [t.name for t in d1.data] == [t.name for t in d2.data] and _unique_names(d1)
    # the figure is drawn on a cached canvas: drawing another result leaves the first figure's layout alone
    assert d1.layout.to_plotly_json() == d2.layout.to_plotly_json() and d1.data[0].name == "contours of J"
    assert d1.data[0].x == d2.data[0].x and d1.data[0].y == d2.data[0].y      # not sent again on a move


def _level_values(trace, loss) -> np.ndarray:
    """``loss`` at each point of a contour trace, one row per ellipse (the trace's ``None`` gaps split them)."""
    x = np.array([np.nan if v is None else v for v in trace.x])
    y = np.array([np.nan if v is None else v for v in trace.y])
    pieces = np.split(np.stack([x, y], axis=1), np.flatnonzero(np.isnan(x)))
    return np.stack([loss(torch.as_tensor(p[~np.isnan(p[:, 0])])).numpy() for p in pieces])


def test_contour_lines_are_level_sets_of_the_loss():
    from lecture_lib.viz import adaptive_panels as P
    for angle in (0.0, 35.0):
        result = X.trajectories(angle=angle, steps=5)
        fig = P.trajectory_figure(result)
        levels = _level_values(fig.data[0], result.quadratic.loss)
        np.testing.assert_allclose(levels, np.broadcast_to(np.array(P.TRAJECTORY_LEVELS)[:, None], levels.shape),
                                   rtol=1e-10)
    result = X.decay_comparison(lr=0.02, weight_decay=0.3, steps=10)
    problem = result.problem
    levels = _level_values(P.decay_figure(result).data[0],
                           lambda w: problem.loss(w) - problem.loss(problem.least_squares))
    np.testing.assert_allclose(levels, np.broadcast_to(np.array(P.DECAY_LEVELS)[:, None], levels.shape), rtol=1e-8)


def test_grafting_figures_name_every_trace_once(small_digits):
    from lecture_lib.viz import adaptive_panels as P
    figs = [P.grafting_figures(X.grafting_experiment(m, d, steps=4, sizes=(64, 8, 10), record_every=1,
                                                     data=small_digits)) for m, d in (("sgd", "adam"), ("adam", "sgd"))]
    for a, b in zip(*figs):
        assert [t.name for t in a.data] == [t.name for t in b.data] and _unique_names(a)


def test_source_block_shows_code_without_docstrings():
    from lecture_lib.viz import figures
    text = figures.source_block(optim.adamw).data
    # the declaration of what it accepts, then the function: no argument checks in between
    assert text.startswith("```python\n@accepts(") and "\ndef adamw(" in text and "scale_by_adam" in text
    assert "Loshchilov" not in text  # the docstring's reference line is gone
    assert "Loshchilov" in figures.source_block(optim.adamw, docstrings=True).data


def test_source_blocks_of_notebook_01_show_no_argument_checks():
    from lecture_lib.viz import figures
    text = figures.source_block(A.descend, A.fisher_diagonals, A.adam_preconditioner, X.regularization_sweep,
                                X.grafting_experiment).data
    assert "raise" not in text and "check_" not in text
