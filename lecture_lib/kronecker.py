r"""Kronecker products and their spectra: the science behind notebook 03.

Facts (Lecture 5; Martens & Grosse 2015): for symmetric :math:`A = Q_A D_A Q_A^\top` and
:math:`B = Q_B D_B Q_B^\top`,

.. math::  A \otimes B = (Q_A \otimes Q_B)(D_A \otimes D_B)(Q_A \otimes Q_B)^\top,

so the eigenvalues of :math:`A\otimes B` are the products :math:`\lambda_i \nu_j`, its
eigenvectors are :math:`r_i \otimes s_j`, and :math:`(A\otimes B)^{-1} = A^{-1}\otimes B^{-1}`.
The damped inverse :math:`(A\otimes B + \gamma I)^{-1}` is not a Kronecker product, but it is
diagonal in the same basis, so it costs two eigendecompositions, :math:`O(n^3 + m^3)`,
instead of :math:`O((nm)^3)` for a dense solve
(:func:`~lecture_lib.optim.kron_damped_solve`).

This module makes random SPD matrices with a chosen condition number and checks the facts
numerically (:func:`kron_spectrum`). The experiments of notebook 03 -- timing the two ways to
apply the damped inverse, following the K-FAC block of a small MLP layer against the exact
Gauss-Newton block during training -- live in :mod:`lecture_lib.experiments.kronecker`.

References: Martens & Grosse (2015), *Optimizing neural networks with Kronecker-factored
approximate curvature*; Grosse & Martens (2016), *A Kronecker-factored approximate Fisher
matrix for convolution layers*; Grosse, CSC 2541 Lecture 5 (2022).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ._validate import Int, Positive, Real, Seed, Where, accepts, check_tensor


# ----------------------------------------------------------------------------- random SPD
@accepts(n=Int(1), cond=Real(1.0, sequences=True), seed=Seed(), scale=Positive())
def random_spd(n: int, cond=10.0, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    r"""A random symmetric positive definite ``(n, n)`` float64 matrix with condition number ``cond``.

    :math:`M = Q\,\mathrm{diag}(\lambda)\,Q^\top` with :math:`Q` Haar-random orthogonal (QR of a
    Gaussian matrix, signs fixed) and eigenvalues spaced geometrically from ``scale`` down to
    ``scale / cond`` (all equal when ``n = 1`` or ``cond = 1``). A sequence of P condition numbers
    gives a ``(P, n, n)`` stack: the same eigenvectors :math:`Q`, one spectrum per ``cond``.
    """
    g = torch.Generator().manual_seed(seed)
    Q, R = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    Q = Q * torch.sign(torch.diagonal(R)).unsqueeze(0)
    cond = torch.as_tensor(np.asarray(cond, dtype=np.float64)).unsqueeze(-1)      # (1,) or (P, 1)
    lam = scale * cond ** (-torch.linspace(0.0, 1.0, n, dtype=torch.float64)) if n > 1 else \
        torch.full(cond.shape, float(scale), dtype=torch.float64)
    M = (Q * lam.unsqueeze(-2)) @ Q.T
    return 0.5 * (M + M.mT)


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


def _symmetric_positive_definite(name: str, M) -> torch.Tensor:
    """A square, symmetric, positive definite matrix (a 2-D tensor)."""
    M64 = check_tensor(name, M, dim=2).to(torch.float64)
    flaw = ("a square matrix (2-D tensor), got shape " + str(tuple(M.shape)) if M.shape[0] != M.shape[1] else
            "symmetric" if not torch.allclose(M64, M64.T, rtol=1e-10, atol=1e-12 * float(M64.abs().max())) else
            "positive definite (all eigenvalues > 0)" if float(torch.linalg.eigvalsh(M64)[0]) <= 0 else None)
    if flaw is not None:
        raise ValueError(f"{name} must be {flaw}")
    return M


F64 = torch.float64
SPD = Where(_symmetric_positive_definite,
            bad=(torch.zeros(2, 2, dtype=F64), -torch.eye(2, dtype=F64), torch.tensor([[1.0, 2.0], [0.0, 1.0]]),
                 torch.ones(2, 3, dtype=F64), torch.empty(0, 0, dtype=F64), torch.full((2, 2), math.nan),
                 torch.ones(2, 2, 2, dtype=F64), torch.ones(3, dtype=F64), "B", None, 1.0))


def _spd_stack(name: str, M) -> torch.Tensor:
    """A stack ``(P, n, n)`` of symmetric positive definite matrices, or one ``(n, n)`` matrix."""
    M64 = check_tensor(name, M).to(torch.float64)
    if M.dim() not in (2, 3) or M.shape[-1] != M.shape[-2]:
        raise ValueError(f"{name} must be a square matrix (n, n) or a stack of them (P, n, n), got shape "
                         f"{tuple(M.shape)}")
    if not torch.allclose(M64, M64.mT, rtol=1e-10, atol=1e-12 * float(M64.abs().max())):
        raise ValueError(f"{name} must be symmetric")
    if float(torch.linalg.eigvalsh(M64)[..., 0].min()) <= 0:
        raise ValueError(f"{name} must be positive definite (all eigenvalues > 0)")
    return M


SPD_STACK = Where(_spd_stack, bad=(torch.zeros(2, 2, dtype=F64), -torch.eye(2, dtype=F64).expand(3, 2, 2),
                                   torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.ones(2, 3, dtype=F64),
                                   torch.empty(0, 0, dtype=F64), torch.full((2, 2), math.nan),
                                   torch.ones(2, 2, 2, 2, dtype=F64), torch.ones(3, dtype=F64), "B", None, 1.0))


def _same_count(arguments) -> None:
    A, B = arguments["A"], arguments["B"]
    count = A.shape[0] if A.dim() == 3 else 1
    if B.dim() == 3 and B.shape[0] != count:
        raise ValueError(f"B must be one matrix or a stack of as many as A ({count}), got {B.shape[0]}")


def _kron(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Kronecker products of two stacks, matrix by matrix: ``(P, n, n), (P, m, m) -> (P, nm, nm)``."""
    P, n, m = X.shape[0], X.shape[-1], Y.shape[-1]
    return (X[:, :, None, :, None] * Y[:, None, :, None, :]).reshape(P, n * m, n * m)


