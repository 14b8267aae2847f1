"""Exact curvature of tiny networks against PyTorch and against each other (float64)."""
from __future__ import annotations

import pytest
import torch

from lecture_lib import curvature as C
from lecture_lib import losses
from lecture_lib.models import MLP, DeepLinear


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def small_net(runs=1, **kw):
    return MLP([3, 4, 2], activation="tanh", runs=runs, seed=list(range(runs)), dtype=torch.float64, **kw)


def batch(n=9, seed=0, classes=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = torch.randint(0, classes, (n,), generator=g) if classes else torch.randn(n, 2, generator=g)
    return x, y


def test_hessian_matches_autograd_and_finite_differences():
    model = small_net(runs=2)
    x, y = batch()
    H = C.hessian(model, x, y, "mse", run=1)
    flat = C.flatten(model, run=1)
    assert H.shape == (26, 26) and flat.theta.numel() == 26

    def J(theta):
        return losses.mse(flat.fn(theta, x).unsqueeze(0), y)[0]

    ref = torch.autograd.functional.hessian(J, flat.theta)
    assert torch.allclose(H, ref, atol=1e-13)
    assert torch.allclose(H, H.T, atol=1e-14)
    # central differences of the gradient, column by column
    grad = torch.func.grad(J)
    eps = 1e-5
    fd = torch.stack([(grad(flat.theta + eps * e) - grad(flat.theta - eps * e)) / (2 * eps)
                      for e in torch.eye(26)], 1)
    assert torch.allclose(H, fd, atol=1e-8)
    # run 1 is run 1: its slice of the batched model's parameters
    assert torch.equal(flat.theta[flat.slices["linears.0.weight"]], model.linears[0].weight[1].detach().reshape(-1))


def test_flatten_evaluates_the_model_without_changing_it():
    model = small_net(runs=3, norm="batch")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, _ = batch()
    flat = C.flatten(model, run=2)
    assert torch.allclose(flat.fn(flat.theta, x), model(x)[2].detach(), atol=1e-14)
    for k, v in model.state_dict().items():
        if "running" not in k:   # the direct call above moved the running statistics, flatten did not
            assert torch.equal(v, before[k]), k


def test_gauss_newton_equals_fisher_for_mse_with_unit_noise():
    model = small_net()
    x, y = batch()
    G = C.gauss_newton(model, x, "mse")
    F = C.fisher(model, x, "mse")
    assert torch.allclose(G, F, atol=1e-13)
    assert torch.linalg.eigvalsh(G).min() > -1e-12   # PSD


def test_gauss_newton_equals_fisher_for_softmax_cross_entropy():
    model = small_net()
    x, y = batch(classes=2)
    assert torch.allclose(C.gauss_newton(model, x, "cross_entropy"), C.fisher(model, x, "cross_entropy"),
                          atol=1e-14)


def test_gauss_newton_equals_hessian_for_a_linear_model_with_mse():
    model = DeepLinear([3, 2], dtype=torch.float64)
    x, y = batch()
    assert torch.allclose(C.gauss_newton(model, x, "mse"), C.hessian(model, x, y, "mse"), atol=1e-14)
    # and differs from it for a nonlinear network away from a zero-residual fit
    model = small_net()
    assert (C.gauss_newton(model, x, "mse") - C.hessian(model, x, y, "mse")).abs().max() > 1e-3


def test_true_fisher_differs_from_empirical_fisher_away_from_the_optimum():
    model = small_net()
    x, y = batch(n=12, classes=2)
    F = C.fisher(model, x, "cross_entropy")
    E = C.empirical_fisher(model, x, y, "cross_entropy")
    assert torch.linalg.matrix_norm(F - E) > 0.2 * torch.linalg.matrix_norm(F)
    # were the label drawn from the model, the empirical Fisher would average to the true one
    x1 = x[:1]
    p1 = torch.softmax(C.flatten(model).fn(C.flatten(model).theta, x1), -1)[0]
    E_avg = sum(p1[c] * C.empirical_fisher(model, x1, torch.tensor([c]), "cross_entropy") for c in range(2))
    assert torch.allclose(E_avg, C.fisher(model, x1, "cross_entropy"), atol=1e-14)


def test_single_linear_layer_kfac_block_is_the_exact_gauss_newton():
    model = MLP([3, 2], runs=1, dtype=torch.float64)
    x, y = batch()
    G = C.gauss_newton(model, x, "mse")
    flat = C.flatten(model)
    A, S = C.kfac_factors(model, x, y, "mse", curvature="ggn")["linears.0"]
    assert torch.allclose(S, torch.eye(2), atol=1e-15)
    assert torch.allclose(C.layer_block(G, flat, "linears.0"), C.kfac_block(A, S), atol=1e-14)


def test_kfac_block_approximates_the_exact_gn_block_of_a_hidden_layer():
    model = small_net()
    x, y = batch(n=64)
    G = C.gauss_newton(model, x, "mse")
    flat = C.flatten(model)
    A, S = C.kfac_factors(model, x, y, "mse", curvature="ggn")["linears.0"]
    exact, approx = C.layer_block(G, flat, "linears.0"), C.kfac_block(A, S)
    rel = torch.linalg.matrix_norm(exact - approx) / torch.linalg.matrix_norm(exact)
    assert 1e-6 < rel < 0.5        # an approximation: close, not equal
    assert torch.linalg.eigvalsh(approx).min() > -1e-12


def test_blocks_and_layer_indices_cover_the_parameters():
    model = small_net()
    x, y = batch()
    H = C.hessian(model, x, y, "mse")
    flat = C.flatten(model)
    bl = C.blocks(H, flat)
    assert bl[("linears.0.weight", "linears.1.bias")].shape == (12, 2)
    idx = torch.cat([C.layer_indices(flat, "linears.0"), C.layer_indices(flat, "linears.1")])
    assert sorted(idx.tolist()) == list(range(26))
    # row-major [W b]: the bias of unit o follows that unit's weights
    i0 = C.layer_indices(flat, "linears.0").reshape(4, 4)
    assert i0[1, 3].item() == flat.slices["linears.0.bias"].start + 1
    with pytest.raises(ValueError, match="layer"):
        C.layer_block(H, flat, "linears.7")


def test_matrix_free_products_and_lanczos():
    model = small_net()
    x, y = batch()
    H, G = C.hessian(model, x, y, "mse"), C.gauss_newton(model, x, "mse")
    v = torch.randn(26, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(C.hvp(model, x, y, "mse", v), H @ v, atol=1e-13)
    assert torch.allclose(C.gnvp(model, x, "mse", v), G @ v, atol=1e-13)
    xc, yc = batch(classes=2)
    Gc = C.gauss_newton(model, xc, "cross_entropy")
    assert torch.allclose(C.gnvp(model, xc, "cross_entropy", v), Gc @ v, atol=1e-13)
    top = C.top_eigenvalues(model, x, y, "mse", matrix="hessian", k=3)
    assert torch.allclose(top, torch.linalg.eigvalsh(H).flip(0)[:3], atol=1e-10)
    top = C.top_eigenvalues(model, x, None, "mse", matrix="ggn", k=3)
    assert torch.allclose(top, torch.linalg.eigvalsh(G).flip(0)[:3], atol=1e-10)
    D = torch.diag(torch.arange(1.0, 51.0))
    assert torch.allclose(C.lanczos(lambda u: D @ u, 50, k=2, iters=50), torch.tensor([50.0, 49.0]), atol=1e-10)


def test_curvature_of_a_batchnorm_network_is_symmetric_psd():
    model = small_net(norm="batch")
    x, _ = batch()
    G = C.gauss_newton(model, x, "mse")
    assert torch.allclose(G, G.T, atol=1e-14) and torch.linalg.eigvalsh(G).min() > -1e-12


def test_bad_arguments_raise():
    model = small_net()
    x, y = batch()
    with pytest.raises(ValueError, match="run"):
        C.hessian(model, x, y, "mse", run=3)
    with pytest.raises(ValueError, match="loss"):
        C.gauss_newton(model, x, "hinge")
    with pytest.raises(ValueError, match="curvature"):
        C.kfac_factors(model, x, y, "mse", curvature="hessian")
    with pytest.raises(ValueError, match="matrix"):
        C.top_eigenvalues(model, x, y, "mse", matrix="fisher")
