"""Tests for lecture_lib.optim: PyTorch as the reference answer, identities from the lecture, argument checks."""
from __future__ import annotations

import inspect
import math
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lecture_lib import optim
from lecture_lib.models import ScaleInvariantLinear
from lecture_lib.optim import (TransformOptimizer, add_decayed_weights, apply_updates, chain, functional_step, graft,
                               identity, masked, project_to_unit_norm, run_norm, scale_by_adam, scale_by_lr,
                               scale_by_rms, scale_by_trust_ratio, trace)
from optim_cases import CASES, RUNS, TORCH_CASES, tiny_mlp_problem

STEPS = 60
TOL = dict(rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- helpers

def run_ours(transform, init, loss, runs, steps=STEPS):
    """Train ``runs`` copies of ``init`` with a transform; return the parameters after every step."""
    params = {k: v.expand(runs, *v.shape).clone() for k, v in init.items()}
    state = transform.init(params)
    trajectory = []
    for _ in range(steps):
        leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
        grads = dict(zip(leaves, torch.autograd.grad(loss(leaves).sum(), list(leaves.values()))))
        params, state = functional_step(transform, state, params, grads)
        trajectory.append(params)
    return trajectory


def run_torch(make_optimizer, init, loss, steps=STEPS):
    """The same training with an ordinary torch.optim optimizer on run-less tensors."""
    leaves = {k: v.clone().requires_grad_() for k, v in init.items()}
    opt = make_optimizer(leaves)
    trajectory = []
    for _ in range(steps):
        opt.zero_grad()
        loss({k: v.unsqueeze(0) for k, v in leaves.items()}).sum().backward()
        opt.step()
        trajectory.append({k: v.detach().clone() for k, v in leaves.items()})
    return trajectory


def assert_same_trajectory(ours, theirs, run=0):
    assert len(ours) == len(theirs) >= 50
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for k in b:
            torch.testing.assert_close(a[k][run], b[k], **TOL, msg=lambda m: f"step {step}, {k}: {m}")


def random_tree(runs=RUNS, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(runs, 4, 3, generator=g, dtype=torch.float64),
            "b": torch.randn(runs, 4, generator=g, dtype=torch.float64)}


# --------------------------------------------------------------------------- PyTorch as the reference

@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: c.id)
def test_each_run_matches_torch_optim(case):
    init, loss = tiny_mlp_problem()
    for r in range(RUNS):
        ours = run_ours(optim.get(case.alias, **case.ours(r)), init, loss, runs=1)
        theirs = run_torch(lambda p: case.torch_cls(p.values(), **case.theirs(r)), init, loss)
        assert_same_trajectory(ours, theirs)


@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: c.id)
def test_batched_runs_match_separate_torch_runs(case):
    """R hyperparameter settings as (R,) tensors in one computation == R separate torch.optim runs."""
    init, loss = tiny_mlp_problem()
    ours = run_ours(optim.get(case.alias, **case.ours()), init, loss, runs=RUNS)
    for r in range(RUNS):
        theirs = run_torch(lambda p: case.torch_cls(p.values(), **case.theirs(r)), init, loss)
        assert_same_trajectory(ours, theirs, run=r)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_batched_runs_match_separate_runs(case):
    init, loss = tiny_mlp_problem(seed=1)
    together = run_ours(optim.get(case.alias, **case.ours()), init, loss, runs=RUNS, steps=20)
    for r in range(RUNS):
        alone = run_ours(optim.get(case.alias, **case.ours(r)), init, loss, runs=1, steps=20)
        for a, b in zip(together, alone):
            for k in a:
                torch.testing.assert_close(a[k][r], b[k][0], **TOL)


def test_table_covers_every_alias():
    assert {c.alias for c in CASES} == set(optim.OPTIMIZERS)


# --------------------------------------------------------------------------- L2 versus decoupled weight decay

