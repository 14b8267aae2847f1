"""Implicit learning-rate decay: Euler identities, Pythagorean growth, the square-root law, remedies."""
import math

import numpy as np
import pytest
import torch

from lecture_lib import losses
from lecture_lib import scale_invariance as si
from lecture_lib.engine import train
from lecture_lib.experiments import implicit_decay as experiment

F64 = torch.float64
GAMMAS = [1e-3, 0.1, 0.5, 2.0, 10.0, 1e3]


def _batch(dim=8, n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=F64), torch.randn(n, 1, generator=g, dtype=F64)


# ------------------------------------------------------------------ Euler identities
def test_euler_identities_toy_model_exact():
    model, _ = experiment.toy_setup(dim=8, dtype=F64)
    x, y = _batch()
    e = si.euler_identities(model, losses.mse, x, y, "w", GAMMAS)
    assert e.scale_invariant
    assert np.abs(e.loss_change).max() < 1e-13            # J(γw) = J(w)
    assert np.abs(e.euler_error).max() < 1e-12            # γ ∇J(γw) = ∇J(w)
    assert np.abs(e.cosine).max() < 1e-12                 # w ⊥ ∇J(w)
    np.testing.assert_allclose(e.grad_norm * e.gammas, e.grad_norm[2] * e.gammas[2], rtol=1e-12)


def test_euler_identities_batchnorm_hidden_weights_but_not_output_layer():
    model, _ = experiment.bn_setup(width=16, eps=1e-14, dtype=F64)
    x, _ = _batch(dim=64, n=48)
    y = torch.arange(48) % 10
    for name in ("linears.0.weight", "linears.1.weight"):
        e = si.euler_identities(model, losses.cross_entropy, x, y, name, [0.1, 0.5, 2.0, 10.0])
        assert e.scale_invariant
        assert e.loss_change.max() < 1e-9
        assert e.euler_error.max() < 1e-8
        assert e.unit_cosine.max() < 1e-8                 # every unit's w_j ⊥ ∇_{w_j} J
    out = si.euler_identities(model, losses.cross_entropy, x, y, "linears.2.weight", [0.5, 2.0])
    assert not out.scale_invariant
    assert out.loss_change.min() > 1e-3                   # the output layer is not invariant
    assert out.euler_error.min() > 1e-2


def test_euler_identities_leave_batchnorm_running_statistics_alone():
    model, _ = experiment.bn_setup(width=8, dtype=F64)
    before = {k: v.clone() for k, v in model.named_buffers()}
    x, _ = _batch(dim=64, n=16)
    si.euler_identities(model, losses.cross_entropy, x, torch.arange(16) % 10, "linears.0.weight", [2.0])
    for k, v in model.named_buffers():
        assert torch.equal(v, before[k])


def test_euler_identities_reject_bad_arguments():
    model, _ = experiment.toy_setup(dim=4, dtype=F64)
    x, y = _batch(dim=4)
    with pytest.raises(ValueError, match="gammas"):
        si.euler_identities(model, losses.mse, x, y, "w", [1.0, -2.0])
    with pytest.raises(ValueError, match="name"):
        si.euler_identities(model, losses.mse, x, y, "nope", [1.0])


# ------------------------------------------------------------------ Pythagorean growth
LRS = torch.tensor([0.01, 0.1, 1.0, 10.0], dtype=F64)


@pytest.fixture(scope="module")
def toy_sweep():
    return experiment.run("toy", LRS, 1500)


def test_norm_grows_monotonically_without_weight_decay(toy_sweep):
    pn = toy_sweep.param_norm["w"]
    assert np.all(np.diff(pn, axis=0) > 0)


def test_pythagorean_identity_every_step(toy_sweep):
    res = si.pythagorean_residual(toy_sweep.param_norm["w"], toy_sweep.grad_norm["w"], LRS)
    assert res.shape == (1499, 4)
    assert np.abs(res).max() < 1e-10


def test_pythagorean_identity_batchnorm_network_float64():
    lr = torch.tensor([0.05, 0.5], dtype=F64)
    model, data = experiment.bn_setup(runs=2, width=16, eps=1e-14, dtype=F64)
    opt = si.remedy_optimizer(lr)
    rec = train(model, data, "cross_entropy", opt, 60, batch_size=64)
    for name in ("linears.0.weight", "linears.1.weight"):
        res = si.pythagorean_residual(rec.param_norm[name], rec.grad_norm[name], lr)
        assert np.abs(res).max() < 1e-10
        assert np.all(np.diff(rec.param_norm[name], axis=0) > 0)
    # the output layer is not scale invariant: Pythagoras fails there
    res = si.pythagorean_residual(rec.param_norm["linears.2.weight"], rec.grad_norm["linears.2.weight"], lr)
    assert np.abs(res).max() > 1e-4


