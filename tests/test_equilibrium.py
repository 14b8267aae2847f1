"""Tests for lecture_lib.equilibrium (the weight-decay equilibrium of scale-invariant weights) and its
experiments, lecture_lib.experiments.equilibrium.

Formulas are checked against each other in float64; the toy model checks the
measured equilibrium against the predictions within the 15% SCIENCE.md allows
(measured ratio ≈ 1.04)."""
import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from lecture_lib import equilibrium as eq
from lecture_lib.experiments import equilibrium as ex
from lecture_lib.record import smooth


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The toy runs are tiny: on a loaded machine torch's thread hand-offs make them 10-40x slower.

    (The library leaves the thread count alone: panels compute in worker threads, and kernels in the hub
    and the app already run with ``OMP_NUM_THREADS=1``.)
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_formulas_agree_with_the_lecture():
    a, lam, rho = 0.1, 5e-4, 0.9
    assert eq.equilibrium_ratio(a, lam) == pytest.approx(math.sqrt(a / (2 * lam)), rel=1e-14)
    assert eq.equilibrium_ratio(a, lam, rho) == pytest.approx(math.sqrt(a / (2 * lam * (1 - rho))), rel=1e-14)
    assert eq.equilibrium_angular_step(a, lam, rho) == pytest.approx(math.sqrt(2 * a * lam * (1 - rho)), rel=1e-14)
    # the angular step is alpha / ratio: SGD+WD at equilibrium is LARS with eta = sqrt(2 alpha lambda (1-rho))
    assert eq.equilibrium_angular_step(a, lam, rho) == pytest.approx(a / eq.equilibrium_ratio(a, lam, rho), rel=1e-14)
    assert eq.relaxation_steps(a, lam) == pytest.approx(1 / (4 * a * lam), rel=1e-14)
    assert eq.relaxation_steps(a, lam, rho) == pytest.approx((1 - rho) / (4 * a * lam), rel=1e-14)


def test_turn_angle_is_the_lars_coefficient_only_without_momentum():
    a, lam = 0.1, 5e-3
    assert eq.equilibrium_turn_angle(a, lam) == pytest.approx(eq.equilibrium_angular_step(a, lam), rel=1e-14)
    for rho in (0.5, 0.9, 0.99):
        # the buffer of uncorrelated gradients is 1/sqrt(1 - rho^2) longer than one gradient
        assert eq.equilibrium_turn_angle(a, lam, rho) / eq.equilibrium_angular_step(a, lam, rho) == \
            pytest.approx(1 / math.sqrt(1 - rho ** 2), rel=1e-12)
    assert eq.equilibrium_turn_angle(a, lam, 0.9) == pytest.approx(math.sqrt(2 * a * lam / 1.9), rel=1e-14)


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


# --- the toy scale-invariant logistic model (real minibatch SGD through lecture_lib.engine) -----------
SETTINGS = [(0.1, 5e-4, 0.0), (0.4, 5e-4, 0.0), (0.1, 5e-3, 0.0), (0.1, 5e-4, 0.9)]


@pytest.fixture(scope="module")
def toy_family():
    lr, wd, mom = (list(c) for c in zip(*SETTINGS))
    # one batched computation; 20000 steps = 4 relaxation times of the slowest setting (1/(4·0.1·5e-4) = 5000)
    rec = ex.train_toy(lr, wd, mom, steps=20000, record_every=10)
    return rec, eq.equilibrium_check(rec, lr, wd, mom)


def test_toy_weights_are_scale_invariant_and_gradients_orthogonal():
    rec = ex.train_toy(0.1, 5e-3, steps=50, track_weights=True)
    w, g = rec.extras["w"][:, 0], rec.extras["g"][:, 0]
    cos = np.abs((w * g).sum(-1)) / (np.linalg.norm(w, axis=-1) * np.linalg.norm(g, axis=-1))
    assert cos.max() < 1e-10


