"""K-FAC: the eigenbasis solve, the statistics, the hooks, the transform, the engine, the torch.optim adapter."""
from __future__ import annotations

import pytest
import torch

from lecture_lib import losses, optim
from lecture_lib.data import Dataset, teacher
from lecture_lib.engine import train
from lecture_lib.kfac_statistics import estimate_factors, ggn_factor_traces, layer_taps, output_hessian_sqrt
from lecture_lib.models import MLP, DeepLinear
from lecture_lib.optim import (TransformOptimizer, add_decayed_weights, chain, kfac, kfac_precondition,
                               kron_damped_solve)


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def random_spd(n, g, jitter=0.1):
    M = torch.randn(n, n, generator=g)
    return M @ M.T / n + jitter * torch.eye(n)


def vec(X):  # column-stacking vec, the convention of (A ⊗ S) vec(X) = vec(S X A)
    return X.transpose(-1, -2).reshape(*X.shape[:-2], -1)


# ------------------------------------------------------------------ the damped solve
@pytest.mark.parametrize("damping", [0.0, 1e-3, 0.5])
def test_eigenbasis_solve_equals_dense_solve(damping):
    g = torch.Generator().manual_seed(0)
    A, S = random_spd(5, g), random_spd(3, g)
    G = torch.randn(3, 5, generator=g)
    dA, QA = torch.linalg.eigh(A)
    dS, QS = torch.linalg.eigh(S)
    X = kron_damped_solve(QA, dA, QS, dS, G, damping)
    dense = torch.kron(A, S) + damping * torch.eye(15)
    expected = torch.linalg.solve(dense, vec(G))
    assert torch.allclose(vec(X), expected, rtol=0, atol=1e-10 * expected.abs().max())
    # and it really solves the system
    assert torch.allclose(dense @ vec(X), vec(G), atol=1e-10)


def test_eigenbasis_solve_batched_over_runs_with_per_run_damping():
    g = torch.Generator().manual_seed(1)
    A = torch.stack([random_spd(4, g) for _ in range(3)])
    S = torch.stack([random_spd(2, g) for _ in range(3)])
    G = torch.randn(3, 2, 4, generator=g)
    damping = torch.tensor([0.0, 0.1, 2.0])
    dA, QA = torch.linalg.eigh(A)
    dS, QS = torch.linalg.eigh(S)
    X = kron_damped_solve(QA, dA, QS, dS, G, damping)
    for r in range(3):
        dense = torch.kron(A[r], S[r]) + damping[r] * torch.eye(8)
        assert torch.allclose(vec(X[r]), torch.linalg.solve(dense, vec(G[r])), atol=1e-10)


# ------------------------------------------------------------------ hooks
def _hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_removed_after_context_and_on_exception():
    model = MLP([3, 4, 2], runs=2, dtype=torch.float64)
    x = torch.randn(5, 3)
    with layer_taps(model) as taps:
        assert _hook_count(model) == 2
        out = model(x)
    assert _hook_count(model) == 0
    assert set(taps) == {"linears.0", "linears.1"}
    assert taps["linears.0"].a.shape == (2, 5, 3) and taps["linears.1"].s.shape == (2, 5, 2)
    assert torch.equal(taps["linears.1"].s, out)
    with pytest.raises(RuntimeError, match="boom"):
        with layer_taps(model):
            raise RuntimeError("boom")
    assert _hook_count(model) == 0
    with pytest.raises(ValueError):  # an error inside the forward pass also leaves no hooks
        with layer_taps(model):
            model(torch.randn(5, 7))
    assert _hook_count(model) == 0


