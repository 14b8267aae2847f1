r"""Kronecker products and their spectra: the science behind notebook 03.

Facts (Lecture 5; Martens & Grosse 2015): for symmetric :math:`A = Q_A D_A Q_A^\top` and
:math:`B = Q_B D_B Q_B^\top`,

.. math::  A \otimes B = (Q_A \otimes Q_B)(D_A \otimes D_B)(Q_A \otimes Q_B)^\top,

so the eigenvalues of :math:`A\otimes B` are the products :math:`\lambda_i \nu_j`, its
eigenvectors are :math:`r_i \otimes s_j`, and :math:`(A\otimes B)^{-1} = A^{-1}\otimes B^{-1}`.
The damped inverse :math:`(A\otimes B + \gamma I)^{-1}` is not a Kronecker product, but it is
diagonal in the same basis, so it costs two eigendecompositions, :math:`O(n^3 + m^3)`,
instead of :math:`O((nm)^3)` for a dense solve
(:func:`~lecture_lib.optim.kfac.kron_damped_solve`).

This module makes random SPD matrices with a chosen condition number, checks the facts
numerically (:func:`kron_spectrum`), times the two ways to apply the damped inverse
(:func:`time_inverses`), and follows the K-FAC block of a small MLP layer against the
exact Gauss-Newton block during training (:func:`kfac_vs_exact`).

References: Martens & Grosse (2015), *Optimizing neural networks with Kronecker-factored
approximate curvature*; Grosse & Martens (2016), *A Kronecker-factored approximate Fisher
matrix for convolution layers*; Grosse, CSC 2541 Lecture 5 (2022).
"""
from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass

import numpy as np
import torch

from . import curvature
from ._validate import check_choice, check_int, check_positive, check_range, check_seed, check_sizes, check_tensor
from .data import teacher
from .engine import train
from .models import ACTIVATIONS, MLP
from .optim.kfac import _damped_solve, eigh_factor
from .optim.transforms import scale_by_lr