@pytest.mark.parametrize("r", range(len(SETTINGS)))
def test_late_time_norm_ratio_matches_the_equilibrium(toy_family, r):
    _, check = toy_family
    # SCIENCE.md: measured / predicted ≈ 1.04; allowed 15%
    assert check["ratio_rel"][r] == pytest.approx(1.0, abs=0.15), SETTINGS[r]


@pytest.mark.parametrize("r", range(len(SETTINGS)))
def test_late_time_angular_step_matches_lars_rate(toy_family, r):
    _, check = toy_family
    assert check["step_rel"][r] == pytest.approx(1.0, abs=0.15), SETTINGS[r]


@pytest.mark.parametrize("r", range(len(SETTINGS)))
def test_late_time_angle_per_step_matches_the_momentum_buffer_prediction(toy_family, r):
    """The recorded angle between w_k and w_k+1 (not alpha ||g|| / ||w||) against sqrt(2 alpha lambda / (1 + rho)).

    Measured (RMS over the second half): 1.000-1.006 of the prediction, and 1.03 for (0.1, 5e-4, 0), whose
    second half starts at only two relaxation times (1/(4 alpha lambda) = 5000 steps).
    """
    _, check = toy_family
    assert check["angle_rel"][r] == pytest.approx(1.0, abs=0.05), SETTINGS[r]


def test_with_momentum_the_angle_per_step_is_not_the_lars_coefficient():
    """Issue 15: 'every step turns w by sqrt(2 alpha lambda (1 - rho))' is wrong for rho > 0.

    At (alpha, lambda, rho) = (0.1, 5e-3, 0.9) the recorded angle is 2.25x that value (median) and
    1.00x sqrt(2 alpha lambda / (1 + rho)) (RMS); the LARS coefficient alpha ||g|| / ||w|| does follow
    sqrt(2 alpha lambda (1 - rho)) (0.98, median).
    """
    lr, wd, mom = [0.1, 0.1, 0.05], [5e-3, 5e-3, 5e-3], [0.9, 0.5, 0.95]
    rec = ex.train_toy(lr, wd, mom, steps=4000)   # relaxation times 50, 250, 50 steps
    angle = rec.angular_step["w"]
    old = np.asarray(eq.equilibrium_angular_step(lr, wd, mom))
    new = np.asarray(eq.equilibrium_turn_angle(lr, wd, mom))
    rms = eq.late_rms(angle)
    assert np.allclose(rms / new, 1.0, atol=0.05), rms / new
    # the median angle exceeds the old formula by about 1/sqrt(1 - rho^2) (measured 0.96-0.98 of that factor)
    assert np.all(eq.late_median(angle) / old > 0.9 / np.sqrt(1 - np.asarray(mom) ** 2)), eq.late_median(angle) / old
    assert eq.late_median(angle)[0] / old[0] > 2.0       # rho = 0.9: the old formula is off by more than 2x
    check = eq.equilibrium_check(rec, lr, wd, mom)
    assert np.allclose(check["step_rel"], 1.0, atol=0.1)  # what does tend to the old formula: alpha ||g|| / ||w||
    assert np.allclose(check["angle_rel"], rms / new)


def test_decoupled_decay_is_l2_only_without_momentum():
    """PyTorch's SGD puts lambda w into the momentum buffer; SGDW adds it after. Same trajectory at rho = 0;
    at rho = 0.9 SGDW's decay is not resummed, so it acts like the buffer's decay with lambda (1 - rho):
    ||w|| / ||g|| is sqrt(1 / (1 - rho)) = 3.16 times larger (measured 3.20)."""
    a, lam = 0.1, 5e-3
    sgd, sgdw = (ex.train_toy([a, a], lam, 0.0, steps=200, optimizer=o) for o in ("sgd", "sgdw"))
    assert np.array_equal(sgd.param_norm["w"], sgdw.param_norm["w"])
    rho = 0.9
    steps = int(12 * eq.relaxation_steps(a, lam * (1 - rho), rho))   # 12 relaxation times of SGDW
    sgd, sgdw = (ex.train_toy(a, lam, rho, steps=steps, optimizer=o) for o in ("sgd", "sgdw"))
    l2, decoupled = eq.equilibrium_check(sgd, a, lam, rho), eq.equilibrium_check(sgdw, a, lam * (1 - rho), rho)
    assert decoupled["ratio_rel"][0] == pytest.approx(1.0, abs=0.1)       # measured 1.03
    assert decoupled["ratio"][0] / l2["ratio"][0] == pytest.approx(1 / math.sqrt(1 - rho), rel=0.1)