def test_statistics_step_leaves_model_untouched():
    model = MLP([3, 4, 2], norm="batch", runs=2, dtype=torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t = kfac_precondition(model, "mse", curvature="fisher")
    params = dict(model.named_parameters())
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    _, state = t.update(grads, t.init(params), params, batch=(torch.randn(6, 3), torch.randn(6, 2)))
    assert state.A and _hook_count(model) == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------ statistics
def test_factors_of_output_layer_with_mse():
    """Output layer, mse: 'ggn' gives S = I exactly, 'empirical' gives E[(f-y)(f-y)^T]."""
    model = MLP([3, 4, 2], activation="tanh", runs=1, dtype=torch.float64)
    x, y = torch.randn(7, 3), torch.randn(7, 2)
    A, S = estimate_factors(model, None, x, y, "mse", "ggn")["linears.1"]
    assert torch.allclose(S[0], torch.eye(2), atol=1e-14)
    with torch.no_grad():
        h = torch.tanh(model.linears[0](x))[0]
    abar = torch.cat([h, torch.ones(7, 1)], 1)
    assert torch.allclose(A[0], abar.T @ abar / 7, atol=1e-14)
    _, S_emp = estimate_factors(model, None, x, y, "mse", "empirical")["linears.1"]
    r = (model(x)[0] - y).detach()
    assert torch.allclose(S_emp[0], r.T @ r / 7, atol=1e-13)


def test_sampled_fisher_factor_converges_to_ggn_for_mse():
    model = MLP([3, 4, 2], activation="tanh", runs=1, dtype=torch.float64)
    x = torch.randn(20, 3)
    _, S_ggn = estimate_factors(model, None, x, None, "mse", "ggn")["linears.0"]
    g = torch.Generator().manual_seed(0)
    S_mc = sum(estimate_factors(model, None, x, None, "mse", "fisher", g)["linears.0"][1] for _ in range(400)) / 400
    assert torch.allclose(S_mc, S_ggn, rtol=0, atol=0.15 * S_ggn.abs().max())
    assert not torch.allclose(S_mc, S_ggn, atol=1e-6)  # it is sampled, not computed


@pytest.mark.parametrize("layer", ["linears.0", "linears.1", "linears.2"])
def test_ggn_factor_traces_are_the_traces_of_the_factors(layer):
    # batch norm couples the examples, random parameters (not the model's own) and two losses in one pass
    model = MLP([5, 6, 4, 3], norm="batch", runs=2, seed=[1, 2], dtype=torch.float64)
    params = {n: p + 0.3 * torch.randn_like(p) for n, p in model.named_parameters()}
    x = torch.randn(9, 5)
    got = ggn_factor_traces(model, params, x, layer, ("cross_entropy", "mse"))
    assert got.shape == (2, 2)
    for i, loss in enumerate(("cross_entropy", "mse")):
        A, S = estimate_factors(model, params, x, None, loss, "ggn")[layer]
        want = A.diagonal(dim1=-2, dim2=-1).sum(-1) * S.diagonal(dim1=-2, dim2=-1).sum(-1)
        torch.testing.assert_close(got[:, i], want, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="layer must be one of"):
        ggn_factor_traces(model, None, x, "linears.9")


def test_output_hessian_sqrt_factors_softmax_hessian():
    f = torch.randn(2, 3, 4)
    L = output_hessian_sqrt("cross_entropy", f)
    p = torch.softmax(f, -1)
    assert torch.allclose(L @ L.transpose(-1, -2), torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2),
                          atol=1e-15)


# ------------------------------------------------------------------ the optimizer
def _step(opt, model, state, x, y, loss="mse"):
    params = {n: p.detach() for n, p in model.named_parameters()}
    grads = dict(zip(params, torch.autograd.grad(losses.get(loss)(model(x), y).sum(), list(model.parameters()))))
    updates, state = opt.update(grads, state, params, batch=(x, y))
    with torch.no_grad():
        for n, p in params.items():
            p.add_(updates[n])
    return updates, state