def test_sqrt_law_explains_norm_growth_under_constant_gradient_norm(toy_sweep):
    r = 1  # α = 0.1: ‖∇J(ŵ)‖ is roughly constant (label noise keeps the minibatch gradient alive)
    g = si.direction_grad_norm(toy_sweep, "w")[:, r]
    assert g.std() / g.mean() < 0.6
    fit = si.fit_sqrt_law(toy_sweep.steps, toy_sweep.param_norm["w"][:, r] ** 2)
    assert fit.r2 >= 0.99
    # ‖w‖⁴ grows by 2 α² G² per step, G the RMS gradient norm of ŵ
    assert fit.slope == pytest.approx(2 * 0.1 ** 2 * np.mean(g ** 2), rel=0.05)
    # with ‖w0‖ = 1 the fitted time scale is k0 = 1 / (2 α² G²) up to the early transient
    assert 0.5 < fit.k0 / si.sqrt_law_k0(1.0, 0.1, float(np.sqrt(np.mean(g ** 2)))) < 2.5


def test_fit_sqrt_law_recovers_exact_parameters_and_validates():
    k = np.arange(500)
    fit = si.fit_sqrt_law(k, 3.0 * np.sqrt(1 + k / 40.0))
    assert fit.scale == pytest.approx(3.0, rel=1e-10)
    assert fit.k0 == pytest.approx(40.0, rel=1e-10)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(fit.effective_lr(k, 0.3), 0.1 / np.sqrt(1 + k / 40.0), rtol=1e-10)
    flat = si.fit_sqrt_law(k, np.full(500, 2.0))
    assert math.isinf(flat.k0)
    with pytest.raises(ValueError, match="sq_norm"):
        si.fit_sqrt_law(k, -np.ones(500))
    with pytest.raises(ValueError):
        si.fit_sqrt_law([0, 1], [1.0, 2.0])


def test_late_effective_learning_rates_collapse_across_decades(toy_sweep):
    eff = toy_sweep.effective_lr["w"]
    np.testing.assert_allclose(eff[0], LRS.numpy(), rtol=1e-12)   # ‖w0‖ = 1: starts at α
    assert experiment.spread(eff, 0) == pytest.approx(1000.0)
    assert experiment.spread(eff, -1) < 10.0                        # three decades -> within 10x
    # the α-free asymptote 1/(G√(2k)) is where the large-α runs end up
    late = experiment.late_asymptote(toy_sweep, "w")[-1]
    assert 0.5 < eff[-1, 2] / late < 2.0


