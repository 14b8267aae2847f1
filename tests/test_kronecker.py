"""Kronecker facts, random SPD matrices, inverse timings and K-FAC against the exact GN block."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from lecture_lib import kronecker as K
from lecture_lib.experiments import kronecker as X


@pytest.mark.parametrize("n,cond,seed", [(1, 1.0, 0), (5, 10.0, 1), (8, 1e4, 2)])
def test_random_spd_has_the_requested_condition_number(n, cond, seed):
    M = K.random_spd(n, cond, seed, scale=2.0)
    assert M.dtype == torch.float64 and torch.equal(M, M.T)
    lam = torch.linalg.eigvalsh(M)
    assert lam.min() > 0
    assert lam.max().item() == pytest.approx(2.0, rel=1e-12)
    assert (lam.max() / lam.min()).item() == pytest.approx(cond, rel=1e-9)
    assert torch.equal(M, K.random_spd(n, cond, seed, scale=2.0))        # seeded


@pytest.mark.parametrize("n,m,ca,cb", [(2, 3, 1.0, 5.0), (6, 4, 10.0, 100.0), (5, 5, 1e3, 2.0)])
def test_kronecker_eigenvalues_eigenvectors_and_inverse(n, m, ca, cb):
    A, B = K.random_spd(n, ca, 0), K.random_spd(m, cb, 1)
    s = K.kron_spectrum(A, B)
    assert s.explicit.shape == s.products.shape == (n * m,)
    assert s.eigenvalue_error < 1e-13                  # eig(A ⊗ B) = {λ_i ν_j}
    assert s.eigenvector_residual < 1e-13              # eigenvectors r_i ⊗ s_j
    assert s.inverse_error < 1e-11                     # (A ⊗ B)^-1 = A^-1 ⊗ B^-1
    assert s.condition_number == pytest.approx(ca * cb, rel=1e-8)
    assert np.allclose(np.sort(np.outer(s.factor_a, s.factor_b).ravel())[::-1], s.products, rtol=1e-14)


def test_random_spd_stack_is_one_matrix_per_condition_number():
    conds = (1.0, 7.0, 1e4)
    stack = K.random_spd(5, conds, seed=3, scale=2.0)
    assert stack.shape == (3, 5, 5)
    for p, cond in enumerate(conds):
        torch.testing.assert_close(stack[p], K.random_spd(5, cond, seed=3, scale=2.0), rtol=1e-14, atol=1e-15)
    assert K.random_spd(1, conds).shape == (3, 1, 1)


def test_spectrum_family_member_is_the_single_spectrum_at_that_condition_number():
    """The scrubbed spectrum panel: 13 values of cond(A), one vectorised computation (batched eigh, eigvalsh, inv);
    member p equals spectrum_demo at cond_a[p] to float64 rounding."""
    from lecture_lib.viz.kronecker_panels import SPECTRUM_CONDS
    family = X.spectrum_family(6, 4, SPECTRUM_CONDS, 100.0, seed=0)
    assert len(family) == 13
    for p, cond in enumerate(SPECTRUM_CONDS):
        one, member = X.spectrum_demo(6, 4, cond, 100.0, seed=0), family[p]
        for field in ("factor_a", "factor_b", "explicit", "products"):
            want = getattr(one, field)            # (products span 1e-6 of the largest: LAPACK rounds them relative to it)
            np.testing.assert_allclose(getattr(member, field), want, rtol=1e-12, atol=1e-14 * np.abs(want).max())
        assert member.condition_number == pytest.approx(one.condition_number, rel=1e-10)
        assert member.condition_number == pytest.approx(cond * 100.0, rel=1e-8)      # cond(A ⊗ B) = cond(A)·cond(B)
        assert max(member.eigenvalue_error, member.eigenvector_residual) < 1e-13
        assert member.inverse_error < 1e-10


def test_kron_spectra_pairs_two_stacks_and_rejects_unequal_counts():
    A, B = K.random_spd(3, (2.0, 50.0), seed=0), K.random_spd(2, (3.0, 5.0), seed=1)
    pair = K.kron_spectra(A, B)
    for p in range(2):
        one = K.kron_spectrum(A[p], B[p])
        np.testing.assert_allclose(pair[p].explicit, one.explicit, rtol=1e-12)
    with pytest.raises(ValueError, match="B must be one matrix or a stack of as many as A"):
        K.kron_spectra(A, K.random_spd(2, (3.0, 5.0, 7.0), seed=1))
    with pytest.raises(ValueError, match="positive definite"):
        K.kron_spectra(A, -B)


def test_kron_spectrum_is_not_fooled_by_non_kronecker_matrices():
    """A sanity check of the checker: the sum of two Kronecker products has different eigenvalues."""
    A, B = K.random_spd(3, 10.0, 0), K.random_spd(2, 10.0, 1)
    s = K.kron_spectrum(A, B)
    C = torch.kron(A, B) + torch.kron(torch.eye(3, dtype=torch.float64), B)
    other = torch.linalg.eigvalsh(C).flip(0).numpy()
    assert np.abs(other - s.products).max() > 0.1


def test_time_inverses_agree_with_the_dense_solve():
    t = X.time_inverses(widths=(3, 6, 9), repeats=1)
    assert t.widths.tolist() == [3, 6, 9]
    assert (t.max_difference < 1e-10).all()
    assert (t.eigenbasis > 0).all() and (t.dense > 0).all()
    assert len(t.slopes()) == 2
    with pytest.raises(ValueError, match="widths"):
        X.time_inverses(widths=(200,))


def test_kfac_is_exact_for_the_output_layer_and_approximate_for_a_hidden_one():
    out = X.kfac_vs_exact("linears.1", steps=20, checkpoints=3, n=64)
    hid = X.kfac_vs_exact("linears.0", steps=20, checkpoints=3, n=64)
    assert out.steps.tolist() == [0, 10, 20]
    assert out.exact.shape == out.kfac.shape == (3, 7 * 3)
    assert hid.exact.shape == (3, 5 * 6)
    assert (out.relative_error < 1e-12).all()          # mse output layer: G_ll = A ⊗ I exactly
    assert np.allclose(out.exact, out.kfac, atol=1e-12)
    assert ((hid.relative_error > 1e-3) & (hid.relative_error < 1.0)).all()
    assert hid.loss[-1] < hid.loss[0]                  # training happened
    assert np.allclose(out.factor_s, 1.0)              # S = I for the output layer
    with pytest.raises(ValueError, match="layer"):
        X.kfac_vs_exact("linears.5", steps=5, checkpoints=2)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="cond"):
        K.random_spd(3, 0.5)
    with pytest.raises(ValueError, match="square"):
        K.kron_spectrum(torch.ones(2, 3), torch.eye(2))


def test_notebook_panels_build_and_update():
    """The notebook's panel figures: all traces built once, updates keep the trace count (fast sizes)."""
    from lecture_lib.viz import kronecker_panels as kp
    small = X.spectrum_demo(n=3, m=2, cond_a=5.0, cond_b=2.0, seed=0)
    fig = kp.spectrum_figure(small)
    assert len(fig.data) == 2 and len(fig.data[0].x) == 6
    assert np.allclose(fig.data[0].y, fig.data[1].y, rtol=1e-12)
    figs = kp.kfac_figures(X.kfac_checkpoint("linears.0", 1, steps=10, checkpoints=2, sizes=kp.KFAC_SIZES))
    assert [len(f.data) for f in figs] == [2, 3]
    error = kp.kfac_figures(X.kfac_checkpoint("linears.0", 1, steps=10, checkpoints=2, sizes=kp.KFAC_SIZES),
                            steps=10)[1]
    low, high = error.layout.xaxis.range       # the step axis stays still, with room for step 0's diamond
    assert -1 < low < 0 and 10 < high < 11 and error.layout.yaxis2.tickmode == "auto"
    for f in figs:
        names = [t.name for t in f.data]
        assert len(set(names)) == len(names)
    with pytest.raises(ValueError, match="checkpoint"):
        X.kfac_checkpoint("linears.0", 5, steps=10, checkpoints=2, sizes=kp.KFAC_SIZES)
    t = X.time_inverses_up_to(largest=8, repeats=1)
    assert t.widths.tolist() == [4, 8] and len(kp.cost_figure(t).data) == 4
    with pytest.raises(ValueError, match="largest"):
        X.time_inverses_up_to(largest=4)