def _affine_pair(seed=0):
    """Two networks computing the same function: the second sees inputs x M^T + c and has W1 M^-1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 3, generator=g)
    y = torch.sin(x @ torch.randn(3, 2, generator=g))
    M = torch.tensor([[2.0, 0.5, 0.0], [0.0, 0.4, 0.3], [1.0, 0.0, 3.0]])
    c = torch.tensor([2.0, -1.0, 5.0])
    net = MLP([3, 5, 2], activation="tanh", runs=1, dtype=torch.float64)
    twin = MLP([3, 5, 2], activation="tanh", runs=1, dtype=torch.float64)
    twin.load_state_dict(net.state_dict())
    with torch.no_grad():
        Minv = torch.linalg.inv(M)
        W, b = net.linears[0].weight[0], net.linears[0].bias[0]
        twin.linears[0].weight[0] = W @ Minv
        twin.linears[0].bias[0] = b - W @ Minv @ c
    x_twin = x @ M.T + c
    assert torch.allclose(net(x), twin(x_twin), atol=1e-12)
    return net, twin, x, x_twin, y


@pytest.mark.parametrize("curvature", ["ggn", "fisher"])
def test_undamped_kfac_is_invariant_to_affine_input_transformations(curvature):
    gaps = {}
    for damping in (0.0, 0.1):
        net, twin, x, x_twin, y = _affine_pair()
        with torch.no_grad():
            loss0 = losses.mse(net(x), y).item()
        kw = dict(curvature=curvature, damping=damping, stat_interval=1, inv_interval=2, stat_decay=0.5, seed=3)
        opt_a, opt_b = kfac(net, "mse", lr=0.02, **kw), kfac(twin, "mse", lr=0.02, **kw)
        sa = opt_a.init(dict(net.named_parameters()))
        sb = opt_b.init(dict(twin.named_parameters()))
        gap = 0.0
        for _ in range(8):
            _, sa = _step(opt_a, net, sa, x, y)
            _, sb = _step(opt_b, twin, sb, x_twin, y)
            with torch.no_grad():
                gap = max(gap, (net(x) - twin(x_twin)).abs().max().item())
        gaps[damping] = gap
        with torch.no_grad():  # and it did optimize
            assert losses.mse(net(x), y).item() < 0.9 * loss0
    assert gaps[0.0] < 1e-8          # same function at every step
    assert gaps[0.1] > 1e-3          # damping is not invariant


def test_l2_and_decoupled_weight_decay_differ_and_coincide_without_decay():
    x, y = torch.randn(16, 3), torch.randn(16, 2)

    def first_update(weight_decay, decoupled):
        model = MLP([3, 4, 2], runs=1, dtype=torch.float64)
        opt = kfac(model, "mse", lr=0.1, weight_decay=weight_decay, decoupled=decoupled, curvature="ggn")
        updates, _ = _step(opt, model, opt.init(dict(model.named_parameters())), x, y)
        return torch.cat([u.reshape(-1) for u in updates.values()])

    assert torch.allclose(first_update(0.0, True), first_update(0.0, False), atol=1e-15)
    wd, l2 = first_update(0.1, True), first_update(0.1, False)
    assert (wd - l2).abs().max() > 1e-3
    # decoupled: exactly the undecayed K-FAC step minus lr * wd * w
    model = MLP([3, 4, 2], runs=1, dtype=torch.float64)
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.allclose(wd, first_update(0.0, True) - 0.1 * 0.1 * w, atol=1e-14)


def test_per_run_damping_equals_separate_runs():
    x, y = torch.randn(12, 3), torch.randn(12, 2)
    damping = torch.tensor([0.01, 1.0])
    # the deterministic curvature, so that runs share no random stream
    batched = MLP([3, 4, 2], runs=2, seed=[0, 1], dtype=torch.float64)
    opt = kfac(batched, "mse", lr=0.2, damping=damping, curvature="ggn", stat_interval=1)
    state = opt.init(dict(batched.named_parameters()))
    for _ in range(3):
        _, state = _step(opt, batched, state, x, y)
    for r in range(2):
        single = MLP([3, 4, 2], runs=1, seed=[r], dtype=torch.float64)
        o = kfac(single, "mse", lr=0.2, damping=damping[r].item(), curvature="ggn", stat_interval=1)
        s = o.init(dict(single.named_parameters()))
        for _ in range(3):
            _, s = _step(o, single, s, x, y)
        for (n, p), q in zip(batched.named_parameters(), single.parameters()):
            assert torch.allclose(p[r], q[0], atol=1e-12), n


def test_per_run_seeds_sample_the_fisher_as_separate_runs_do():
    """K-FAC-F with one seed per run: run r's sampled targets, hence its factors and its steps, are those of a
    one-run model seeded seed[r]; runs that share a seed and their weights share their samples (common random
    numbers), while one shared seed gives the runs different samples."""
    x = torch.randn(16, 3)
    seeds = [5, 7, 5]
    batched = MLP([3, 4, 3], runs=3, seed=[0, 1, 0], dtype=torch.float64)
    opt = kfac(batched, "cross_entropy", lr=0.2, damping=0.1, stat_interval=1, seed=seeds)
    state = opt.init(dict(batched.named_parameters()))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        _, state = _step(opt, batched, state, x, y, loss="cross_entropy")
    for r, (init, seed) in enumerate(zip([0, 1, 0], seeds)):
        single = MLP([3, 4, 3], runs=1, seed=[init], dtype=torch.float64)
        o = kfac(single, "cross_entropy", lr=0.2, damping=0.1, stat_interval=1, seed=seed)
        s = o.init(dict(single.named_parameters()))
        for _ in range(3):
            _, s = _step(o, single, s, x, y, loss="cross_entropy")
        for (n, p), q in zip(batched.named_parameters(), single.parameters()):
            assert torch.allclose(p[r], q[0], atol=1e-12), n
    for p in batched.parameters():
        assert torch.equal(p[0], p[2])                    # same start, same seed: the same samples, step for step
    shared = estimate_factors(batched, None, x, None, "cross_entropy", "fisher", torch.Generator().manual_seed(5))
    paired = estimate_factors(batched, None, x, None, "cross_entropy", "fisher",
                              [torch.Generator().manual_seed(s) for s in seeds])
    _, S_shared = shared["linears.1"]
    _, S_paired = paired["linears.1"]
    assert torch.equal(S_paired[0], S_paired[2]) and not torch.equal(S_shared[0], S_shared[2])
    with pytest.raises(ValueError, match="generator holds 2 generators"):
        estimate_factors(batched, None, x, None, "cross_entropy", "fisher", [torch.Generator()] * 2)
    with pytest.raises(ValueError, match="seed"):
        kfac(batched, "cross_entropy", lr=0.2, seed=[1, 2])


def test_statistics_and_inverses_are_amortized():
    model = MLP([3, 4, 2], runs=1, dtype=torch.float64)
    opt = kfac_precondition(model, "mse", curvature="ggn", stat_interval=2, inv_interval=4)
    state = opt.init(dict(model.named_parameters()))
    x = torch.randn(8, 3)
    params = dict(model.named_parameters())
    grads = {n: torch.ones_like(p) for n, p in params.items()}
    seen_A, seen_eig = [], []
    for k in range(6):
        _, state = opt.update(grads, state, params, batch=(x * (k + 1), None))
        seen_A.append(state.A["linears.0"].clone())
        seen_eig.append(state.eig["linears.0"][1].clone())
    changed = [not torch.equal(seen_A[k], seen_A[k - 1]) for k in range(1, 6)]
    assert changed == [False, True, False, True, False]        # re-estimated on steps 0, 2, 4
    eig_changed = [not torch.equal(seen_eig[k], seen_eig[k - 1]) for k in range(1, 6)]
    assert eig_changed == [False, False, False, True, False]   # decomposed on steps 0, 4


def test_update_without_statistics_and_bad_arguments_raise():
    model = MLP([3, 4, 2], dtype=torch.float64)
    opt = kfac_precondition(model, "mse")
    params = dict(model.named_parameters())
    with pytest.raises(ValueError, match="batch"):
        opt.update({n: torch.zeros_like(p) for n, p in params.items()}, opt.init(params), params)
    with pytest.raises(ValueError, match="curvature"):
        kfac_precondition(model, "mse", curvature="hessian")
    with pytest.raises(ValueError, match="damping"):
        kfac_precondition(model, "mse", damping=-1.0)
    with pytest.raises(ValueError, match="loss"):
        kfac_precondition(model, "hinge")
    with pytest.raises(ValueError, match="targets"):
        estimate_factors(model, None, torch.randn(4, 3), None, "mse", "empirical")


def test_batchnorm_parameters_use_the_fallback():
    model = MLP([3, 4, 2], norm="batch", runs=1, dtype=torch.float64)
    x, y = torch.randn(10, 3), torch.randn(10, 2)
    for fallback in ("identity", "diagonal"):
        opt = kfac_precondition(model, "mse", curvature="ggn", fallback=fallback, damping=0.5)
        params = dict(model.named_parameters())
        grads = {n: torch.randn_like(p) for n, p in params.items()}
        updates, _ = opt.update(grads, opt.init(params), params, batch=(x, y))
        g = grads["norms.0.gain"]
        expected = g if fallback == "identity" else g / (g * g + 0.5)
        assert torch.allclose(updates["norms.0.gain"], expected, atol=1e-15)
        assert not torch.allclose(updates["linears.0.weight"], grads["linears.0.weight"])


# ------------------------------------------------------------------ with the engine
def test_kfac_trains_with_the_engine_batched_and_with_batchnorm():
    data = teacher(n=256, sizes=(5, 16, 1), seed=0)
    for norm in ("none", "batch"):
        model = MLP([5, 16, 1], norm=norm, activation="tanh", runs=2, seed=[0, 1], dtype=torch.float32)
        opt = kfac(model, "mse", lr=0.3, damping=torch.tensor([0.1, 1.0]), weight_decay=1e-4,
                   curvature="fisher", stat_interval=2, inv_interval=10)
        rec = train(model, data, "mse", opt, steps=60, batch_size=32, seed=0, record_every=10)
        assert (rec.diverged_at == -1).all()
        assert (rec.loss[-1] < 0.5 * rec.loss[0]).all(), (norm, rec.loss[[0, -1]])
        assert _hook_count(model) == 0


def test_kfac_beats_sgd_on_an_ill_conditioned_linear_network():
    """Second-order: uncentered, badly scaled inputs slow gradient descent but not K-FAC."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g) * torch.tensor([10.0, 1.0, 0.1, 1.0]) + 3.0
    y = x @ torch.randn(4, 1, generator=g)
    data = Dataset(x, y, x, y, task="regression", name="illcond")
    from lecture_lib.optim.alias import sgd
    out = {}
    for name in ("sgd", "kfac"):
        model = DeepLinear([4, 1], runs=1, dtype=torch.float64)
        opt = sgd(lr=1e-3) if name == "sgd" else kfac(model, "mse", lr=0.5, damping=1e-6, curvature="ggn")
        out[name] = train(model, data, "mse", opt, steps=40).loss[-1, 0]
    assert out["kfac"] < 1e-6 * out["sgd"]