def test_sgd_l2_equals_decoupled_without_momentum_exactly():
    init, loss = tiny_mlp_problem()
    lr, wd = torch.tensor([0.1, 0.3]), torch.tensor([1e-2, 0.2])
    l2 = run_ours(optim.sgd(lr, weight_decay=wd), init, loss, runs=2)
    decoupled = run_ours(optim.sgdw(lr, weight_decay=wd), init, loss, runs=2)
    for a, b in zip(l2, decoupled):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_sgd_l2_and_decoupled_differ_with_momentum():
    init, loss = tiny_mlp_problem()
    l2 = run_ours(optim.sgd(0.1, momentum=0.9, weight_decay=0.1), init, loss, runs=1)[-1]
    decoupled = run_ours(optim.sgdw(0.1, momentum=0.9, weight_decay=0.1), init, loss, runs=1)[-1]
    assert max((l2[k] - decoupled[k]).abs().max().item() for k in l2) > 1e-3


def test_adam_l2_and_adamw_differ_but_agree_without_decay():
    init, loss = tiny_mlp_problem()
    l2 = run_ours(optim.adam(1e-2, weight_decay=0.1), init, loss, runs=1)[-1]
    decoupled = run_ours(optim.adamw(1e-2, weight_decay=0.1), init, loss, runs=1)[-1]
    assert max((l2[k] - decoupled[k]).abs().max().item() for k in l2) > 1e-3
    plain = run_ours(optim.adam(1e-2), init, loss, runs=1)[-1]
    plain_w = run_ours(optim.adamw(1e-2, weight_decay=0.0), init, loss, runs=1)[-1]
    assert all(torch.equal(plain[k], plain_w[k]) for k in plain)


def test_adamw_step_is_lecture_formula():
    """Decoupled: w <- (1 - alpha*lambda) w - alpha * (Adam direction)."""
    params, grads = random_tree(), random_tree(seed=1)
    lr, wd = 0.01, torch.tensor([0.0, 0.1, 0.5, 1.0])
    tx = optim.adamw(lr, weight_decay=wd)
    new, _ = functional_step(tx, tx.init(params), params, grads)
    adam_dir, _ = scale_by_adam().update(grads, scale_by_adam().init(params))
    for k in params:
        expected = (1 - lr * optim.per_run(wd, params[k])) * params[k] - lr * adam_dir[k]
        torch.testing.assert_close(new[k], expected, **TOL)


# --------------------------------------------------------------------------- individual transforms

def test_scale_by_rms_eps_inside_sqrt_is_lecture_form():
    g, params = random_tree(seed=2), random_tree()
    beta2, eps = 0.9, 1e-2
    out, state = scale_by_rms(beta2, eps, eps_in_sqrt=True).update(g, scale_by_rms(beta2, eps).init(params))
    for k in g:
        s = (1 - beta2) * g[k] ** 2
        torch.testing.assert_close(state.s[k], s, **TOL)
        torch.testing.assert_close(out[k], g[k] / torch.sqrt(s + eps), **TOL)


def test_lr_schedule_is_called_with_the_step_count():
    params, grads = random_tree(), random_tree(seed=1)
    seen = []
    tx = scale_by_lr(lambda step: seen.append(step) or 0.5 ** step)
    state = tx.init(params)
    for step in range(4):
        out, state = tx.update(grads, state)
        torch.testing.assert_close(out["w"], -(0.5 ** step) * grads["w"], **TOL)
    assert seen[-4:] == [0, 1, 2, 3]
    assert tx.hparams["lr"] is not None and optim.sgd(0.3).hparams["lr"] == 0.3


def test_lr_schedule_output_is_checked():
    tx = scale_by_lr(lambda step: -1.0)
    with pytest.raises(ValueError, match="lr"):
        tx.update(random_tree(), tx.init(random_tree()))


def test_trace_is_heavy_ball_and_nesterov():
    params = random_tree()
    g1, g2 = random_tree(seed=1), random_tree(seed=2)
    rho = torch.tensor([0.0, 0.5, 0.9, 0.99])
    for nesterov in (False, True):
        tx = trace(rho, nesterov)
        _, state = tx.update(g1, tx.init(params))
        out, state = tx.update(g2, state)
        for k in params:
            r = optim.per_run(rho, params[k])
            v = r * g1[k] + g2[k]
            torch.testing.assert_close(state.velocity[k], v, **TOL)
            torch.testing.assert_close(out[k], g2[k] + r * v if nesterov else v, **TOL)