# ----------------------------------------------------------------------------- random SPD
def random_spd(n: int, cond: float = 10.0, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    r"""A random symmetric positive definite ``(n, n)`` float64 matrix with condition number ``cond``.

    :math:`M = Q\,\mathrm{diag}(\lambda)\,Q^\top` with :math:`Q` Haar-random orthogonal (QR of a
    Gaussian matrix, signs fixed) and eigenvalues spaced geometrically from ``scale`` down to
    ``scale / cond`` (all equal when ``n = 1`` or ``cond = 1``).
    """
    n = check_int("n", n)
    check_range("cond", cond, 1.0)
    check_positive("scale", scale)
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    Q, R = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    Q = Q * torch.sign(torch.diagonal(R)).unsqueeze(0)
    lam = scale * float(cond) ** (-torch.linspace(0.0, 1.0, n, dtype=torch.float64)) if n > 1 else \
        torch.full((1,), float(scale), dtype=torch.float64)
    M = (Q * lam) @ Q.T
    return 0.5 * (M + M.T)


# ----------------------------------------------------------------------------- spectra
@dataclass
class KronSpectrum:
    """The eigenvalues of :math:`A\\otimes B` two ways, and how well the facts hold."""

    factor_a: np.ndarray            # (n,) eigenvalues λ_i of A, descending
    factor_b: np.ndarray            # (m,) eigenvalues ν_j of B, descending
    explicit: np.ndarray            # (nm,) eigvalsh of the explicit n·m × n·m product, descending
    products: np.ndarray            # (nm,) all λ_i ν_j, descending
    eigenvalue_error: float         # max |explicit - products| / max |explicit|
    eigenvector_residual: float     # max_ij ||(A⊗B)(r_i⊗s_j) - λ_i ν_j (r_i⊗s_j)|| / max λν
    inverse_error: float            # ||(A⊗B)^-1 - A^-1 ⊗ B^-1||_F / ||(A⊗B)^-1||_F
    condition_number: float         # of A⊗B: cond(A)·cond(B)


def kron_spectrum(A: torch.Tensor, B: torch.Tensor) -> KronSpectrum:
    r"""Check :math:`\mathrm{eig}(A\otimes B) = \{\lambda_i\nu_j\}`, eigenvectors :math:`r_i\otimes s_j`,
    and :math:`(A\otimes B)^{-1} = A^{-1}\otimes B^{-1}` on symmetric positive definite ``A``, ``B``."""
    for name, M in (("A", A), ("B", B)):
        check_tensor(name, M, dim=2)
        if M.shape[0] != M.shape[1]:
            raise ValueError(f"{name} must be a square matrix (2-D tensor), got shape {tuple(M.shape)}")
        M = M.to(torch.float64)
        if not torch.allclose(M, M.T, rtol=1e-10, atol=1e-12 * float(M.abs().max())):
            raise ValueError(f"{name} must be symmetric")
        if float(torch.linalg.eigvalsh(M)[0]) <= 0:
            raise ValueError(f"{name} must be positive definite (all eigenvalues > 0)")
    A, B = A.to(torch.float64), B.to(torch.float64)
    lam, R = torch.linalg.eigh(A)
    nu, S = torch.linalg.eigh(B)
    K = torch.kron(A, B)
    explicit = torch.linalg.eigvalsh(K).flip(0)
    products = torch.outer(lam, nu).reshape(-1).sort(descending=True).values
    top = explicit.abs().max()
    V = torch.kron(R, S)                                        # column i*m + j is r_i ⊗ s_j
    residual = (K @ V - V * torch.outer(lam, nu).reshape(1, -1)).norm(dim=0).max() / top
    K_inv = torch.linalg.inv(K)
    inv_err = torch.linalg.matrix_norm(K_inv - torch.kron(torch.linalg.inv(A), torch.linalg.inv(B)))
    return KronSpectrum(
        factor_a=lam.flip(0).cpu().numpy(), factor_b=nu.flip(0).cpu().numpy(),
        explicit=explicit.cpu().numpy(), products=products.cpu().numpy(),
        eigenvalue_error=float((explicit - products).abs().max() / top),
        eigenvector_residual=float(residual),
        inverse_error=float(inv_err / torch.linalg.matrix_norm(K_inv)),
        condition_number=float(explicit[0] / explicit[-1]),
    )


def spectrum_demo(n: int = 6, m: int = 4, cond_a: float = 10.0, cond_b: float = 100.0, seed: int = 0) -> KronSpectrum:
    """:func:`kron_spectrum` of random SPD factors of sizes ``n``, ``m`` and condition numbers ``cond_a``, ``cond_b``."""
    n, m, seed = check_int("n", n), check_int("m", m), check_seed("seed", seed)
    check_range("cond_a", cond_a, 1.0)
    check_range("cond_b", cond_b, 1.0)
    return kron_spectrum(random_spd(n, cond_a, seed), random_spd(m, cond_b, seed + 1))


# ----------------------------------------------------------------------------- timing
@dataclass
class InverseTiming:
    """Seconds to apply :math:`(A\\otimes S + \\gamma I)^{-1}` to one gradient, per layer width."""

    widths: np.ndarray              # (W,) layer width n (A and S are n × n; the layer has n² weights)
    eigenbasis: np.ndarray          # (W,) two eigh + kron_damped_solve
    dense: np.ndarray               # (W,) build the n² × n² matrix and torch.linalg.solve
    max_difference: np.ndarray      # (W,) max |eigenbasis - dense| / max |dense|

    def slopes(self) -> tuple[float, float]:
        """Log-log slopes of time against width (about 3 and 6 asymptotically; smaller at small sizes)."""
        lw = np.log(self.widths)
        return (float(np.polyfit(lw, np.log(self.eigenbasis), 1)[0]),
                float(np.polyfit(lw, np.log(self.dense), 1)[0]))


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def time_inverses(widths=(4, 8, 16, 24, 32, 48), damping: float = 1e-3, repeats: int = 3,
                  seed: int = 0) -> InverseTiming:
    r"""Measure the eigenbasis solve against the dense solve for square layers of growing width.

    For each width ``n``: random SPD ``A``, ``S`` (``n × n``), a gradient ``G``; the eigenbasis way
    eigendecomposes both factors and calls :func:`~lecture_lib.optim.kfac.kron_damped_solve`
    (:math:`O(n^3)`); the dense way forms :math:`A\otimes S + \gamma I` (``n² × n²``) and solves
    (:math:`O(n^6)`). Best of ``repeats`` wall-clock times, float64, current torch thread count.
    """
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__"):
        raise TypeError(f"widths must be a sequence of layer widths, got {widths!r}")
    widths = [check_int(f"widths[{i}]", w, high=80) for i, w in enumerate(widths)]
    if not widths:
        raise ValueError(f"widths must be 1..80 (the dense matrix has width^4 entries), got {widths}")
    check_positive("damping", damping)
    repeats = check_int("repeats", repeats)
    seed = check_seed("seed", seed)
    eig_t, dense_t, diff = [], [], []
    for i, n in enumerate(widths):
        A, S = random_spd(n, 30.0, seed + 2 * i), random_spd(n, 30.0, seed + 2 * i + 1)
        G = torch.randn(n, n, generator=torch.Generator().manual_seed(seed + i), dtype=torch.float64)
        out = {}

        def eigenbasis():
            QA, dA = eigh_factor(A)
            QS, dS = eigh_factor(S)
            out["eig"] = _damped_solve(QA, dA, QS, dS, G, damping)   # inputs built here: time the solve alone

        def dense():
            M = torch.kron(A, S) + damping * torch.eye(n * n, dtype=torch.float64)
            x = torch.linalg.solve(M, G.T.reshape(-1))          # column-stacking vec
            out["dense"] = x.reshape(n, n).T

        eig_t.append(_best_time(eigenbasis, repeats))
        dense_t.append(_best_time(dense, repeats))
        diff.append(float((out["eig"] - out["dense"]).abs().max() / out["dense"].abs().max()))
    return InverseTiming(np.array(widths), np.array(eig_t), np.array(dense_t), np.array(diff))


# ----------------------------------------------------------------------------- K-FAC vs exact
@dataclass
class KFACvsExact:
    """The K-FAC block :math:`A\\otimes S` against the exact Gauss-Newton block of one layer, over training."""

    layer: str
    steps: np.ndarray               # (T,) checkpoint steps
    loss: np.ndarray                # (T,) training loss at the checkpoint
    exact: np.ndarray               # (T, P) eigenvalues of the exact GN block, descending
    kfac: np.ndarray                # (T, P) eigenvalues of A ⊗ S, descending
    relative_error: np.ndarray      # (T,) ||G_ll - A⊗S||_F / ||G_ll||_F
    factor_a: np.ndarray            # (T, n_in+1) eigenvalues of A
    factor_s: np.ndarray            # (T, n_out) eigenvalues of S


def kfac_vs_exact(layer: str = "linears.0", sizes: tuple = (4, 6, 3), activation: str = "tanh",
                  steps: int = 200, checkpoints: int = 9, lr: float = 0.05, n: int = 128,
                  seed: int = 0) -> KFACvsExact:
    r"""Train a small MLP by gradient descent on a teacher regression task (mse, full batch) and, at
    ``checkpoints`` evenly spaced steps, compare one layer's exact Gauss-Newton block with its
    K-FAC approximation :math:`A\otimes S` (``curvature='ggn'``, same batch, float64).

    For the output layer with squared error the two agree exactly (:math:`S = I`); for a hidden
    layer K-FAC assumes the activations :math:`a` and the back-propagated derivatives
    :math:`\mathcal{D}s` are independent, and the relative error shows what that costs.
    Results are cached, so a slider over the checkpoints only picks rows.
    """
    sizes = tuple(check_sizes("sizes", sizes))
    steps = check_int("steps", steps)
    checkpoints = check_int("checkpoints", checkpoints, low=2)
    check_positive("lr", lr)
    check_choice("activation", activation, ACTIVATIONS)
    check_choice("layer", layer, [f"linears.{i}" for i in range(len(sizes) - 1)])
    # the arguments are checked and hashable now (sizes a tuple): the training run is cached on them
    return _kfac_vs_exact(layer, sizes, activation, steps, checkpoints, float(lr), check_int("n", n),
                          check_seed("seed", seed))


@functools.lru_cache(maxsize=8)
def _kfac_vs_exact(layer, sizes, activation, steps, checkpoints, lr, n, seed) -> KFACvsExact:
    model = MLP(list(sizes), activation=activation, runs=1, seed=seed, dtype=torch.float64)
    data = teacher(n=n, sizes=(sizes[0], 16, sizes[-1]), seed=seed + 1, dtype=torch.float64)
    marks = sorted({int(round(k)) for k in np.linspace(0, steps, checkpoints)})
    snaps = {0: copy.deepcopy(model.state_dict())}

    def keep(k, m):
        if k + 1 in marks:
            snaps[k + 1] = copy.deepcopy(m.state_dict())

    train(model, data, "mse", scale_by_lr(lr), steps=steps, callback=keep)
    x, y = data.x_train, data.y_train
    rows = {"loss": [], "exact": [], "kfac": [], "err": [], "a": [], "s": []}
    for k in marks:
        model.load_state_dict(snaps[k])
        flat = curvature.flatten(model)
        G = curvature.gauss_newton(model, x, "mse")
        exact = curvature.layer_block(G, flat, layer)
        A, S = curvature.kfac_factors(model, x, y, "mse", curvature="ggn")[layer]
        approx = curvature.kfac_block(A, S)
        with torch.no_grad():
            rows["loss"].append(float(0.5 * (model(x)[0] - y).pow(2).sum(-1).mean()))
        rows["exact"].append(torch.linalg.eigvalsh(exact).flip(0).cpu().numpy())
        rows["kfac"].append(torch.linalg.eigvalsh(approx).flip(0).cpu().numpy())
        rows["err"].append(float(torch.linalg.matrix_norm(exact - approx) / torch.linalg.matrix_norm(exact)))
        rows["a"].append(torch.linalg.eigvalsh(A).flip(0).cpu().numpy())
        rows["s"].append(torch.linalg.eigvalsh(S).flip(0).cpu().numpy())
    return KFACvsExact(layer, np.array(marks), np.array(rows["loss"]), np.stack(rows["exact"]),
                       np.stack(rows["kfac"]), np.array(rows["err"]), np.stack(rows["a"]), np.stack(rows["s"]))