# ------------------------------------------------------------------ no hidden channels
def test_the_batch_is_an_argument_of_the_update_and_nothing_else():
    """Two K-FAC transforms of two models in one state tree: each reads only its own batch argument."""
    import ast
    import inspect

    import lecture_lib.curvature as curvature_mod
    import lecture_lib.engine as engine_mod
    import lecture_lib.optim.kfac_transform as kt

    assert not hasattr(kt, "observe") and not hasattr(kt, "BatchObserver") and not hasattr(kt, "_keys")

    def imports(module):
        nodes = [n for n in ast.walk(ast.parse(inspect.getsource(module))) if isinstance(n, ast.ImportFrom)]
        return {(n.module or "", a.name) for n in nodes for a in n.names}

    assert not [i for i in imports(engine_mod) if "kfac" in i[0] or "kfac" in i[1]]    # the engine knows no K-FAC
    assert not [i for i in imports(curvature_mod) if "optim" in i[0] or i[1].startswith("_")]
    model = MLP([3, 4, 2], runs=1, dtype=torch.float64)
    t = kfac_precondition(model, "mse", curvature="ggn")
    assert set(t.hparams) == {"damping", "curvature"}       # no observer hidden in the hyperparameters
    params = dict(model.named_parameters())
    grads = {n: torch.ones_like(p) for n, p in params.items()}
    x1, x2 = torch.randn(8, 3), 3.0 * torch.randn(8, 3)
    _, s1 = t.update(grads, t.init(params), params, batch=(x1, None))
    _, s2 = t.update(grads, t.init(params), params, batch=(x2, None))
    A1, _ = estimate_factors(model, params, x1, None, "mse", "ggn")["linears.0"]
    assert torch.equal(s1.A["linears.0"], A1) and not torch.equal(s1.A["linears.0"], s2.A["linears.0"])
    # chained, masked and grafted, the batch still reaches it
    wrapped = chain(add_decayed_weights(0.0), optim.masked(kfac_precondition(model, "mse", curvature="ggn"),
                                                           lambda name: True))
    _, state = wrapped.update(grads, wrapped.init(params), params, batch=(x1, None))
    assert torch.equal(optim.find_state(state, optim.KFACState).A["linears.0"], A1)


