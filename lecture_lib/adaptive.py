r"""Adaptive gradient methods: diagonal preconditioners, the empirical Fisher, weight decay, grafting.

The experiments behind notebook 01 (Lecture 5, Grosse 2022, part 1). Four
questions, one section each:

1. **What do RMSprop and Adam do to a trajectory?** They divide each coordinate
   of the gradient by a running root-mean-square of its past values,

   .. math::
       s \leftarrow \beta s + (1-\beta)\, g \odot g, \qquad
       w \leftarrow w - \alpha\, g \oslash \sqrt{s + \epsilon},

   a *diagonal* preconditioner. :func:`descend` runs any optimizer chain of
   :mod:`lecture_lib.optim` on a gradient oracle; :func:`ill_conditioned_quadratic`
   gives the 2-D valley whose rotation shows that "diagonal" means "in these
   coordinates".
2. **Which Fisher is s?** The running average of :math:`g^2` estimates the
   diagonal of the *empirical* Fisher (labels from the data), not of the true
   Fisher (labels sampled from the model). :func:`fisher_diagonals` computes both
   exactly for logistic regression; they agree at the fitted optimum of a
   well-specified model and differ away from it or under misspecification
   (Kunstner, Balles & Hennig 2019).
3. **L2 regularization or weight decay?** With a preconditioner
   :math:`C`, L2 gives :math:`w \leftarrow (I - \alpha\lambda C^{-1})w - \alpha C^{-1}\nabla J(w)`,
   decoupled decay :math:`w \leftarrow (1 - \alpha\lambda)w - \alpha C^{-1}\nabla J(w)`;
   they coincide only for :math:`C = I`. :func:`regularization_sweep` trains
   both on a small noisy regression, a whole sweep over :math:`\lambda` as one
   batched computation (Loshchilov & Hutter 2019).
4. **Magnitude or direction?** :func:`grafting_experiment` trains an MLP with
   optimizer M, optimizer D and AdaGraft's graft(M, D), whose per-layer step has
   M's norm and D's direction (Agarwal et al. 2020).

Everything here returns tensors, arrays or small dataclasses: no plotting.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ._validate import (check_callable, check_int, check_nonnegative, check_positive, check_range, check_seed,
                        check_sizes, check_tensor, check_unit_interval)
from .optim.base import Transform, apply_updates
from .optim.transforms import ScaleByAdamState

# =========================================================================== 1. trajectories


@dataclass(frozen=True)
class Quadratic:
    r""":math:`J(w) = \tfrac12 (w - w^\star)^\top H (w - w^\star)`, float64."""

    hessian: torch.Tensor   # H, (D, D) symmetric positive definite
    minimum: torch.Tensor   # w*, (D,)

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        """:math:`J(w)` for ``w`` of shape ``(..., D)``."""
        d = w - self.minimum
        return 0.5 * ((d @ self.hessian) * d).sum(-1)

    def grad(self, w: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla J(w) = H (w - w^\star)` for ``w`` of shape ``(..., D)``."""
        return (w - self.minimum) @ self.hessian

    def grid(self, xlim: tuple[float, float], ylim: tuple[float, float], points: int = 80):
        """``(xs, ys, J)`` on a grid, for a contour plot of a 2-D quadratic (numpy)."""
        if self.minimum.numel() != 2:
            raise ValueError("grid() draws 2-D quadratics only")
        xlim, ylim = _interval("xlim", xlim), _interval("ylim", ylim)
        points = check_int("points", points, low=2)
        xs = torch.linspace(*xlim, points, dtype=torch.float64)
        ys = torch.linspace(*ylim, points, dtype=torch.float64)
        w = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        return xs.numpy(), ys.numpy(), self.loss(w).numpy()