def test_norm_relaxes_towards_equilibrium_from_both_sides():
    # start 4x below and 4x above the predicted equilibrium squared norm; after 6 relaxation times both are close
    a, lam = 0.2, 5e-3
    x_star = eq.equilibrium_sq_norm(a, lam, 1.0)
    tau = eq.relaxation_steps(a, lam)
    rec = ex.train_toy([a, a], [lam, lam], init_norm=[math.sqrt(x_star / 4), math.sqrt(4 * x_star)],
                       steps=int(6 * tau))
    w2 = rec.param_norm["w"] ** 2
    assert w2[0, 0] < 0.3 * x_star and w2[0, 1] > 3 * x_star
    late = eq.late_median(w2, 0.8)
    assert np.all(np.abs(late / late.mean() - 1) < 0.1)
    # without decay, under the same gradients, the norm only grows (Pythagoras)
    rec0 = ex.train_toy(a, 0.0, steps=200)
    assert np.all(np.diff(rec0.param_norm["w"][:, 0]) > 0)


def test_lars_angular_step_is_its_learning_rate():
    rec = ex.train_toy([0.01, 0.05], 0.0, optimizer="lars", steps=100)
    assert np.allclose(rec.angular_step["w"][:, 0], 0.01, rtol=1e-3)  # atan(eta) ≈ eta
    assert np.allclose(rec.angular_step["w"][:, 1], math.atan(0.05), rtol=1e-6)


def test_gradients_of_successive_batches_are_nearly_orthogonal():
    rec = ex.train_toy(0.1, 5e-3, 0.9, steps=1500, track_correlation=True)
    cos = rec.extras["grad_momentum_cos"][500:, 0]
    assert abs(np.nanmean(cos)) < 0.1
    assert np.isnan(rec.extras["grad_momentum_cos"][0, 0])  # no history on the first step


def test_linear_scaling_rule_scales_the_step_by_sqrt_n_and_the_gradient_by_one_over_sqrt_n():
    s = ex.batch_scaling(factors=(1, 4), examples=16000)
    assert s.step[1] / s.step[0] == pytest.approx(2.0, rel=0.15)  # sqrt(4)
    assert s.grad_scale[1] / s.grad_scale[0] == pytest.approx(0.5, rel=0.15)  # 1/sqrt(4): noise dominated


def test_mismatched_per_run_lengths_raise():
    with pytest.raises(ValueError, match="per-run"):
        ex.train_toy([0.1, 0.2], [1e-3, 2e-3, 3e-3], steps=5)