def test_get_builds_kfac_by_name():
    model = MLP([3, 4, 2], runs=1, dtype=torch.float64)
    t = optim.get("kfac", model=model, loss="mse", lr=0.1, curvature="ggn", weight_decay=0.01)
    assert t.hparams["curvature"] == "ggn" and t.hparams["lr"] == 0.1
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    ours, _ = _step(t, model, t.init(dict(model.named_parameters())), x, y)
    twin = MLP([3, 4, 2], runs=1, dtype=torch.float64)
    ref = kfac(twin, "mse", lr=0.1, curvature="ggn", weight_decay=0.01)
    theirs, _ = _step(ref, twin, ref.init(dict(twin.named_parameters())), x, y)
    for n in ours:
        assert torch.equal(ours[n], theirs[n]), n
    with pytest.raises(ValueError, match="kfac needs model, loss"):
        optim.get("kfac", lr=0.1)
    with pytest.raises(ValueError, match="curvature"):
        optim.get("kfac", model=model, loss="mse", lr=0.1, curvature="hessian")


# ------------------------------------------------------------------ the torch.optim adapter
@pytest.mark.parametrize("norm", ["none", "batch"])
def test_transform_optimizer_with_the_batch_equals_engine_train(norm):
    """TransformOptimizer.step(batch=(x, y)) on a torch-style loop takes exactly the engine's K-FAC steps."""
    data = teacher(n=64, sizes=(3, 8, 2), seed=0, dtype=torch.float64)
    kw = dict(curvature="fisher", damping=torch.tensor([0.1, 1.0]), stat_interval=2, inv_interval=3, seed=5)
    engine_model = MLP([3, 8, 2], norm=norm, runs=2, seed=[0, 1], dtype=torch.float64)
    loop_model = MLP([3, 8, 2], norm=norm, runs=2, seed=[0, 1], dtype=torch.float64)
    steps = 7
    train(engine_model, data, "mse", kfac(engine_model, "mse", lr=0.2, weight_decay=0.01, **kw), steps=steps)
    opt = TransformOptimizer(loop_model.named_parameters(),
                             chain(kfac_precondition(loop_model, "mse", **kw), add_decayed_weights(0.01)),
                             lr=0.2, has_run_dim=True)
    x, y = data.x_train, data.y_train
    for _ in range(steps):
        opt.zero_grad()
        losses.mse(loop_model(x), y).sum().backward()
        opt.step(batch=(x, y))
    for (n, p), q in zip(engine_model.named_parameters(), loop_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12, msg=n)


def test_transform_optimizer_without_the_batch_says_so():
    model = MLP([3, 4, 2], runs=1, dtype=torch.float64)
    opt = TransformOptimizer(model.named_parameters(), kfac_precondition(model, "mse"), lr=0.1, has_run_dim=True)
    losses.mse(model(torch.randn(4, 3)), torch.randn(4, 2)).sum().backward()
    with pytest.raises(ValueError, match="batch"):
        opt.step()