# ------------------------------------------------------------------ remedies
def test_unit_norm_projection_gives_effective_lr_alpha_exactly():
    lr = torch.tensor([0.03, 0.3, 3.0], dtype=F64)
    rec = experiment.run("toy", lr, 200, remedy="unit_norm")
    np.testing.assert_allclose(rec.param_norm["w"], 1.0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(rec.effective_lr["w"], np.broadcast_to(lr.numpy(), (200, 3)), rtol=1e-13)


def test_exponential_schedule_equals_weight_decay_on_directions():
    """Li & Arora (2020): WD λ and the schedule α ϱ^-(2k+1) give the same ŵ_k on a scale-invariant cost."""
    lr, wd, steps = 0.2, 0.05, 120
    finals, records = [], []
    for remedy in ("weight_decay", "exp_schedule"):
        model, data = experiment.toy_setup(dtype=F64)
        records.append(train(model, data, "mse", si.remedy_optimizer(lr, remedy, wd), steps, batch_size=16))
        finals.append(model.w.detach().clone())
    wd_w, exp_w = finals
    rho = 1 - lr * wd
    np.testing.assert_allclose((wd_w / wd_w.norm()).numpy(), (exp_w / exp_w.norm()).numpy(), atol=1e-10)
    assert float(exp_w.norm() / wd_w.norm()) == pytest.approx(rho ** -steps, rel=1e-9)
    # the same effective learning rate, up to the constant 1/ϱ
    np.testing.assert_allclose(records[1].effective_lr["w"], records[0].effective_lr["w"] / rho, rtol=1e-9)


def test_weight_decay_stops_the_decay():
    lr = torch.tensor([0.1], dtype=F64)
    plain = experiment.run("toy", lr, 1500)
    decayed = experiment.run("toy", lr, 1500, remedy="weight_decay", weight_decay=0.05)
    assert decayed.effective_lr["w"][-1, 0] > 3 * plain.effective_lr["w"][-1, 0]


def test_remedy_optimizer_validates():
    with pytest.raises(ValueError, match="remedy"):
        si.remedy_optimizer(0.1, "magic")
    with pytest.raises(ValueError, match="below 1"):
        si.exponential_lr(2.0, 1.0)
    with pytest.raises(ValueError, match="lr"):
        si.remedy_optimizer(-0.1)


def test_output_layer_escapes_the_decay():
    """BN network, SGD: the hidden layers' effective rate falls while the output layer keeps α."""
    lr = torch.tensor([1.0, 2.0])
    rec = experiment.run("bn", lr, 300, width=32)
    rates = si.layer_learning_rates(rec, lr)
    for name in ("linears.0.weight", "linears.1.weight"):
        assert np.all(np.diff(rates[name], axis=0) < 0)            # only falls
        assert np.all(rates[name][-1] < rates[name][0] / 1.5)
    np.testing.assert_allclose(rates["linears.2.weight"], np.broadcast_to([1.0, 2.0], (300, 2)), rtol=1e-6)
    ratio = rates["linears.2.weight"] / rates["linears.0.weight"]
    assert np.all(ratio[-1] > 1.5 * ratio[0])


def test_exponential_schedule_on_bn_network_acts_on_masked_layers_only():
    lr = torch.tensor([0.5])
    rec = experiment.run("bn", lr, 30, remedy="exp_schedule", weight_decay=0.02, width=16)
    rho = 1 - 0.5 * 0.02
    alpha_k = 0.5 * rho ** -(2 * rec.steps + 1)
    np.testing.assert_allclose(rec.effective_lr["linears.0.weight"][:, 0],
                               alpha_k / rec.param_norm["linears.0.weight"][:, 0] ** 2, rtol=1e-5)


def test_kfac_angular_steps_ignore_the_weight_scale_unlike_sgd_and_adam():
    """Start from w0/4, w0, 4 w0 (same function): SGD's step angle scales like 1/‖w‖², Adam's like 1/‖w‖;
    K-FAC's hardly depends on the scale (exactly invariant only as the damping γ -> 0: effective damping γ‖w‖²)."""
    scales = torch.tensor([0.25, 1.0, 4.0])
    first, early = {}, {}
    for name, lr in (("sgd", 0.3), ("adam", 0.01), ("kfac", 0.003)):
        rec = experiment.run("bn", lr, 16, optimizer=name, damping=1e-4, init_scale=scales)
        ang = rec.angular_step["linears.0.weight"]
        first[name] = ang[0].max() / ang[0].min()
        mean = ang[1:].mean(0)
        early[name] = mean.max() / mean.min()
    assert first["sgd"] > 100                 # theory at step 0: 4⁴ = 256
    assert 8 < first["adam"] < 32             # theory at step 0: 4² = 16
    assert early["kfac"] < 3                  # theory (undamped): 1
    assert early["kfac"] < early["adam"] < early["sgd"]


# ------------------------------------------------------------------ the experiments of notebook 04
def test_section_experiments_report_what_their_panels_draw():
    g = experiment.growth("toy", 0.3, steps=300)
    assert g.names == ["w"] and g.monotone["w"]
    assert g.residual["w"] < 1e-12                                   # Pythagoras at every step (float64)
    assert g.fits["w"].r2 > 0.98                                     # the √ law explains the growth
    c = experiment.collapse(0.01, 3, steps=400)
    assert c.spread_start == pytest.approx(1000.0) and c.spread_end < 10.0
    o = experiment.optimizers(steps=10)
    assert o.early_spread("kfac") < o.early_spread("adam") < o.early_spread("sgd")
    r = experiment.remedies(chosen=("none", "unit_norm"), lr_unit=0.03, steps=20)
    assert set(r.runs) == {"none", "unit_norm"}
    np.testing.assert_allclose(r.runs["unit_norm"].effective_lr["linears.0.weight"], 0.03, rtol=1e-5)
    with pytest.raises(ValueError, match="lr \\* weight_decay"):
        experiment.remedies(lr=3.0, weight_decay=0.5, steps=2)
