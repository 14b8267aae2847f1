r"""The experiments of notebook 03, "Kronecker spectra": ``params -> result``.

Built on :mod:`lecture_lib.kronecker` (random SPD factors, the spectrum of a Kronecker product)
and on the K-FAC and curvature code:

* :func:`spectrum_demo` -- the facts about :math:`A\otimes B` checked on random factors (:func:`spectrum_family`:
  for many condition numbers of :math:`A` at once);
* :func:`time_inverses` -- the eigenbasis solve of :math:`(A\otimes S + \gamma I)^{-1}` against the
  dense one, timed on this machine for growing layer widths;
* :func:`kfac_vs_exact` -- the K-FAC block :math:`A\otimes S` of one MLP layer against the exact
  Gauss-Newton block, at checkpoints of a real training run;
* :func:`linear_network_blocks` -- every layer of a linear network (output Hessian I): the swap of
  expectations is exact there, and a tanh network of the same sizes shows it is not in general.

Nothing here imports plotly or ipywidgets.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch

from .. import curvature
from .._validate import Choice, Function, Int, Positive, Real, Seed, Sizes, Where, accepts, check_choice, check_int
from ..cache import cached, recent
from ..data import gaussian_inputs, teacher
from ..engine import train
from ..adaptive import requires
from ..kronecker import KronSpectrum, kron_spectra, kron_spectrum, random_spd
from ..models import ACTIVATIONS, MLP
from ..optim import eigh_factor, kron_damped_solve
from ..optim.transforms import scale_by_lr


# ----------------------------------------------------------------------------- spectra
@cached
@accepts(n=Int(1), m=Int(1), cond_a=Real(1.0), cond_b=Real(1.0), seed=Seed())
def spectrum_demo(n: int = 6, m: int = 4, cond_a: float = 10.0, cond_b: float = 100.0, seed: int = 0) -> KronSpectrum:
    """:func:`kron_spectrum` of random SPD factors of sizes ``n``, ``m`` and condition numbers ``cond_a``, ``cond_b``."""
    return kron_spectrum(random_spd(n, cond_a, seed), random_spd(m, cond_b, seed + 1))


@cached
@accepts(n=Int(1), m=Int(1), cond_a=Real(1.0, sequences=True), cond_b=Real(1.0), seed=Seed())
def spectrum_family(n: int = 6, m: int = 4, cond_a=(1.0, 10.0, 100.0), cond_b: float = 100.0,
                    seed: int = 0) -> list[KronSpectrum]:
    """:func:`spectrum_demo` for every condition number of ``cond_a`` (a sequence), one vectorised computation:
    a stack of factors A (the same eigenvectors, one spectrum per ``cond_a``) against one B."""
    return kron_spectra(random_spd(n, cond_a, seed), random_spd(m, cond_b, seed + 1))


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


def _widths(name: str, widths) -> list[int]:
    """Layer widths 1..80 (the dense matrix has width⁴ entries)."""
    given = list(widths) if hasattr(widths, "__iter__") and not isinstance(widths, (str, bytes)) else []
    if not given:
        raise TypeError(f"{name} must be a non-empty sequence of layer widths 1..80, got {widths!r}")
    return [check_int(f"{name}[{i}]", w, high=80) for i, w in enumerate(given)]


@accepts(widths=Where(_widths, bad=((), (0, 2), (2, 81), ("a",), (2.5,), None, 3)), damping=Positive(), repeats=Int(1),
         seed=Seed(), progress=Function(optional=True))
def time_inverses(widths=(4, 8, 16, 24, 32, 48), damping: float = 1e-3, repeats: int = 3,
                  seed: int = 0, progress=None) -> InverseTiming:
    r"""Measure the eigenbasis solve against the dense solve for square layers of growing width.

    For each width ``n``: random SPD ``A``, ``S`` (``n × n``), a gradient ``G``; the eigenbasis way
    eigendecomposes both factors and calls :func:`~lecture_lib.optim.kron_damped_solve`
    (:math:`O(n^3)`); the dense way forms :math:`A\otimes S + \gamma I` (``n² × n²``) and solves
    (:math:`O(n^6)`). Best of ``repeats`` wall-clock times, float64, current torch thread count.
    ``progress(fraction, partial)``: the widths measured so far, after each but the last (reported between
    two measurements, never during one); ``fraction`` counts the dense solves' :math:`n^6`.
    """
    eig_t, dense_t, diff = [], [], []
    work = np.cumsum(np.asarray(widths, dtype=float) ** 6)
    for i, n in enumerate(widths):
        A, S = random_spd(n, 30.0, seed + 2 * i), random_spd(n, 30.0, seed + 2 * i + 1)
        G = torch.randn(n, n, generator=torch.Generator().manual_seed(seed + i), dtype=torch.float64)
        out = {}

        def eigenbasis():
            QA, dA = eigh_factor(A)
            QS, dS = eigh_factor(S)
            out["eig"] = kron_damped_solve.__wrapped__(QA, dA, QS, dS, G, damping)   # inputs built here: time the solve alone

        def dense():
            M = torch.kron(A, S) + damping * torch.eye(n * n, dtype=torch.float64)
            x = torch.linalg.solve(M, G.T.reshape(-1))          # column-stacking vec
            out["dense"] = x.reshape(n, n).T

        eig_t.append(_best_time(eigenbasis, repeats))
        dense_t.append(_best_time(dense, repeats))
        diff.append(float((out["eig"] - out["dense"]).abs().max() / out["dense"].abs().max()))
        if progress is not None and i + 1 < len(widths):
            progress(float(work[i] / work[-1]),
                     InverseTiming(np.array(widths[:i + 1]), np.array(eig_t), np.array(dense_t), np.array(diff)))
    return InverseTiming(np.array(widths), np.array(eig_t), np.array(dense_t), np.array(diff))


#: Layer widths of the cost panel's sweep.
COST_WIDTHS = (4, 8, 12, 16, 24, 32, 48, 64)


@accepts(requires(lambda a: sum(w <= a["largest"] for w in a["widths"]) >= 2,
                  "largest must be at least the second of the widths {widths}, got {largest}"),
         largest=Int(1), widths=Where(_widths, bad=((), (0, 2), ("a",), None)), repeats=Int(1),
         progress=Function(optional=True))
def time_inverses_up_to(largest: int = 48, widths=COST_WIDTHS, repeats: int = 2, progress=None) -> InverseTiming:
    """:func:`time_inverses` for the ``widths`` up to ``largest`` (at least two of them); ``progress(fraction,
    partial)``: the widths measured so far."""
    return time_inverses(widths=[w for w in widths if w <= largest], repeats=repeats, progress=progress)


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


def _layers(arguments) -> None:
    layers = [f"linears.{i}" for i in range(len(arguments["sizes"]) - 1)]
    check_choice("layer", arguments["layer"], layers)


@accepts(_layers, sizes=Sizes(), activation=Choice(ACTIVATIONS), steps=Int(1), checkpoints=Int(2), lr=Positive(),
         n=Int(1), seed=Seed(), progress=Function(optional=True))
@recent(8)                  # the arguments are checked first; a slider over the checkpoints then only picks rows
def kfac_vs_exact(layer: str = "linears.0", sizes: tuple = (4, 6, 3), activation: str = "tanh",
                  steps: int = 200, checkpoints: int = 9, lr: float = 0.05, n: int = 128,
                  seed: int = 0, progress=None) -> KFACvsExact:
    r"""Train a small MLP by gradient descent on a teacher regression task (mse, full batch) and, at
    ``checkpoints`` evenly spaced steps, compare one layer's exact Gauss-Newton block with its
    K-FAC approximation :math:`A\otimes S` (``curvature='ggn'``, same batch, float64).

    For the output layer with squared error the two agree exactly (:math:`S = I`); for a hidden
    layer K-FAC assumes the activations :math:`a` and the back-propagated derivatives
    :math:`\mathcal{D}s` are independent, and the relative error shows what that costs.
    Results are cached, so a slider over the checkpoints only picks rows. ``progress(fraction, partial)``:
    the checkpoints measured so far, as training reaches them.
    """
    return _kfac_vs_exact(layer, tuple(sizes), activation, steps, checkpoints, float(lr), n, seed, progress=progress)


def checkpoint_steps(steps: int, checkpoints: int) -> list[int]:
    """``checkpoints`` evenly spaced steps from 0 to ``steps`` (fewer when rounding makes some coincide)."""
    return sorted({int(round(k)) for k in np.linspace(0, steps, checkpoints)})


def _kfac_vs_exact(layer, sizes, activation, steps, checkpoints, lr, n, seed, progress=None) -> KFACvsExact:
    model = MLP(list(sizes), activation=activation, runs=1, seed=seed, dtype=torch.float64)
    data = teacher(n=n, sizes=(sizes[0], 16, sizes[-1]), seed=seed + 1, dtype=torch.float64)
    x, y = data.x_train, data.y_train
    marks = checkpoint_steps(steps, checkpoints)
    probe = copy.deepcopy(model)          # measured on a copy at each checkpoint: training goes on untouched
    rows = {"loss": [], "exact": [], "kfac": [], "err": [], "a": [], "s": []}

    def measure(state) -> None:
        probe.load_state_dict(state)
        flat = curvature.flatten(probe)
        G = curvature.gauss_newton(probe, x, "mse")
        exact = curvature.layer_block(G, flat, layer)
        A, S = curvature.kfac_factors(probe, x, y, "mse", curvature="ggn")[layer]
        approx = curvature.kfac_block(A, S)
        with torch.no_grad():
            rows["loss"].append(float(0.5 * (probe(x)[0] - y).pow(2).sum(-1).mean()))
        rows["exact"].append(torch.linalg.eigvalsh(exact).flip(0).cpu().numpy())
        rows["kfac"].append(torch.linalg.eigvalsh(approx).flip(0).cpu().numpy())
        rows["err"].append(float(torch.linalg.matrix_norm(exact - approx) / torch.linalg.matrix_norm(exact)))
        rows["a"].append(torch.linalg.eigvalsh(A).flip(0).cpu().numpy())
        rows["s"].append(torch.linalg.eigvalsh(S).flip(0).cpu().numpy())

    def result() -> KFACvsExact:
        """The checkpoints measured so far (all of them once training is done)."""
        return KFACvsExact(layer, np.array(marks[:len(rows["loss"])]), np.array(rows["loss"]), np.stack(rows["exact"]),
                           np.stack(rows["kfac"]), np.array(rows["err"]), np.stack(rows["a"]), np.stack(rows["s"]))

    def keep(k, m):
        if k + 1 in marks:
            measure(m.state_dict())
            if progress is not None and k + 1 < steps:
                progress((k + 1) / steps, result())

    measure(model.state_dict())
    if progress is not None:
        progress(0.0, result())
    train(model, data, "mse", scale_by_lr(lr), steps=steps, callback=keep)
    return result()


@dataclass
class KFACCheckpoint:
    """One checkpoint (row ``k``) of a :class:`KFACvsExact` run: what the K-FAC panel shows."""

    result: KFACvsExact
    k: int


@cached
@accepts(requires(lambda a: a["checkpoint"] < len(checkpoint_steps(a["steps"], a["checkpoints"])),
                  "checkpoint must be below the number of checkpoints ({checkpoints}), got {checkpoint}"),
         checkpoint=Int(0), steps=Int(1), checkpoints=Int(2), progress=Function(optional=True))
def kfac_checkpoint(layer: str = "linears.0", checkpoint: int = 0, steps: int = 300, checkpoints: int = 11,
                    sizes: tuple = (4, 6, 3), progress=None) -> KFACCheckpoint:
    """:func:`kfac_vs_exact` (cached) for ``layer``, and which of its checkpoints to show. ``progress(fraction,
    partial)``: the checkpoints measured so far, showing the chosen one once training has reached it (until
    then the last one measured)."""
    def partial(fraction, run=None):
        progress(fraction, None if run is None else KFACCheckpoint(run, min(checkpoint, len(run.steps) - 1)))

    run = kfac_vs_exact(layer, sizes=sizes, steps=steps, checkpoints=checkpoints,
                        progress=None if progress is None else partial)
    return KFACCheckpoint(run, checkpoint)


# ----------------------------------------------------------------------------- linear networks
#: The networks :func:`linear_network_blocks` compares (label -> (activation, bias)).
LINEAR_NETWORKS = {"linear, no biases": ("linear", False), "linear, with biases": ("linear", True),
                   "tanh, with biases": ("tanh", True)}


@dataclass
class LinearNetworkBlocks:
    r"""Per layer and network: how far the exact Gauss-Newton block is from K-FAC's :math:`A\otimes S`."""

    sizes: tuple
    layers: list[str]                  # ["linears.0", ...]
    networks: list[str]                # the labels of :data:`LINEAR_NETWORKS`
    relative_error: np.ndarray         # (networks, layers) ||G_ll - A⊗S||_F / ||G_ll||_F, float64