def _interval(name: str, value) -> tuple[float, float]:
    """A pair ``(low, high)`` of finite numbers with ``low < high``."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (low, high), got {value!r}")
    low, high = (float(check_range(name, v)) for v in value)
    if not low < high:
        raise ValueError(f"{name} must be a pair (low, high) with low < high, got {value!r}")
    return low, high


def ill_conditioned_quadratic(condition: float = 50.0, angle: float = 0.0, top: float = 1.0) -> Quadratic:
    r"""A 2-D valley with curvatures ``top`` and ``top / condition``, rotated by ``angle`` degrees.

    .. math:: H = R_\theta\, \mathrm{diag}(h/\kappa,\ h)\, R_\theta^\top, \qquad w^\star = 0

    ===============  ===============  ========================================
    argument         symbol           meaning
    ===============  ===============  ========================================
    ``condition``    :math:`\kappa`   ratio of the curvatures, :math:`\ge 1`
    ``angle``        :math:`\theta`   rotation of the valley in degrees
    ``top``          :math:`h`        the largest curvature (the steep side)
    ===============  ===============  ========================================

    At ``angle = 0`` the valley runs along the first coordinate axis, so a
    diagonal preconditioner can undo the ill-conditioning; at 45° it cannot.
    """
    check_range("condition", condition, 1.0)
    check_range("angle", angle, -360.0, 360.0)
    check_positive("top", top)
    theta = math.radians(angle)
    c, s = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    h = rot @ torch.diag(torch.tensor([top / condition, top], dtype=torch.float64)) @ rot.T
    return Quadratic(0.5 * (h + h.T), torch.zeros(2, dtype=torch.float64))


def descend(optimizer: Transform, grad_fn: Callable[[torch.Tensor, int], torch.Tensor],
            w0: torch.Tensor, steps: int, return_state: bool = False):
    r"""Run an optimizer chain on a gradient oracle; return the whole trajectory.

    ``params = {"w": w}`` with ``w`` of shape ``(R, D)``: R runs (e.g. one per
    hyperparameter value, the optimizer's hyperparameters given as ``(R,)``
    tensors) move at once. Each step calls ``grad_fn(w, k)`` (shape ``(R, D)``;
    ``k`` counts steps from 0, so a stochastic oracle can pick minibatch ``k``)
    and applies :math:`w \leftarrow w + u`, where ``u`` is the chain's update.

    Returns the iterates :math:`w_0, \dots, w_K`, shape ``(steps + 1, R, D)``
    (and the optimizer's final state if ``return_state``). Runs that overflow
    keep going as ``inf``/``nan``; callers mark divergence.
    """
    if not isinstance(optimizer, Transform):
        raise TypeError(f"optimizer must be a lecture_lib.optim Transform, got {type(optimizer).__name__}")
    check_callable("grad_fn", grad_fn)
    check_tensor("w0", w0, dim=2)
    steps = check_int("steps", steps, low=0)
    params = {"w": w0.clone()}
    state = optimizer.init(params)
    path = torch.empty((steps + 1, *w0.shape), dtype=w0.dtype, device=w0.device)
    path[0] = w0
    with torch.no_grad():
        for k in range(steps):
            grads = {"w": grad_fn(params["w"], k)}
            if not isinstance(grads["w"], torch.Tensor) or grads["w"].shape != w0.shape:
                raise ValueError(f"grad_fn must return a tensor shaped like w0 {tuple(w0.shape)}, got "
                                 f"{getattr(grads['w'], 'shape', type(grads['w']).__name__)}")
            updates, state = optimizer.update(grads, state, params)
            params = apply_updates(params, updates)
            path[k + 1] = params["w"]
    return (path, state) if return_state else path


def diverged_at(values: np.ndarray, limit: float = 1e6) -> np.ndarray:
    """First index along axis 0 where a run's value is non-finite or above ``limit`` (``-1`` if never).

    ``values`` has shape ``(K, R)``; the result has shape ``(R,)`` (int).
    """
    check_positive("limit", limit)
    try:
        values = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"values must be an array of numbers, got {type(values).__name__}") from None
    if values.ndim != 2:
        raise ValueError(f"values must have shape (K, R), got {values.shape}")
    bad = ~np.isfinite(values) | (np.abs(values) > limit)
    first = np.where(bad.any(axis=0), bad.argmax(axis=0), -1)
    return first.astype(int)


# =========================================================================== 2. empirical vs true Fisher


@dataclass(frozen=True)
class LogisticProblem:
    """Binary classification data for logistic regression :math:`p(t=1\\mid x) = \\sigma(w^\\top x)` (float64)."""

    x: torch.Tensor           # (n, D) inputs
    t: torch.Tensor           # (n,) labels in {0, 1} (float64)
    w_opt: torch.Tensor       # (D,) maximum-likelihood weights fitted to (x, t)
    w_true: torch.Tensor      # (D,) weights that generated the clean labels
    misspecified: bool


def _check_logistic_data(x, t) -> None:
    """Inputs ``x`` ``(n, D)`` and labels ``t`` ``(n,)`` in {0, 1}, finite."""
    check_tensor("x", x, dim=2)
    check_tensor("t", t, dim=1)
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"t must hold one label per row of x ({x.shape[0]}), got shape {tuple(t.shape)}")
    if not bool(((t == 0) | (t == 1)).all()):
        raise ValueError("t must hold labels 0 or 1")


def fit_logistic(x: torch.Tensor, t: torch.Tensor, iterations: int = 50, tol: float = 1e-12) -> torch.Tensor:
    r"""Maximum-likelihood logistic regression (no bias) by Newton's method, float64.

    .. math:: w \leftarrow w - H^{-1} \nabla J(w), \quad
        \nabla J = \tfrac1n X^\top(\sigma(Xw) - t), \quad
        H = \tfrac1n X^\top \mathrm{diag}(p(1-p)) X

    Stops when the gradient norm is below ``tol``. Raises ``ValueError`` if the
    data are linearly separable (the optimum is at infinity).
    """
    _check_logistic_data(x, t)
    check_positive("tol", tol)
    x, t = x.double(), t.double()
    w = torch.zeros(x.shape[1], dtype=torch.float64)
    for _ in range(check_int("iterations", iterations)):
        p = torch.sigmoid(x @ w)
        if bool(((2 * t - 1) * (x @ w) > 0).all()):
            break  # w separates the classes: the likelihood has no maximum
        grad = x.T @ (p - t) / len(t)
        if grad.norm() < tol:
            return w
        hess = (x * (p * (1 - p))[:, None]).T @ x / len(t)
        try:
            w = w - torch.linalg.solve(hess, grad)
        except RuntimeError:  # singular Hessian: saturated predictions
            break
    p = torch.sigmoid(x @ w)
    if (not torch.isfinite(w).all() or bool(((2 * t - 1) * (x @ w) > 0).all())
            or (x.T @ (p - t) / len(t)).norm() > 1e-6):
        raise ValueError("logistic regression did not converge: are the data linearly separable?")
    return w


def logistic_problem(n: int = 20000, dim: int = 8, misspecified: bool = False, outlier_fraction: float = 0.1,
                     outlier_spread: float = 3.0, seed: int = 0) -> LogisticProblem:
    r"""Logistic-regression data, well specified or not, with the fitted optimum.

    Inputs :math:`x \sim \mathcal N(0, \mathrm{diag}(\sigma_1^2, \dots, \sigma_D^2))` with feature
    scales :math:`\sigma_j` spread log-uniformly over ``[0.1, 1]`` (so the Fisher
    diagonal spans two decades), labels :math:`t \sim \mathrm{Bernoulli}(\sigma(w_\text{true}^\top x))`.

    ``misspecified=True`` replaces a fraction ``outlier_fraction`` of the
    examples by outliers: inputs ``outlier_spread`` times wider and labels that
    are fair coin flips. No logistic model produces such labels: its confidence
    grows with :math:`|w^\top x|`, whereas here the widest inputs are the
    least predictable.
    """
    n, dim = check_int("n", n, low=10), check_int("dim", dim)
    check_range("outlier_fraction", outlier_fraction, 0.0, 0.5)
    check_range("outlier_spread", outlier_spread, 1.0, 100.0)
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    scales = torch.logspace(0, -1, dim, dtype=torch.float64)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) * scales
    w_true = torch.randn(dim, generator=g, dtype=torch.float64) / scales * (2.0 / math.sqrt(dim))
    q = torch.sigmoid(x @ w_true)
    outlier = torch.rand(n, generator=g, dtype=torch.float64) < outlier_fraction
    if misspecified:
        x = torch.where(outlier[:, None], x * outlier_spread, x)
        q = torch.where(outlier, torch.full_like(q, 0.5), q)
    t = (torch.rand(n, generator=g, dtype=torch.float64) < q).double()
    return LogisticProblem(x, t, fit_logistic(x, t), w_true, bool(misspecified))


@dataclass(frozen=True)
class FisherDiagonals:
    """Diagonals of the empirical and the true Fisher at one weight vector (float64, shape (D,))."""

    empirical: torch.Tensor
    true: torch.Tensor

    @property
    def relative_difference(self) -> float:
        r""":math:`\lVert \mathrm{diag} F_\text{emp} - \mathrm{diag} F \rVert / \lVert \mathrm{diag} F \rVert`."""
        return float((self.empirical - self.true).norm() / self.true.norm())


def fisher_diagonals(x: torch.Tensor, t: torch.Tensor, w: torch.Tensor, samples: int | None = None,
                     seed: int = 0) -> FisherDiagonals:
    r"""Diagonals of the empirical and the true Fisher of logistic regression at ``w`` (float64).

    With :math:`p_i = \sigma(w^\top x_i)`, the per-example gradient of the
    negative log-likelihood is :math:`(p_i - t_i)\, x_i`, so

    .. math::
        \mathrm{diag}\,F_\text{emp} = \frac1n \sum_i (p_i - t_i)^2\, x_i \odot x_i
        \quad\text{(labels } t_i \text{ from the data)},

        \mathrm{diag}\,F = \frac1n \sum_i \mathbb E_{\tilde t \sim \mathrm{Bern}(p_i)}
        (p_i - \tilde t)^2\, x_i \odot x_i = \frac1n \sum_i p_i (1 - p_i)\, x_i \odot x_i
        \quad\text{(labels sampled from the model)}.

    The expectation is exact unless ``samples`` is given, in which case it is
    estimated from that many sampled label vectors (what one does for networks).
    For logistic regression the true Fisher equals the Hessian of the mean
    negative log-likelihood exactly (canonical link). Per example, the
    expected gap is :math:`(q_i - p_i)(1 - 2p_i)\,x_i^2` where :math:`q_i` is the
    data's label probability: zero when the model is calibrated (:math:`p = q`).

    Reference: Kunstner, Balles & Hennig, "Limitations of the empirical Fisher
    approximation for natural gradient descent", NeurIPS 2019; Martens, "New
    insights and perspectives on the natural gradient method", JMLR 2020.
    """
    check_tensor("x", x, dim=2)
    check_tensor("t", t, dim=1)
    check_tensor("w", w, dim=1)
    x, t, w = x.double(), t.double(), w.double()
    if x.shape[0] != t.shape[0] or x.shape[1] != w.shape[0]:
        raise ValueError(f"shapes do not match: x {tuple(x.shape)}, t {tuple(t.shape)}, w {tuple(w.shape)}")
    p = torch.sigmoid(x @ w)
    x2 = x * x
    empirical = ((p - t) ** 2) @ x2 / len(t)
    check_seed("seed", seed)
    if samples is None:
        true = (p * (1 - p)) @ x2 / len(t)
    else:
        samples = check_int("samples", samples)
        g = torch.Generator().manual_seed(check_seed("seed", seed))
        t_model = (torch.rand(samples, len(p), generator=g, dtype=torch.float64) < p).double()
        true = ((p - t_model) ** 2).mean(0) @ x2 / len(t)
    return FisherDiagonals(empirical, true)


def away_direction(dim: int, seed: int = 1) -> torch.Tensor:
    """A fixed random unit vector (float64): the direction in which :func:`fisher_along_path` walks away."""
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    d = torch.randn(check_int("dim", dim), generator=g, dtype=torch.float64)
    return d / d.norm()


def point_away(problem: LogisticProblem, distance: float, direction: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`w = w_\text{opt} + r\,\lVert w_\text{opt}\rVert\, u`: ``distance`` :math:`r` in units of the optimum's norm."""
    check_nonnegative("distance", distance)
    if direction is not None:
        check_tensor("direction", direction, shape=(problem.w_opt.numel(),))
    u = away_direction(problem.w_opt.numel()) if direction is None else direction.to(torch.float64)
    return problem.w_opt + distance * problem.w_opt.norm() * u


@dataclass(frozen=True)
class FisherPath:
    """Both Fisher diagonals along a path away from the optimum: ``(S, D)`` arrays and ``(S,)`` distances."""

    distances: np.ndarray
    empirical: np.ndarray
    true: np.ndarray

    @property
    def relative_difference(self) -> np.ndarray:
        return np.linalg.norm(self.empirical - self.true, axis=1) / np.linalg.norm(self.true, axis=1)


def fisher_along_path(problem: LogisticProblem, distances, direction: torch.Tensor | None = None) -> FisherPath:
    """:func:`fisher_diagonals` at :func:`point_away` for every distance in ``distances``."""
    try:
        distances = np.asarray(distances, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"distances must be a sequence of numbers, got {distances!r}") from None
    if distances.ndim != 1 or distances.size == 0:
        raise ValueError("distances must be a non-empty 1-D sequence")
    check_nonnegative("distances", torch.as_tensor(distances))
    emp, true = [], []
    for r in distances:
        f = fisher_diagonals(problem.x, problem.t, point_away(problem, float(r), direction))
        emp.append(f.empirical.numpy())
        true.append(f.true.numpy())
    return FisherPath(distances, np.stack(emp), np.stack(true))


# =========================================================================== 3. L2 vs decoupled weight decay


@dataclass(frozen=True)
class RegressionProblem:
    r"""Least squares :math:`J(w) = \frac{1}{2n}\lVert Xw - y\rVert^2` on fixed data (float64)."""

    x: torch.Tensor   # (n, D)
    y: torch.Tensor   # (n,)

    @property
    def hessian(self) -> torch.Tensor:
        return self.x.T @ self.x / len(self.y)

    @property
    def least_squares(self) -> torch.Tensor:
        """The unregularized minimizer."""
        return torch.linalg.solve(self.hessian, self.x.T @ self.y / len(self.y))

    def ridge(self, weight_decay: float) -> torch.Tensor:
        r"""Minimizer of :math:`J(w) + \frac\lambda2\lVert w\rVert^2`: where SGD and any L2-regularized method settle."""
        check_nonnegative("weight_decay", weight_decay)
        h = self.hessian + weight_decay * torch.eye(self.x.shape[1], dtype=self.x.dtype)
        return torch.linalg.solve(h, self.x.T @ self.y / len(self.y))

    def preconditioned_ridge(self, weight_decay: float, preconditioner: torch.Tensor) -> torch.Tensor:
        r"""Minimizer of :math:`J(w) + \frac\lambda2 w^\top C w` for a diagonal :math:`C` (given as its diagonal).

        Where decoupled weight decay with a *fixed* preconditioner :math:`C` settles:
        :math:`w \leftarrow (1-\alpha\lambda) w - \alpha C^{-1}\nabla J(w)` stops moving
        when :math:`\nabla J(w) + \lambda C w = 0`. For AdamW, :math:`C = \mathrm{diag}(\sqrt{\hat s} + \epsilon)`.
        """
        check_nonnegative("weight_decay", weight_decay)
        try:
            c = torch.as_tensor(preconditioner, dtype=self.x.dtype)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"preconditioner must be a tensor (the diagonal of C), got {preconditioner!r}") from None
        if c.shape != (self.x.shape[1],):
            raise ValueError(f"preconditioner must be the diagonal of C, shape ({self.x.shape[1]},), got {tuple(c.shape)}")
        check_positive("preconditioner", c)
        h = self.hessian + weight_decay * torch.diag(c)
        return torch.linalg.solve(h, self.x.T @ self.y / len(self.y))

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        """:math:`J(w)` for ``w`` of shape ``(..., D)``."""
        r = w @ self.x.T - self.y
        return 0.5 * (r * r).mean(-1)

    def minibatch_grad(self, batch_size: int, seed: int = 0) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """A gradient oracle for :func:`descend`: step ``k`` uses minibatch ``k`` (the same for every run)."""
        n = len(self.y)
        batch_size = check_int("batch_size", batch_size, high=n)
        g = torch.Generator().manual_seed(check_seed("seed", seed))
        batches: list[torch.Tensor] = []

        def grad(w: torch.Tensor, k: int) -> torch.Tensor:
            while len(batches) <= k:  # sample without replacement within each epoch
                perm = torch.randperm(n, generator=g)
                batches.extend(perm[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size))
            idx = batches[k]
            xb, yb = self.x[idx], self.y[idx]
            return (w @ xb.T - yb) @ xb / batch_size

        return grad


