"""Batched models: shapes, per-run seeding, and the scale invariance that BN gives (float64 identities)."""
import pytest
import torch
import torch.nn.functional as F

from lecture_lib import losses
from lecture_lib.models import MLP, BatchedLinear, BatchNorm, DeepLinear, ScaleInvariantLinear

f64 = torch.float64


def _cost_and_grads(model, x, y, loss):
    """Per-run losses (R,) and gradients {name: tensor} of their sum."""
    out = model(x)
    J = loss(out, y)
    names = [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(J.sum(), [p for _, p in model.named_parameters()])
    return J.detach(), dict(zip(names, grads))


def _scale_param(model, name, gammas):
    """Multiply run r's slice of parameter ``name`` by gammas[r]."""
    p = dict(model.named_parameters())[name]
    with torch.no_grad():
        p.mul_(gammas.reshape(-1, *([1] * (p.dim() - 1))))


# ----------------------------------------------------------------------------- scale invariance
def _toy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g, dtype=f64)
    y = torch.randint(0, 2, (40,), generator=g)
    return x, y


@pytest.mark.parametrize("gamma", [0.1, 3.0, 250.0])
def test_scale_invariant_linear_cost_gradient_and_orthogonality(gamma):
    x, y = _toy()
    R = 3
    m = ScaleInvariantLinear(6, scale=2.0, runs=R, seed=[1, 2, 3], init_norm=1.7, dtype=f64)
    J0, g0 = _cost_and_grads(m, x, y, losses.logistic)
    gammas = torch.tensor([gamma, 1.0, 1.0 / gamma], dtype=f64)
    w0 = m.w.detach().clone()
    _scale_param(m, "w", gammas)
    J1, g1 = _cost_and_grads(m, x, y, losses.logistic)
    # J(γw) = J(w), ∇J(γw) = ∇J(w)/γ (Euler: homogeneous of degree 0), w ⊥ ∇J(w)
    torch.testing.assert_close(J1, J0, rtol=1e-13, atol=0)
    torch.testing.assert_close(g1["w"], g0["w"] / gammas[:, None], rtol=1e-11, atol=1e-15)
    dots = (w0 * g0["w"]).sum(1) / (w0.norm(dim=1) * g0["w"].norm(dim=1))
    assert dots.abs().max() < 1e-13