@cached
@accepts(sizes=Sizes(min_len=3), n=Int(2), mean_norm=Real(0.0, 100.0), cond=Real(1.0), seed=Seed())
def linear_network_blocks(sizes=(6, 5, 4, 3), n: int = 64, mean_norm: float = 2.0, cond: float = 10.0,
                          seed: int = 0) -> LinearNetworkBlocks:
    r"""Compare every layer's exact Gauss-Newton block (squared error, output Hessian I) with :math:`A\otimes S`.

    In a network without nonlinearities the derivative of the output with respect to the
    pre-activations :math:`s_\ell` is :math:`J_\ell = W_L\cdots W_{\ell+1}`, the same for every input.
    The back-propagated :math:`\mathcal Ds` (columns of :math:`J_\ell^\top`) is then independent of the
    layer's input :math:`\bar a`, so :math:`\mathbb E[\bar a\bar a^\top\otimes J_\ell^\top J_\ell] =
    A_{\ell-1}\otimes S_\ell` holds exactly, for every layer, with or without biases, for any input
    distribution (here uncentered, correlated inputs :math:`\lVert m\rVert` = ``mean_norm``,
    :math:`\kappa(\Sigma)` = ``cond``). A tanh network of the same sizes shows the error K-FAC makes when
    :math:`\mathcal Ds` does depend on the input. Float64, one random initialization (``seed``).
    """
    x, _, _ = gaussian_inputs(n, sizes[0], mean_norm, cond, seed=seed)
    layers = [f"linears.{i}" for i in range(len(sizes) - 1)]
    errors = []
    for activation, bias in LINEAR_NETWORKS.values():
        model = MLP(list(sizes), activation=activation, runs=1, seed=seed, dtype=torch.float64)
        if not bias:
            for lin in model.linears:
                lin.bias = None          # unregisters the parameter: the layer computes W a
        flat = curvature.flatten(model)
        G = curvature.gauss_newton(model, x, "mse")
        factors = curvature.kfac_factors(model, x, None, "mse", curvature="ggn")
        row = []
        for layer in layers:
            exact = curvature.layer_block(G, flat, layer)
            row.append(float(torch.linalg.matrix_norm(exact - curvature.kfac_block(*factors[layer]))
                             / torch.linalg.matrix_norm(exact)))
        errors.append(row)
    return LinearNetworkBlocks(tuple(sizes), layers, list(LINEAR_NETWORKS), np.array(errors))