def regression_problem(n: int = 256, scales: tuple[float, ...] = (1.0, 0.2), w_true: tuple[float, ...] = (1.0, 2.5),
                       noise: float = 0.5, seed: int = 0) -> RegressionProblem:
    r"""A small linear regression :math:`y = w_\text{true}^\top x + \text{noise}` with features of unequal scale.

    Feature :math:`j` has standard deviation ``scales[j]``, so the Hessian
    :math:`\approx \mathrm{diag}(\text{scales}^2)` is ill-conditioned and the
    minibatch gradients of the coordinates differ in size: exactly what Adam's
    per-coordinate normalization reacts to.
    """
    for name, v in (("scales", scales), ("w_true", w_true)):
        if isinstance(v, (str, bytes)) or not hasattr(v, "__len__") or len(v) == 0:
            raise TypeError(f"{name} must be a non-empty sequence of numbers, got {v!r}")
    if len(scales) != len(w_true):
        raise ValueError(f"scales and w_true must have the same length, got {len(scales)} and {len(w_true)}")
    for j, s in enumerate(scales):
        check_positive(f"scales[{j}]", s)
    for j, w in enumerate(w_true):
        check_range(f"w_true[{j}]", w)
    check_nonnegative("noise", noise)
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    s = torch.tensor(scales, dtype=torch.float64)
    x = torch.randn(check_int("n", n, low=2), len(scales), generator=g, dtype=torch.float64) * s
    y = x @ torch.tensor(w_true, dtype=torch.float64) + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return RegressionProblem(x, y)