# --------------------------------------------------------------------------- grafting

def test_graft_has_magnitude_norm_and_direction_direction_per_tensor_per_run():
    params = random_tree()
    magnitude, direction = trace(0.9), scale_by_adam(beta1=0.5)
    tx = graft(magnitude, direction)
    state, m_state, d_state = tx.init(params), magnitude.init(params), direction.init(params)
    for step in range(5):
        g = random_tree(seed=10 + step)
        out, state = tx.update(g, state, params)
        u_m, m_state = magnitude.update(g, m_state, params)
        u_d, d_state = direction.update(g, d_state, params)
        for k in g:
            torch.testing.assert_close(run_norm(out[k]), run_norm(u_m[k]), **TOL)
            cosine = (out[k] * u_d[k]).flatten(1).sum(1) / (run_norm(out[k]) * run_norm(u_d[k])).flatten()
            torch.testing.assert_close(cosine, torch.ones(RUNS, dtype=torch.float64), **TOL)


def test_graft_of_a_transform_with_itself_is_that_transform():
    params, g = random_tree(), random_tree(seed=3)
    out, _ = graft(scale_by_adam(), scale_by_adam()).update(g, graft(scale_by_adam(), scale_by_adam()).init(params))
    ref, _ = scale_by_adam().update(g, scale_by_adam().init(params))
    for k in g:
        torch.testing.assert_close(out[k], ref[k], **TOL)


def test_graft_then_learning_rate_trains():
    init, loss = tiny_mlp_problem()
    tx = chain(graft(identity(), scale_by_adam()), scale_by_lr(0.05))
    trajectory = run_ours(tx, init, loss, runs=1)
    first = loss({k: v.unsqueeze(0) for k, v in init.items()})
    assert loss(trajectory[-1]).item() < 0.9 * first.item()
    assert tx.hparams["lr"] == 0.05 and "direction.beta2" in tx.hparams


# --------------------------------------------------------------------------- LARS and projection

def test_lars_step_norm_is_trust_ratio_formula():
    """Without momentum each tensor moves by lr * eta * ||w|| along (g + lambda w)."""
    params, g = random_tree(), random_tree(seed=1)
    lr, eta, wd = 2.0, torch.tensor([1e-3, 1e-2, 0.1, 1.0]), 0.05
    tx = optim.lars(lr, momentum=0.0, weight_decay=wd, trust_coefficient=eta, trust_ratio_mask={"w": True})
    new, _ = functional_step(tx, tx.init(params), params, g)
    step = new["w"] - params["w"]
    torch.testing.assert_close(run_norm(step), lr * optim.per_run(eta, step) * run_norm(params["w"]), **TOL)
    d = g["w"] + wd * params["w"]
    torch.testing.assert_close(step, -lr * optim.per_run(eta, d) * run_norm(params["w"]) / run_norm(d) * d, **TOL)
    # the bias is outside the trust-ratio mask: plain SGD with weight decay there
    torch.testing.assert_close(new["b"], params["b"] - lr * (g["b"] + wd * params["b"]), **TOL)


def test_trust_ratio_leaves_zero_weights_alone():
    params, g = {"w": torch.zeros(2, 3, dtype=torch.float64)}, {"w": torch.ones(2, 3, dtype=torch.float64)}
    out, _ = scale_by_trust_ratio(0.1).update(g, scale_by_trust_ratio(0.1).init(params), params)
    assert torch.equal(out["w"], g["w"])