def test_bn_network_function_ignores_the_norm_of_its_scale_invariant_weights():
    rec, model, data = ex.train_bn_network([0.1, 0.1], [0.0, 1e-2], steps=30, batch_size=32, label_noise=0.3,
                                           return_model=True)
    assert ex.scale_invariant_names(rec) == ["linears.0.weight", "linears.1.weight", "linears.2.weight"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gap = ex.rescaled_output_gap(model, data.x_train, 10.0)
    assert np.all(gap < 1e-2)  # exact up to the normalizer's eps and float32
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and running stats restored


def test_smooth_and_grad_scale():
    x = np.arange(10.0)[:, None] * np.ones((1, 2))
    s = smooth(x, 3)  # the project's one (centred) smoother
    assert s.shape == x.shape and np.allclose(s[1:-1, 0], x[1:-1, 0]) and s[0, 0] == pytest.approx(0.5)

    class R:  # a minimal record: ||w|| ||g|| = 2 and 4 in the two halves, RMS over the second half
        param_norm = {"w": np.array([[1.0], [1.0], [2.0], [2.0]])}
        grad_norm = {"w": np.array([[2.0], [2.0], [1.0], [2.0]])}
    assert eq.grad_scale(R())[0] == pytest.approx(math.sqrt((4 + 16) / 2))


# --- the experiments behind the notebook's panels -------------------------------------------------------
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_mean_field_map_takes_its_G_from_another_seed_and_predicts_the_plotted_runs(momentum):
    """Issue 15: the dotted prediction must not use G measured on the runs it is drawn over.

    Measured late ||w||^2 / the map's late value: 0.997-1.001 (rho = 0), 0.951-1.022 (rho = 0.9).
    """
    res = ex.ratio_family(0.1, 2e-3, momentum, 32, 800, 5000)
    assert res.probe.config["seed"] != res.record.config["seed"]           # other minibatches
    assert not np.allclose(res.probe.loss[0], res.record.loss[0])          # another initial direction
    assert np.array_equal(res.grad_scale, eq.grad_scale(res.probe))        # G is the probe's ...
    assert not np.array_equal(res.grad_scale, eq.grad_scale(res.record))   # ... not the plotted runs'
    w0 = res.record.param_norm["w"][0] ** 2
    assert np.allclose(res.map_scaled[0], w0 / np.sqrt(res.lr / res.weight_decay))
    assert np.allclose(res.sq_norm_rel, 1.0, atol=0.08), res.sq_norm_rel


def test_plane_circle_is_predicted_from_another_run():
    res = ex.plane_runs(1.0, 0.02, steps=300)
    assert res.probe.config["seed"] != res.record.config["seed"]
    late = np.median(np.linalg.norm(res.w[150:, 1], axis=-1))
    assert late / res.radius == pytest.approx(1.0, abs=0.08)   # measured 0.996-1.005 at 300-600 steps


def test_plane_step_has_an_orthogonal_gradient_piece_and_an_inward_decay_piece():
    runs = ex.plane_runs(1.0, 0.02, steps=30)
    for k in (0, 15, 29):
        decay, grad = runs.pieces(k)
        w = runs.w[k]
        assert np.allclose(decay[0], 0.0)                              # run 0: no weight decay
        assert np.allclose(decay[1], -1.0 * 0.02 * w[1])               # −αλw points inward
        cos = np.abs((grad * w).sum(-1)) / (np.linalg.norm(grad, axis=-1) * np.linalg.norm(w, axis=-1))
        assert cos.max() < 1e-10                                       # −αg is orthogonal to w


# ----------------------------------------------------------------------------- shrink = growth on the BN network
BALANCE = dict(lr=(0.1, 0.05, 0.5), weight_decay=(5e-3, 1e-2, 1e-2), momentum=(0.9, 0.9, 0.0))   # (1-ρ)/(4αλ) = 50


def _gradient_history(names, momentum):
    """A ``track=`` function, ``(R, L, 2)``: per layer ‖g_t‖² and g_t·u_{t-1}, where u_t = ρu_{t-1} + g_t sums the
    loss gradients."""
    u = {}

    def track(model, params, grads, state):
        out = []
        for n in names:
            g = grads[n].flatten(1)
            prev = u.get(n, torch.zeros_like(g))
            out.append(torch.stack([g.square().sum(1), (g * prev).sum(1)], -1))
            u[n] = momentum[:, None] * prev + g
        return torch.stack(out, 1)

    return track


@pytest.fixture(scope="module", params=[0, 1])
def bn_balance(request):
    """The BN MLP of notebook 05 (three hidden layers of 32, batch 32, PyTorch SGD: decay inside the momentum
    buffer, 30% wrong training labels so that the gradients stay noisy), 600 steps = 12 relaxation times; per
    scale-invariant layer, the ratios of the mean growth to the mean shrink over the last 300 steps."""
    from lecture_lib import engine, optim
    from lecture_lib.data import digits
    from lecture_lib.models import MLP
    lr, wd, rho = (torch.tensor(BALANCE[k]) for k in ("lr", "weight_decay", "momentum"))
    model = MLP([64, 32, 32, 32, 10], norm="batch", activation="relu", runs=3, seed=request.param)
    names = [n for n, on in model.scale_invariant.items() if on]
    rec = engine.train(model, digits(label_noise=0.3), "cross_entropy",
                       optim.sgd(lr, momentum=rho, weight_decay=wd), steps=600, batch_size=32, seed=request.param,
                       track={"history": _gradient_history(names, rho)})
    history = np.asarray(rec.extras["history"])
    late = slice(len(rec.steps) // 2, None)
    out = {"uncorrelated": [], "correlated": []}
    for i, n in enumerate(names):
        shrink, growth = eq.norm_balance(rec.param_norm[n], rec.grad_norm[n], **BALANCE)
        corrected = eq.momentum_growth(history[:, :, i, 0], history[:, :, i, 1], BALANCE["lr"], BALANCE["momentum"])
        out["uncorrelated"].append(growth[late].mean(0) / shrink[late].mean(0))
        out["correlated"].append(corrected[late].mean(0) / shrink[late].mean(0))
    return {k: np.array(v) for k, v in out.items()}     # (layers, runs)


def test_bn_network_shrink_equals_growth_per_layer(bn_balance):
    """At equilibrium the decay's shrink 2α′λ‖w‖² and the gradients' growth balance on every scale-invariant layer,
    within 10% (measured over seeds 0-4, three layers each: 0.96-1.065). With momentum the growth must count the
    correlation of each gradient with the earlier ones (:func:`momentum_growth`); without momentum it is α²‖g‖²."""
    ratio = bn_balance["correlated"]
    assert np.all(np.abs(ratio - 1.0) < 0.10), ratio
    np.testing.assert_allclose(bn_balance["uncorrelated"][:, 2], ratio[:, 2], rtol=1e-6)   # ρ = 0: same formula


def test_bn_network_gradients_anticorrelate_so_the_resummed_growth_overshoots(bn_balance):
    """With ρ = 0.9 the resummed growth α′²‖g‖² (successive gradients assumed uncorrelated) exceeds the shrink on
    every layer (measured 1.05-1.20 over seeds 0-4): each gradient partly undoes the ones in the buffer."""
    momentum_runs = slice(0, 2)
    assert np.all(bn_balance["uncorrelated"][:, momentum_runs] > bn_balance["correlated"][:, momentum_runs])
    assert np.all(bn_balance["uncorrelated"][:, momentum_runs] > 1.02)


def test_momentum_growth_reduces_to_the_uncorrelated_formula():
    g2, dot = np.array([[2.0, 3.0]]), np.array([[0.0, -0.5]])
    _, growth = eq.norm_balance(np.ones((1, 2)), np.sqrt(g2), lr=0.1, weight_decay=0.01, momentum=0.9)
    corrected = eq.momentum_growth(g2, dot, lr=0.1, momentum=0.9)
    assert corrected[0, 0] == pytest.approx(growth[0, 0], rel=1e-12)                  # no correlation: the same
    assert corrected[0, 1] == pytest.approx(growth[0, 1] * (3.0 - 2 * 0.9 * 0.5) / 3.0, rel=1e-12)


def test_panel_figures_have_the_same_uniquely_named_traces_for_every_result():
    from lecture_lib.viz import equilibrium_panels as panels

    cases = [(panels.ratio_figures, [ex.ratio_family(0.1, 2e-3, 0.0, 32, 50, 50),
                                     ex.ratio_family(1.0, 3e-2, 0.9, 8, 50, 50)]),
             (panels.plane_figure, [(ex.plane_runs(1.0, 0.02, 20), 19), (ex.plane_runs(0.1, 0.1, 20), 0)]),
             (panels.lars_figure, [ex.sgd_vs_lars(0.1, 5e-3, 0.9, 30, 30), ex.sgd_vs_lars(1.0, 3e-2, 0.0, 30, 30)]),
             (panels.balance_figures, [ex.layer_balance(0.1, 5e-3, 0.9, steps=10),
                                       ex.layer_balance(1.0, 0.0, 0.0, steps=10)])]
    for build, results in cases:
        first, second = ([f] if not isinstance(f, list) else f for f in map(build, results))
        for a, b in zip(first, second):
            names = [t.name for t in a.data]
            assert len(set(names)) == len(names), names
            assert names == [t.name for t in b.data]


def test_subplot_skeletons_are_built_once_and_each_builder_gets_its_own_copy():
    """The panels' subplot skeleton is built once per arguments (builders run for every streamed partial); every
    call returns a figure of its own, equal to one built afresh, that a builder may fill without touching the next."""
    from lecture_lib.viz import equilibrium_panels as panels

    args = (("loss", "angle"), 430, 0.09)
    fresh = panels._subplots_built.__wrapped__(*args)
    first = panels._subplots(*args)
    first.add_trace(go.Scatter(x=[0, 1], y=[1, 0], name="run"), 1, 2)
    first.update_layout(title_text="filled")
    assert first.data[0].xaxis == "x2"                           # the subplot grid came with the copy
    second = panels._subplots(*args)
    assert second is not first and second.to_dict() == fresh.to_dict() and len(second.data) == 0
    assert panels._subplots_built.cache_info().misses >= 1 and panels._subplots_built(*args) is panels._subplots_built(*args)


def test_linear_scaling_figure_labels_each_scale_factor_alone():
    """The log axis "scale factor n" is labelled at the factors trained (plotly's own ticks put a "9" next to "1")."""
    from lecture_lib.viz import equilibrium_panels as ep
    s = ex.batch_scaling(factors=(1, 2, 4), examples=96)
    axis = ep.batch_figure(s, examples=96).layout.xaxis2
    assert axis.type == "log" and list(axis.tickvals) == [1, 2, 4]


def test_linear_scaling_predictions_are_drawn_from_the_first_streamed_frame():
    """√(2nαλ) needs no training: the first partial result holds it for every factor, and its figure draws both
    prediction lines over all factors on a fixed n axis (before, the middle plot was empty, its axes plotly's
    defaults, until the first factor finished). The measured steps come only from runs that finished."""
    from lecture_lib.viz import equilibrium_panels as ep
    partials = []
    final = ex.batch_scaling.uncached(factors=(1, 2, 4), examples=96, progress=lambda f, p=None: partials.append(p))
    first = next(p for p in partials if p is not None)
    assert len(first.n) == 0 and np.array_equal(first.step_pred, final.step_pred)
    np.testing.assert_allclose(final.step_pred, [eq.equilibrium_angular_step(0.02 * n, 5e-3) for n in (1, 2, 4)])
    fig = ep.batch_figure(first, examples=96)
    measured, pred, linear = [t for t in fig.data if t.xaxis == "x2"]
    assert len(measured.x) == 0 and list(pred.x) == [1, 2, 4] and np.allclose(pred.y, final.step_pred)
    assert np.allclose(linear.y, final.step_pred[0] * np.array([1, 2, 4]))
    assert fig.layout.xaxis2.range == ep.batch_figure(final, examples=96).layout.xaxis2.range
    assert fig.layout.xaxis2.range[0] < 0 < np.log10(4) < fig.layout.xaxis2.range[1]