def test_bn_mlp_scale_invariance_per_tensor_per_run():
    """Each hidden weight feeding batch norm is scale invariant; the output layer is not."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 5, generator=g, dtype=f64)
    y = torch.randint(0, 4, (32,), generator=g)
    R = 2
    m = MLP([5, 7, 6, 4], norm="batch", activation="tanh", runs=R, seed=[3, 4], eps=1e-14, dtype=f64)
    J0, g0 = _cost_and_grads(m, x, y, losses.cross_entropy)
    flags = m.scale_invariant
    assert flags == {"linears.0.weight": True, "linears.1.weight": True, "linears.2.weight": False,
                     "linears.2.bias": False, "norms.0.gain": False, "norms.0.shift": False,
                     "norms.1.gain": False, "norms.1.shift": False}
    gammas = torch.tensor([4.0, 0.3], dtype=f64)
    for name in ("linears.0.weight", "linears.1.weight"):
        w = dict(m.named_parameters())[name].detach().clone()
        dot = (w * g0[name]).flatten(1).sum(1) / (w.flatten(1).norm(dim=1) * g0[name].flatten(1).norm(dim=1))
        assert dot.abs().max() < 1e-10, name
        _scale_param(m, name, gammas)
        J1, g1 = _cost_and_grads(m, x, y, losses.cross_entropy)
        torch.testing.assert_close(J1, J0, rtol=1e-11, atol=0)
        torch.testing.assert_close(g1[name], g0[name] / gammas[:, None, None], rtol=1e-9, atol=1e-13)
        _scale_param(m, name, 1.0 / gammas)
    # the output layer is not scale invariant: scaling it changes the cost
    _scale_param(m, "linears.2.weight", gammas)
    J2, _ = _cost_and_grads(m, x, y, losses.cross_entropy)
    assert (J2 - J0).abs().min() > 1e-3


def test_default_eps_breaks_invariance_only_slightly():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 5, generator=g, dtype=f64)
    y = torch.randint(0, 3, (64,), generator=g)
    m = MLP([5, 8, 3], norm="batch", runs=1, seed=0, dtype=f64)
    J0, _ = _cost_and_grads(m, x, y, losses.cross_entropy)
    _scale_param(m, "linears.0.weight", torch.tensor([10.0], dtype=f64))
    J1, _ = _cost_and_grads(m, x, y, losses.cross_entropy)
    assert 0 < (J1 - J0).abs().item() < 1e-3


# ----------------------------------------------------------------------------- per-run seeds
@pytest.mark.parametrize("norm", ["none", "batch", "center"])
def test_batched_mlp_equals_single_run_models(norm):
    seeds = [11, 12, 13]
    batched = MLP([6, 9, 9, 3], norm=norm, runs=3, seed=seeds, dtype=f64)
    x = torch.randn(17, 6, generator=torch.Generator().manual_seed(0), dtype=f64)
    out = batched(x)
    assert out.shape == (3, 17, 3)
    for r, s in enumerate(seeds):
        single = MLP([6, 9, 9, 3], norm=norm, runs=1, seed=s, dtype=f64)
        for (n, pb), (_, ps) in zip(batched.named_parameters(), single.named_parameters()):
            assert torch.equal(pb[r], ps[0]), n
        torch.testing.assert_close(out[r], single(x)[0], rtol=1e-14, atol=1e-14)


def test_int_seed_gives_every_run_the_same_start():
    m = MLP([4, 5, 2], runs=3, seed=7)
    for p in m.parameters():
        assert torch.equal(p[0], p[1]) and torch.equal(p[1], p[2])
    other = MLP([4, 5, 2], runs=1, seed=8)
    assert not torch.equal(m.linears[0].weight[0], other.linears[0].weight[0])


def test_inputs_shared_or_per_run():
    m = MLP([4, 5, 2], runs=2, seed=[0, 1], dtype=f64)
    x = torch.randn(3, 4, dtype=f64)
    torch.testing.assert_close(m(x), m(torch.stack([x, x])))
    with pytest.raises(ValueError, match="features"):
        m(torch.randn(3, 5, dtype=f64))
    with pytest.raises(ValueError, match="shape"):
        m(torch.randn(3, 3, 4, dtype=f64))


# ----------------------------------------------------------------------------- layers against torch
def test_batched_linear_matches_F_linear_per_run():
    lin = BatchedLinear(5, 3, runs=4, seed=[0, 1, 2, 3], dtype=f64)
    x = torch.randn(4, 6, 5, dtype=f64)
    out = lin(x)
    for r in range(4):
        torch.testing.assert_close(out[r], F.linear(x[r], lin.weight[r], lin.bias[r]))
    bound = 1 / 5 ** 0.5
    assert lin.weight.abs().max() <= bound


def test_batchnorm_matches_torch_batchnorm1d_per_run():
    R, B, C = 3, 10, 4
    bn = BatchNorm(C, "batch", runs=R, dtype=f64)
    with torch.no_grad():
        bn.gain.copy_(torch.rand(R, C, dtype=f64) + 0.5)
        bn.shift.copy_(torch.randn(R, C, dtype=f64))
    s = torch.randn(R, B, C, dtype=f64) * 3 + 1
    out = bn(s)
    for r in range(R):
        ref = F.batch_norm(s[r], None, None, bn.gain[r], bn.shift[r], training=True, eps=bn.eps)
        torch.testing.assert_close(out[r], ref, rtol=1e-12, atol=1e-12)
    # running mean moved by momentum 0.1 towards the batch mean; eval mode uses it
    torch.testing.assert_close(bn.running_mean, 0.1 * s.mean(1))
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * s.var(1, unbiased=False))
    bn.eval()
    out_eval = bn(s)
    expected = (s - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps) * bn.gain[:, None] \
        + bn.shift[:, None]
    torch.testing.assert_close(out_eval, expected)


def test_batch_centering_centers_and_does_not_scale():
    bn = BatchNorm(3, "center", runs=2, dtype=f64)
    assert bn.gain is None
    s = torch.randn(2, 8, 3, dtype=f64) * 5 + 2
    out = bn(s)
    torch.testing.assert_close(out.mean(1), torch.zeros(2, 3, dtype=f64), atol=1e-13, rtol=0)
    torch.testing.assert_close(out - out[:, :1], s - s[:, :1])


def test_batchnorm_supports_double_backward():
    """Curvature code differentiates gradients (Hessian-vector products) through the normalizer."""
    m = MLP([3, 4, 2], norm="batch", runs=2, seed=[0, 1], dtype=f64)
    x = torch.randn(6, 3, dtype=f64)
    w = m.linears[0].weight
    (g,) = torch.autograd.grad(m(x).pow(2).sum(), w, create_graph=True)
    v = torch.randn_like(w)
    (hv,) = torch.autograd.grad((g * v).sum(), w)
    eps = 1e-5

    def grad_at(shift):
        with torch.no_grad():
            w.add_(shift)
        (gs,) = torch.autograd.grad(m(x).pow(2).sum(), w)
        with torch.no_grad():
            w.sub_(shift)
        return gs

    central = (grad_at(eps * v) - grad_at(-eps * v)) / (2 * eps)  # error O(eps^2)
    torch.testing.assert_close(hv, central, rtol=1e-6, atol=1e-8)


def test_batchnorm_needs_two_examples():
    with pytest.raises(ValueError, match="at least 2"):
        BatchNorm(3, runs=1)(torch.randn(1, 1, 3))


def test_deep_linear_is_the_matrix_product():
    m = DeepLinear([4, 6, 5, 2], runs=2, seed=[0, 1], dtype=f64)
    x = torch.randn(7, 4, dtype=f64)
    for r in range(2):
        W = m.linears[2].weight[r] @ m.linears[1].weight[r] @ m.linears[0].weight[r]
        torch.testing.assert_close(m(x)[r], x @ W.T)
    assert not any(m.scale_invariant.values())


def test_scale_invariant_linear_init_norm():
    m = ScaleInvariantLinear(5, runs=3, seed=[0, 1, 2], init_norm=2.5, dtype=f64)
    torch.testing.assert_close(m.w.norm(dim=1), torch.full((3,), 2.5, dtype=f64))
    assert m(torch.randn(4, 5, dtype=f64)).shape == (3, 4, 1)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs, err", [
    (dict(sizes=[4]), ValueError),
    (dict(sizes=[4, 0, 2]), ValueError),
    (dict(sizes=[4, 2], norm="layer"), ValueError),
    (dict(sizes=[4, 2], activation="gelu"), ValueError),
    (dict(sizes=[4, 2], runs=0), ValueError),
    (dict(sizes=[4, 2], runs=2, seed=[1, 2, 3]), ValueError),
    (dict(sizes=[4, 2], seed=1.5), TypeError),
])
def test_mlp_rejects_bad_arguments(kwargs, err):
    with pytest.raises(err):
        MLP(**kwargs)