def test_project_to_unit_norm_keeps_scale_invariant_weights_on_the_sphere():
    model = ScaleInvariantLinear(dim=6, runs=3, seed=[1, 2, 3], init_norm=2.5, dtype=torch.float64)
    g_ = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 6, generator=g_, dtype=torch.float64), torch.randn(32, 1, generator=g_, dtype=torch.float64)
    alpha = torch.tensor([0.05, 0.2, 1.0], dtype=torch.float64)
    tx = chain(scale_by_lr(alpha), project_to_unit_norm(mask=model.scale_invariant))
    params = {"w": model.w.detach().clone()}
    state = tx.init(params)
    for _ in range(10):
        leaf = params["w"].requires_grad_()
        out = torch.func.functional_call(model, {"w": leaf}, (x,))
        (g,) = torch.autograd.grad(((out - y) ** 2).mean(dim=(1, 2)).sum(), [leaf])
        before = params["w"].detach()
        params, state = functional_step(tx, state, {"w": before}, {"w": g})
        stepped = before - alpha[:, None] * g
        torch.testing.assert_close(params["w"], stepped / stepped.norm(dim=1, keepdim=True), **TOL)
        norm = params["w"].norm(dim=1)
        torch.testing.assert_close(norm, torch.ones(3, dtype=torch.float64), **TOL)
        torch.testing.assert_close(alpha / norm ** 2, alpha, **TOL)  # effective lr alpha/||w||^2 == alpha


def test_project_to_unit_norm_respects_mask():
    params, g = random_tree(), random_tree(seed=1)
    out, _ = project_to_unit_norm(mask=lambda name: name == "w").update(g, optim.EmptyState(), params)
    new = apply_updates(params, out)
    torch.testing.assert_close(run_norm(new["w"]).flatten(), torch.ones(RUNS, dtype=torch.float64), **TOL)
    assert torch.equal(out["b"], g["b"])


# --------------------------------------------------------------------------- masks

def test_weight_decay_mask_decays_only_where_true():
    params = random_tree()
    zero = {k: torch.zeros_like(v) for k, v in params.items()}
    for mask in ({"w": True}, lambda name: name == "w"):
        tx = optim.sgd(0.1, weight_decay=0.5, weight_decay_mask=mask)
        new, _ = functional_step(tx, tx.init(params), params, zero)
        torch.testing.assert_close(new["w"], (1 - 0.05) * params["w"], **TOL)
        assert torch.equal(new["b"], params["b"])


def test_mask_naming_an_unknown_parameter_is_an_error():
    with pytest.raises(ValueError, match="unknown parameters"):
        optim.adamw(1e-3, weight_decay_mask={"typo": True}).init(random_tree())


def test_masked_applies_transform_only_where_true():
    params, g = random_tree(), random_tree(seed=1)
    tx = masked(scale_by_adam(), {"w": True})
    state = tx.init(params)
    assert set(state.inner.m) == {"w"}
    out, _ = tx.update(g, state, params)
    ref, _ = scale_by_adam().update({"w": g["w"]}, scale_by_adam().init({"w": params["w"]}))
    torch.testing.assert_close(out["w"], ref["w"], **TOL)
    assert out["b"] is g["b"]


# --------------------------------------------------------------------------- the torch.optim adapter

ADAPTER_CASES = {
    "sgd-momentum-l2": (lambda: chain(add_decayed_weights(1e-2), trace(0.9)),
                        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2), 0.1),
    "adam-l2": (lambda: chain(add_decayed_weights(0.1), scale_by_adam()),
                lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0.1), 1e-2),
    "adamw": (lambda: chain(scale_by_adam(), add_decayed_weights(0.1)),
              lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1), 1e-2),
}


@pytest.mark.parametrize("name", ADAPTER_CASES)
def test_adapter_matches_torch_optim(name):
    make_transform, make_torch, lr = ADAPTER_CASES[name]
    init, loss = tiny_mlp_problem()
    ours = run_torch(lambda p: TransformOptimizer(p.items(), make_transform(), lr=lr), init, loss)
    theirs = run_torch(lambda p: make_torch(p.values()), init, loss)
    for a, b in zip(ours, theirs):
        for k in a:
            torch.testing.assert_close(a[k], b[k], **TOL)


FROZEN_CASES = {
    "sgd-momentum-l2": (lambda: chain(add_decayed_weights(1e-2), trace(0.9)),
                        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2), 0.1),
    "adam-l2": (lambda: chain(add_decayed_weights(0.1), scale_by_adam()),
                lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0.1), 1e-2),
}