@accepts(_same_count, A=SPD_STACK, B=SPD_STACK)
def kron_spectra(A: torch.Tensor, B: torch.Tensor) -> list[KronSpectrum]:
    r""":func:`kron_spectrum` of every pair ``A[p]``, ``B[p]`` of two stacks, as one vectorised computation
    (``B`` may be one matrix, shared; a single ``(n, n)`` ``A`` is a stack of one)."""
    A = A.to(torch.float64).reshape(-1, *A.shape[-2:])
    B = B.to(torch.float64).expand(A.shape[0], *B.shape[-2:])
    lam, R = torch.linalg.eigh(A)                               # (P, n), (P, n, n)
    nu, S = torch.linalg.eigh(B)
    K = _kron(A, B)
    explicit = torch.linalg.eigvalsh(K).flip(-1)
    lam_nu = (lam[:, :, None] * nu[:, None, :]).flatten(1)      # entry i*m + j is λ_i ν_j
    products = lam_nu.sort(dim=-1, descending=True).values
    top = explicit.abs().amax(-1)
    V = _kron(R, S)                                             # column i*m + j is r_i ⊗ s_j
    residual = (K @ V - V * lam_nu[:, None, :]).norm(dim=-2).amax(-1) / top
    K_inv = torch.linalg.inv(K)
    inv_err = torch.linalg.matrix_norm(K_inv - _kron(torch.linalg.inv(A), torch.linalg.inv(B)))
    inv_err = (inv_err / torch.linalg.matrix_norm(K_inv)).tolist()
    eig_err = ((explicit - products).abs().amax(-1) / top).tolist()
    return [KronSpectrum(
        factor_a=lam[p].flip(0).cpu().numpy(), factor_b=nu[p].flip(0).cpu().numpy(),
        explicit=explicit[p].cpu().numpy(), products=products[p].cpu().numpy(), eigenvalue_error=eig_err[p],
        eigenvector_residual=float(residual[p]), inverse_error=inv_err[p],
        condition_number=float(explicit[p, 0] / explicit[p, -1])) for p in range(A.shape[0])]


@accepts(A=SPD, B=SPD)
def kron_spectrum(A: torch.Tensor, B: torch.Tensor) -> KronSpectrum:
    r"""Check :math:`\mathrm{eig}(A\otimes B) = \{\lambda_i\nu_j\}`, eigenvectors :math:`r_i\otimes s_j`,
    and :math:`(A\otimes B)^{-1} = A^{-1}\otimes B^{-1}` on symmetric positive definite ``A``, ``B``
    (the computation, vectorised over stacks of factors, is :func:`kron_spectra`)."""
    return kron_spectra(A, B)[0]