def test_kron_spectrum_source_shows_no_argument_checks():
    from lecture_lib.viz import figures
    text = figures.source_block(K.kron_spectrum, K.random_spd).data
    assert "raise" not in text and "check_" not in text


@pytest.mark.parametrize("sizes,mean_norm", [((6, 5, 4, 3), 2.0), ((4, 5, 5, 5, 2), 0.0)])
def test_kfac_block_is_exact_in_every_layer_of_a_linear_network(sizes, mean_norm):
    r = X.linear_network_blocks(sizes=sizes, mean_norm=mean_norm, n=48)
    assert r.relative_error.shape == (3, len(sizes) - 1) and r.layers[-1] == f"linears.{len(sizes) - 2}"
    assert (r.relative_error[:2] < 1e-13).all()          # linear, with or without biases (measured <= 1.5e-15)
    assert (r.relative_error[2, :-1] > 1e-3).all()        # tanh: the hidden layers are only approximated
    assert r.relative_error[2, -1] < 1e-13                # ... and its output layer is exact (S = I)
    from lecture_lib.viz import kronecker_panels as kp
    names = [t.name for t in kp.linear_network_figure(r).data]
    assert len(names) == len(set(names)) == 4


def test_exact_gn_quadratic_form_of_each_layer_is_the_jacobian_norm():
    """Notebook 06's identity, layer by layer, from the exact GN blocks: for a bias-free linear network with
    E[x xᵀ] = I, vec(W_l)ᵀ G_ll vec(W_l) = ||J_x||_F² for every l, so the sum over K layers is K ||J_x||_F²."""
    from lecture_lib import curvature
    from lecture_lib.models import DeepLinear
    sizes = (5, 4, 6, 3)
    z = torch.randn(40, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 1.0
    evals, evecs = torch.linalg.eigh(z.T @ z / 40)
    x = z @ (evecs * evals.rsqrt()) @ evecs.T             # uncentered second moment exactly I
    torch.testing.assert_close(x.T @ x / 40, torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-12)
    model = DeepLinear(sizes, seed=2, dtype=torch.float64)
    G, flat = curvature.gauss_newton(model, x, "mse"), curvature.flatten(model)
    Ws = [lin.weight[0].detach() for lin in model.linears]
    J = Ws[0]
    for W in Ws[1:]:
        J = W @ J
    forms = []
    for i, W in enumerate(Ws):
        block = curvature.layer_block(G, flat, f"linears.{i}")
        forms.append(float(W.reshape(-1) @ block @ W.reshape(-1)))     # row-major, like layer_block
    assert forms == pytest.approx([float(J.square().sum())] * 3, rel=1e-10)