@pytest.mark.parametrize("name", FROZEN_CASES)
def test_adapter_leaves_a_parameter_without_gradient_untouched_like_torch_optim(name):
    """A parameter whose .grad is None (frozen after some steps) is neither decayed nor moved by momentum."""
    make_transform, make_torch, lr = FROZEN_CASES[name]
    init, loss = tiny_mlp_problem()
    trajectories = []
    for make in (lambda p: TransformOptimizer(p.items(), make_transform(), lr=lr), lambda p: make_torch(p.values())):
        leaves = {k: v.clone().requires_grad_() for k, v in init.items()}
        opt = make(leaves)
        trajectory = []
        for step in range(STEPS):
            if step == 5:                      # momentum / Adam moments of b1 are non-zero by now
                leaves["b1"].requires_grad_(False)
                leaves["b1"].grad = None
            opt.zero_grad()
            loss({k: v.unsqueeze(0) for k, v in leaves.items()}).sum().backward()
            opt.step()
            trajectory.append({k: v.detach().clone() for k, v in leaves.items()})
        trajectories.append(trajectory)
    ours, theirs = trajectories
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for k in a:
            torch.testing.assert_close(a[k], b[k], **TOL, msg=lambda m: f"step {step}, {k}: {m}")
    assert all(torch.equal(ours[step]["b1"], ours[4]["b1"]) for step in range(5, STEPS))