@dataclass(frozen=True)
class RegularizationSweep:
    """Trajectories of several optimizers over a grid of weight decays (float64 numpy arrays).

    ``paths[name]`` has shape ``(K + 1, R, D)`` for the ``R = len(weight_decays)``
    runs of optimizer ``name``; ``final[name]`` ``(R, D)`` averages the last
    quarter of the iterates (the runs are noisy: SGD-type methods never settle
    exactly with a constant learning rate).
    """

    weight_decays: np.ndarray
    paths: dict[str, np.ndarray]
    final: dict[str, np.ndarray]
    ridge: np.ndarray            # (R, D): minimizer of J + (λ/2)‖w‖² for every λ
    least_squares: np.ndarray    # (D,)
    diverged_at: dict[str, np.ndarray]  # name -> (R,) first diverged step or -1
    preconditioner: dict[str, np.ndarray]  # name -> (R, D) Adam's final diag C = sqrt(s_hat) + eps (Adam chains only)
    decoupled_prediction: dict[str, np.ndarray]  # name -> (R, D) minimizer of J + (λ/2) wᵀCw with that C


def regularization_sweep(problem: RegressionProblem, optimizers: Mapping[str, Callable[[torch.Tensor], Transform]],
                         weight_decays, steps: int = 400, batch_size: int = 8, w0=(0.0, 0.0),
                         seed: int = 0) -> RegularizationSweep:
    r"""Train each optimizer from the same start for every weight decay at once, on the same minibatches.

    ``optimizers[name](weight_decay)`` builds the chain for an ``(R,)`` tensor
    of weight decays (e.g. ``lambda wd: optim.adam(lr, weight_decay=wd)``), so
    the whole :math:`\lambda` sweep of one optimizer is one batched run.
    """
    try:
        wds = torch.as_tensor(np.asarray(weight_decays, dtype=float), dtype=torch.float64)
    except (TypeError, ValueError):
        raise TypeError(f"weight_decays must be a sequence of numbers, got {weight_decays!r}") from None
    if wds.dim() != 1 or wds.numel() == 0:
        raise ValueError("weight_decays must be a non-empty 1-D sequence")
    check_nonnegative("weight_decays", wds)
    try:
        start = torch.as_tensor(np.asarray(w0, dtype=float), dtype=torch.float64)
    except (TypeError, ValueError):
        raise TypeError(f"w0 must be a sequence of numbers, got {w0!r}") from None
    if start.shape != (problem.x.shape[1],):
        raise ValueError(f"w0 must have {problem.x.shape[1]} entries (the problem's features), got shape "
                         f"{tuple(start.shape)}")
    check_tensor("w0", start)
    start = start.expand(len(wds), -1).clone()
    steps = check_int("steps", steps, low=0)
    paths, final, div, precond, predicted = {}, {}, {}, {}, {}
    for name, make in optimizers.items():
        path, state = descend(make(wds), problem.minibatch_grad(batch_size, seed), start, steps, return_state=True)
        arr = path.numpy()
        paths[name] = arr
        final[name] = arr[-max(1, steps // 4):].mean(axis=0)
        div[name] = diverged_at(np.abs(arr).max(axis=2))
        c = adam_preconditioner(state)
        if c is not None:
            c = c["w"]
            precond[name] = c.numpy()
            predicted[name] = np.stack([problem.preconditioned_ridge(float(wd), c[r]).numpy()
                                        for r, wd in enumerate(wds)])
    ridge = np.stack([problem.ridge(float(wd)).numpy() for wd in wds])
    return RegularizationSweep(wds.numpy(), paths, final, ridge, problem.least_squares.numpy(), div, precond,
                               predicted)


def _find_state(state, kind):
    if isinstance(state, kind):
        return state
    if isinstance(state, tuple):  # chains hold tuples of states; NamedTuple states hold their fields
        for s in state:
            found = _find_state(s, kind)
            if found is not None:
                return found
    return None


def adam_preconditioner(state, beta2: float = 0.999, eps: float = 1e-8) -> dict[str, torch.Tensor] | None:
    r"""The diagonal of Adam's current preconditioner :math:`C = \sqrt{\hat s} + \epsilon` from an optimizer state.

    :math:`\hat s = s / (1 - \beta_2^t)` is the bias-corrected running average of
    :math:`g^2`: an estimate of the diagonal of the empirical Fisher (of minibatch
    gradients). Searches a chain's state for Adam's; returns ``None`` if there is none.
    ``beta2`` and ``eps`` must be the values the optimizer was built with.
    """
    check_unit_interval("beta2", beta2)
    check_nonnegative("eps", eps)
    adam_state = _find_state(state, ScaleByAdamState)
    if adam_state is None or adam_state.step == 0:
        return None
    correction = 1 - beta2 ** adam_state.step
    return {k: torch.sqrt(s / correction) + eps for k, s in adam_state.s.items()}


# =========================================================================== 4. grafting

#: The learning rate each optimizer gets in :func:`grafting_experiment` unless told otherwise.
DEFAULT_LR = {"sgd": 0.1, "rmsprop": 1e-3, "adam": 1e-3}


def make_optimizer(name: str, lr: float | None = None) -> Transform:
    """``sgd``, ``rmsprop`` or ``adam`` from :mod:`lecture_lib.optim` with its default α from :data:`DEFAULT_LR`."""
    from . import optim
    if name not in DEFAULT_LR:
        raise ValueError(f"optimizer must be one of {', '.join(repr(k) for k in DEFAULT_LR)}; got {name!r}")
    return optim.get(name, lr=DEFAULT_LR[name] if lr is None else check_positive("lr", lr))


def step_comparison(magnitude: Transform, direction: Transform, grads: dict, state, params: dict) -> torch.Tensor:
    r"""Per-tensor norms of the grafted, M's and D's steps on the same gradient, and the cosine to D.

    ``state`` is a :class:`~lecture_lib.optim.grafting.GraftState` (it holds M's
    and D's states). Returns ``(R, P, 4)``: for every run and parameter tensor
    :math:`[\lVert u\rVert, \lVert u_M\rVert, \lVert u_D\rVert, \cos(u, u_D)]` with
    :math:`u = \frac{\lVert u_M\rVert}{\lVert u_D\rVert + \epsilon} u_D`. Pure: the
    states are not advanced.
    """
    u_m, _ = magnitude.update(grads, state.magnitude, params)
    u_d, _ = direction.update(grads, state.direction, params)
    rows = []
    for k in grads:
        m, d = u_m[k].flatten(1), u_d[k].flatten(1)
        m_norm, d_norm = m.norm(dim=1), d.norm(dim=1)
        u = (m_norm / (d_norm + 1e-16)).unsqueeze(1) * d
        cos = (u * d).sum(1) / (u.norm(dim=1) * d_norm).clamp_min(1e-300)
        rows.append(torch.stack([u.norm(dim=1), m_norm, d_norm, cos], dim=1))
    return torch.stack(rows, dim=1)


@dataclass
class GraftingResult:
    """Three trainings of the same MLP from the same start: M alone, D alone, graft(M, D).

    ``records[label]`` are :class:`~lecture_lib.record.Record` s (labels
    ``"M = sgd"``, ``"D = adam"``, ``"graft(sgd, adam)"``); ``step_norms`` holds, along
    the grafted run, ``(K, P)`` arrays ``"graft"``, ``"M"``, ``"D"`` of per-tensor step
    norms (M and D evaluated on the grafted run's own gradients and states) and
    ``"cos_D"``, the cosine between the grafted step and D's.
    """

    magnitude: str
    direction: str
    steps: np.ndarray
    records: dict
    layer_names: list[str]
    step_norms: dict[str, np.ndarray]


def grafting_experiment(magnitude: str = "sgd", direction: str = "adam", steps: int = 300, batch_size: int = 64,
                        sizes=(64, 64, 64, 10), lr_magnitude: float | None = None,
                        lr_direction: float | None = None, record_every: int = 5, data=None,
                        seed: int = 0, progress: Callable[[float], None] | None = None) -> GraftingResult:
    r"""AdaGraft on an MLP: train M, D and graft(M, D) on the same minibatches from the same start.

    .. math:: w \leftarrow w + \frac{\lVert u_M \rVert}{\lVert u_D \rVert + \epsilon}\, u_D
        \qquad\text{per parameter tensor (layer)}

    where :math:`u_M, u_D` are the steps M and D (each with its own learning
    rate, :data:`DEFAULT_LR` by default) would take from the current weights.
    ``data`` defaults to the digits (:func:`lecture_lib.data.digits`); the loss is
    cross-entropy. ``progress(fraction)`` is called after each of the three runs.

    Reference: Agarwal, Anil, Hazan, Koren & Zhang, "Disentangling Adaptive Gradient
    Methods from Learning Rates", arXiv:2002.11803, 2020 (Algorithm 2, AdaGraft).
    """
    from . import data as data_mod
    from . import engine, models, optim

    steps = check_int("steps", steps, low=2)
    for name, lr in (("lr_magnitude", lr_magnitude), ("lr_direction", lr_direction)):
        if lr is not None:
            check_positive(name, lr)
    ds = data_mod.digits() if data is None else data
    sizes = check_sizes("sizes", sizes)
    if sizes[0] != ds.n_features or sizes[-1] != ds.n_outputs:
        raise ValueError(f"sizes must start with the data's {ds.n_features} features and end with its "
                         f"{ds.n_outputs} classes, got {sizes}")
    m_opt = make_optimizer(magnitude, lr_magnitude)
    d_opt = make_optimizer(direction, lr_direction)
    grafted = optim.graft(m_opt, d_opt)

    def model():
        return models.MLP(list(sizes), runs=1, seed=seed)

    def track(_model, params, grads, state):
        return step_comparison(m_opt, d_opt, grads, state, params)

    common = dict(data=ds, loss="cross_entropy", steps=steps, batch_size=batch_size, seed=seed,
                  record_every=record_every)
    records = {}
    labels = (f"M = {magnitude}", f"D = {direction}", f"graft({magnitude}, {direction})")
    for i, (label, opt) in enumerate(zip(labels, (make_optimizer(magnitude, lr_magnitude),
                                                   make_optimizer(direction, lr_direction), grafted))):
        net = model()
        records[label] = engine.train(net, optimizer=opt, track={"steps": track} if i == 2 else None, **common)
        if progress is not None:
            progress((i + 1) / 3)
    rec = records[labels[2]]
    layer_names = [n for n, _ in model().named_parameters()]
    comp = rec.extras["steps"][:, 0]  # (K, P, 4), run 0
    norms = {"graft": comp[..., 0], "M": comp[..., 1], "D": comp[..., 2], "cos_D": comp[..., 3]}
    return GraftingResult(magnitude, direction, rec.steps, records, layer_names, norms)