def test_adapter_follows_step_lr_scheduler():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    c = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    opt = TransformOptimizer([w], identity(), lr=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.1)
    for k in range(9):
        before = w.detach().clone()
        opt.zero_grad()
        (w * c).sum().backward()
        opt.step()
        sched.step()
        torch.testing.assert_close(w.detach() - before, -0.5 * 0.1 ** (k // 3) * c, **TOL)


def test_adapter_group_function_gives_per_group_weight_decay():
    init, loss = tiny_mlp_problem()

    def make(p):
        groups = [{"params": [p["w1"], p["w2"]], "weight_decay": 0.1}, {"params": [p["b1"]], "weight_decay": 0.0}]
        return groups

    ours = run_torch(lambda p: TransformOptimizer(
        make(p), lambda group: chain(add_decayed_weights(group["weight_decay"]), trace(0.9)), lr=0.05), init, loss)
    theirs = run_torch(lambda p: torch.optim.SGD(make(p), lr=0.05, momentum=0.9), init, loss)
    for a, b in zip(ours, theirs):
        for k in a:
            torch.testing.assert_close(a[k], b[k], **TOL)


def test_adapter_masks_by_name_and_handles_run_dim():
    params = {k: torch.nn.Parameter(v) for k, v in random_tree().items()}
    before = {k: v.detach().clone() for k, v in params.items()}
    lr = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    opt = TransformOptimizer(params.items(), add_decayed_weights(1.0, mask={"w": True}), lr=lr, has_run_dim=True)
    for p in params.values():
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(params["w"].detach(), (1 - lr[:, None, None]) * before["w"], **TOL)
    assert torch.equal(params["b"].detach(), before["b"])


def test_adapter_rejects_a_transform_that_already_has_a_learning_rate():
    with pytest.raises(ValueError, match="scale_by_lr"):
        TransformOptimizer([torch.zeros(2, requires_grad=True)], optim.sgd(0.1), lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        TransformOptimizer([torch.zeros(2, requires_grad=True)], identity(), lr=-0.1)


# --------------------------------------------------------------------------- argument checks

BAD = {
    "lr": st.one_of(st.floats(max_value=-1e-12), st.sampled_from([math.nan, math.inf, -math.inf])),
    "momentum": st.one_of(st.floats(max_value=-1e-12), st.floats(min_value=1.0), st.just(math.nan)),
    "beta2": st.one_of(st.floats(max_value=-1e-12), st.floats(min_value=1.0), st.just(math.nan)),
    "eps": st.one_of(st.floats(max_value=0.0), st.sampled_from([math.nan, math.inf])),
    "weight_decay": st.one_of(st.floats(max_value=-1e-12), st.sampled_from([math.nan, math.inf])),
    "trust_coefficient": st.one_of(st.floats(max_value=0.0), st.sampled_from([math.nan, math.inf])),
}
GOOD = {
    "lr": st.floats(0.0, 10.0), "momentum": st.floats(0.0, 0.999), "beta2": st.floats(0.0, 0.999),
    "eps": st.floats(1e-12, 1.0), "weight_decay": st.floats(0.0, 1.0), "trust_coefficient": st.floats(1e-6, 1.0),
}
BAD["betas"] = st.one_of(st.tuples(BAD["beta2"], GOOD["beta2"]), st.tuples(GOOD["beta2"], BAD["beta2"]))
GOOD["betas"] = st.tuples(GOOD["beta2"], GOOD["beta2"])
ARGS = [(alias, arg) for alias, fn in optim.OPTIMIZERS.items() for arg in inspect.signature(fn).parameters
        if arg in BAD]


@settings(max_examples=200, deadline=None)
@given(which=st.sampled_from(ARGS), data=st.data())
def test_bad_hyperparameter_is_a_value_error_naming_it(which, data):
    alias, arg = which
    kwargs = {"lr": 0.1, arg: data.draw(BAD[arg])}
    with pytest.raises(ValueError, match="beta1|beta2" if arg == "betas" else arg):
        optim.get(alias, **kwargs)


@settings(max_examples=100, deadline=None)
@given(alias=st.sampled_from(sorted(optim.OPTIMIZERS)), data=st.data())
def test_good_hyperparameters_give_finite_steps(alias, data):
    args = [a for a in inspect.signature(optim.OPTIMIZERS[alias]).parameters if a in GOOD]
    tx = optim.get(alias, **{a: data.draw(GOOD[a], label=a) for a in args})
    params, g = random_tree(), random_tree(seed=1)
    new, _ = functional_step(tx, tx.init(params), params, g)
    assert all(torch.isfinite(v).all() for v in new.values())


@pytest.mark.parametrize("make, name", [
    (lambda v: scale_by_lr(v), "lr"),
    (lambda v: trace(v), "momentum"),
    (lambda v: scale_by_rms(beta2=v), "beta2"),
    (lambda v: scale_by_adam(beta1=v), "beta1"),
    (lambda v: add_decayed_weights(v), "weight_decay"),
    (lambda v: scale_by_trust_ratio(v), "trust_coefficient"),
])
def test_per_run_values_are_checked_one_by_one_and_against_the_run_count(make, name):
    with pytest.raises(ValueError, match=name):
        make(torch.tensor([0.5, -0.5, 0.1, 0.1]))
    with pytest.raises(ValueError, match=f"{name} has 3 values .* 4 runs"):
        make(torch.tensor([0.5, 0.1, 0.2])).init(random_tree())


def test_other_argument_errors():
    with pytest.raises(ValueError, match="eps"):
        scale_by_adam(eps=0.0)
    with pytest.raises(ValueError, match="betas must be a pair"):
        optim.adam(1e-3, betas=0.9)
    with pytest.raises(TypeError, match="nesterov"):
        trace(0.9, nesterov="yes")
    with pytest.raises(TypeError, match="magnitude"):
        graft("sgd", scale_by_adam())
    with pytest.raises(ValueError, match="params"):
        add_decayed_weights(0.1).update(random_tree(), optim.EmptyState())


def test_get_lists_known_names_and_arguments():
    with pytest.raises(ValueError, match="adamw.*sgd"):
        optim.get("adagrad", lr=0.1)
    with pytest.raises(ValueError, match="does not take alpha"):
        optim.get("rmsprop", lr=0.1, alpha=0.9)
    with pytest.raises(ValueError, match="needs lr"):
        optim.get("sgd")
    assert optim.get("adamw", lr=1e-3, weight_decay=0.1).hparams["weight_decay"] == 0.1


def test_optim_imports_no_widgets_or_plotting():
    code = "import sys, lecture_lib.optim; print(any(m.split('.')[0] in ('plotly', 'ipywidgets') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
