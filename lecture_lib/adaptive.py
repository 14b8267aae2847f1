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
   they coincide only for :math:`C = I`. :class:`RegressionProblem` gives the
   fixed points of both (:meth:`~RegressionProblem.ridge`,
   :meth:`~RegressionProblem.preconditioned_ridge`) (Loshchilov & Hutter 2019).
4. **Magnitude or direction?** AdaGraft's graft(M, D) takes a per-layer step
   with M's norm and D's direction (Agarwal et al. 2020);
   :func:`step_comparison` measures both on one gradient.

The experiments that train and sweep (the notebook's panels) live in
:mod:`lecture_lib.experiments.adaptive`. Public functions declare their
parameters with :func:`~lecture_lib._validate.accepts`; the bodies hold the math.
Everything here returns tensors, arrays or small dataclasses: no plotting.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ._validate import Function, Instance, Int, NonNegative, Positive, Real, Seed, Tensor, Unit, Where, accepts
from .optim.base import Transform, apply_updates, find_state
from .optim.transforms import ScaleByAdamState


# A relation between parameters (checked after each parameter's own declaration) in one line:
# ``@accepts(requires(lambda a: len(a['t']) == len(a['x']), 't must hold one label per row of x'), ...)``.
def requires(holds: Callable[[dict], bool], message: str) -> Callable[[dict], None]:
    """A relation between parameters for :func:`~lecture_lib._validate.accepts`: unless ``holds(arguments)``,
    raise ``ValueError(message)`` with ``message`` formatted by the arguments (it names the parameters)."""
    def relation(arguments):
        if not holds(arguments):
            raise ValueError(message.format(**arguments))
    return relation


# =========================================================================== 1. trajectories


def _interval(name: str) -> Callable[[dict], None]:
    return requires(lambda a: isinstance(a[name], (tuple, list)) and len(a[name]) == 2 and a[name][0] < a[name][1],
                    name + " must be a pair (low, high) with low < high, got {" + name + "!r}")


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

    @accepts(requires(lambda a: a["self"].minimum.numel() == 2, "grid() draws 2-D quadratics only"),
             _interval("xlim"), _interval("ylim"), xlim=Real(sequences=True), ylim=Real(sequences=True), points=Int(2))
    def grid(self, xlim: tuple[float, float], ylim: tuple[float, float], points: int = 80):
        """``(xs, ys, J)`` on a grid, for a contour plot of a 2-D quadratic (numpy)."""
        xs = torch.linspace(*xlim, points, dtype=torch.float64)
        ys = torch.linspace(*ylim, points, dtype=torch.float64)
        w = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        return xs.numpy(), ys.numpy(), self.loss(w).numpy()


@accepts(condition=Real(1.0), angle=Real(-360.0, 360.0), top=Positive())
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
    theta = math.radians(angle)
    c, s = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    h = rot @ torch.diag(torch.tensor([top / condition, top], dtype=torch.float64)) @ rot.T
    return Quadratic(0.5 * (h + h.T), torch.zeros(2, dtype=torch.float64))


@accepts(optimizer=Instance(Transform), grad_fn=Function(), w0=Tensor(dim=2), steps=Int(0),
         report=Function(optional=True))
def descend(optimizer: Transform, grad_fn: Callable[[torch.Tensor, int], torch.Tensor],
            w0: torch.Tensor, steps: int, return_state: bool = False,
            report: Callable[[int, int, Callable[[], torch.Tensor]], None] | None = None):
    r"""Run an optimizer chain on a gradient oracle; return the whole trajectory.

    ``params = {"w": w}`` with ``w`` of shape ``(R, D)``: R runs (e.g. one per
    hyperparameter value, the optimizer's hyperparameters given as ``(R,)``
    tensors) move at once. Each step calls ``grad_fn(w, k)`` (shape ``(R, D)``;
    ``k`` counts steps from 0, so a stochastic oracle can pick minibatch ``k``)
    and applies :math:`w \leftarrow w + u`, where ``u`` is the chain's update.

    Returns the iterates :math:`w_0, \dots, w_K`, shape ``(steps + 1, R, D)``
    (and the optimizer's final state if ``return_state``). Runs that overflow
    keep going as ``inf``/``nan``; callers mark divergence. ``report(done, steps, so_far)``
    after every step, as :func:`lecture_lib.engine.train` does: ``so_far()`` is the iterates so far,
    ``(done + 1, R, D)``, for a panel that draws the paths as they grow.
    """
    params = {"w": w0.clone()}
    state = optimizer.init(params)
    path = torch.empty((steps + 1, *w0.shape), dtype=w0.dtype, device=w0.device)
    path[0] = w0
    with torch.no_grad():
        for k in range(steps):
            grads = {"w": _oracle(grad_fn, params["w"], k)}
            updates, state = optimizer.update(grads, state, params)
            params = apply_updates(params, updates)
            path[k + 1] = params["w"]
            if report is not None:
                report(k + 1, steps, lambda: path[:k + 2].clone())
    return (path, state) if return_state else path


def _oracle(grad_fn, w: torch.Tensor, k: int) -> torch.Tensor:
    """``grad_fn(w, k)``, which must be shaped like ``w`` (a user's oracle is checked where it answers)."""
    g = grad_fn(w, k)
    if not isinstance(g, torch.Tensor) or g.shape != w.shape:
        raise ValueError(f"grad_fn must return a tensor shaped like w0 {tuple(w.shape)}, got "
                         f"{getattr(g, 'shape', type(g).__name__)}")
    return g


def _runs_by_steps(name: str, values) -> np.ndarray:
    """A ``(K, R)`` array of numbers."""
    try:
        values = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of numbers, got {type(values).__name__}") from None
    if values.ndim != 2:
        raise ValueError(f"{name} must have shape (K, R), got {values.shape}")
    return values


@accepts(values=Where(_runs_by_steps, bad=("v", np.ones(3))), limit=Positive())
def diverged_at(values: np.ndarray, limit: float = 1e6) -> np.ndarray:
    """First index along axis 0 where a run's value is non-finite or above ``limit`` (``-1`` if never).

    ``values`` has shape ``(K, R)``; the result has shape ``(R,)`` (int).
    """
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


_LABELS_0_OR_1 = requires(lambda a: bool(((a["t"] == 0) | (a["t"] == 1)).all()), "t must hold labels 0 or 1")
_ONE_LABEL_PER_ROW = requires(lambda a: len(a["t"]) == len(a["x"]),
                              "t must hold one label per row of x ({x.shape[0]}), got shape {t.shape}")


@accepts(_LABELS_0_OR_1, _ONE_LABEL_PER_ROW, x=Tensor(dim=2), t=Tensor(dim=1), iterations=Int(1), tol=Positive())
def fit_logistic(x: torch.Tensor, t: torch.Tensor, iterations: int = 50, tol: float = 1e-12) -> torch.Tensor:
    r"""Maximum-likelihood logistic regression (no bias) by Newton's method, float64.

    .. math:: w \leftarrow w - H^{-1} \nabla J(w), \quad
        \nabla J = \tfrac1n X^\top(\sigma(Xw) - t), \quad
        H = \tfrac1n X^\top \mathrm{diag}(p(1-p)) X

    Stops when the gradient norm is below ``tol``. Raises ``ValueError`` if the
    data are linearly separable (the optimum is at infinity).
    """
    x, t = x.double(), t.double()
    w = torch.zeros(x.shape[1], dtype=torch.float64)
    for _ in range(iterations):
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


@accepts(n=Int(10), dim=Int(1), outlier_fraction=Real(0.0, 0.5), outlier_spread=Real(1.0, 100.0), seed=Seed())
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
    g = torch.Generator().manual_seed(seed)
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


@accepts(requires(lambda a: len(a["t"]) == len(a["x"]) and len(a["w"]) == a["x"].shape[1],
                  "shapes do not match: x {x.shape}, t {t.shape}, w {w.shape}"),
         x=Tensor(dim=2), t=Tensor(dim=1), w=Tensor(dim=1), samples=Int(1, optional=True),
         seed=Seed())
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
    x, t, w = x.double(), t.double(), w.double()
    p = torch.sigmoid(x @ w)
    x2 = x * x
    empirical = ((p - t) ** 2) @ x2 / len(t)
    if samples is None:
        true = (p * (1 - p)) @ x2 / len(t)
    else:
        g = torch.Generator().manual_seed(seed)
        t_model = (torch.rand(samples, len(p), generator=g, dtype=torch.float64) < p).double()
        true = ((p - t_model) ** 2).mean(0) @ x2 / len(t)
    return FisherDiagonals(empirical, true)


@accepts(dim=Int(1), seed=Seed())
def away_direction(dim: int, seed: int = 1) -> torch.Tensor:
    """A fixed random unit vector (float64): the direction in which :func:`point_away` walks away by default."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(dim, generator=g, dtype=torch.float64)
    return d / d.norm()


@accepts(requires(lambda a: a["direction"] is None or len(a["direction"]) == len(a["problem"].w_opt),
                  "direction must have one entry per weight ({problem.w_opt.shape}), got shape {direction.shape}"),
         distance=NonNegative(), direction=Tensor(dim=1, optional=True))
def point_away(problem: LogisticProblem, distance: float, direction: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`w = w_\text{opt} + r\,\lVert w_\text{opt}\rVert\, u`: ``distance`` :math:`r` in units of the optimum's norm."""
    u = away_direction(problem.w_opt.numel()) if direction is None else direction.to(torch.float64)
    return problem.w_opt + distance * problem.w_opt.norm() * u


# =========================================================================== 3. L2 vs decoupled weight decay


def numbers(name: str, value, low: float = -math.inf, low_open: bool = False) -> list:
    """A non-empty sequence of finite numbers, each ``>= low`` (``> low`` when ``low_open``), as a list."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise TypeError(f"{name} must be a non-empty sequence of numbers, got {value!r}")
    return Real(low, low_open=low_open, sequences=True).check(name, list(value), {})


NUMBERS = Where(numbers, bad=((1.0, math.nan), (), "ab", 1.0))
NUMBERS_POSITIVE = Where(lambda name, v: numbers(name, v, 0.0, low_open=True),
                         bad=((1.0, -0.2), (1.0, math.nan), (0.0,), (), "ab"))


_POSITIVE_DIAGONAL = requires(lambda a: len(a["preconditioner"]) == a["self"].x.shape[1]
                              and bool((a["preconditioner"] > 0).all()),
                              "preconditioner must be the positive diagonal of C, one entry per feature "
                              "({self.x.shape[1]}), got {preconditioner}")


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

    @accepts(weight_decay=NonNegative())
    def ridge(self, weight_decay: float) -> torch.Tensor:
        r"""Minimizer of :math:`J(w) + \frac\lambda2\lVert w\rVert^2`: where SGD and any L2-regularized method settle."""
        h = self.hessian + weight_decay * torch.eye(self.x.shape[1], dtype=self.x.dtype)
        return torch.linalg.solve(h, self.x.T @ self.y / len(self.y))

    @accepts(_POSITIVE_DIAGONAL, weight_decay=NonNegative(), preconditioner=Tensor(dim=1))
    def preconditioned_ridge(self, weight_decay: float, preconditioner: torch.Tensor) -> torch.Tensor:
        r"""Minimizer of :math:`J(w) + \frac\lambda2 w^\top C w` for a diagonal :math:`C` (given as its diagonal).

        Where decoupled weight decay with a *fixed* preconditioner :math:`C` settles:
        :math:`w \leftarrow (1-\alpha\lambda) w - \alpha C^{-1}\nabla J(w)` stops moving
        when :math:`\nabla J(w) + \lambda C w = 0`. For AdamW, :math:`C = \mathrm{diag}(\sqrt{\hat s} + \epsilon)`.
        """
        h = self.hessian + weight_decay * torch.diag(preconditioner.to(self.x.dtype))
        return torch.linalg.solve(h, self.x.T @ self.y / len(self.y))

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        """:math:`J(w)` for ``w`` of shape ``(..., D)``."""
        r = w @ self.x.T - self.y
        return 0.5 * (r * r).mean(-1)

    def grad(self, w: torch.Tensor, k: int = 0) -> torch.Tensor:
        r""":math:`\nabla J(w)` on the whole data set for ``w`` of shape ``(..., D)``; ``k`` is ignored (an oracle for
        :func:`descend`)."""
        return (w @ self.x.T - self.y) @ self.x / len(self.y)

    @accepts(requires(lambda a: a["batch_size"] <= len(a["self"].y),
                      "batch_size must be an integer [1, {self.y.shape[0]}] (the examples), got {batch_size}"),
             batch_size=Int(1), seed=Seed())
    def minibatch_grad(self, batch_size: int, seed: int = 0) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """A gradient oracle for :func:`descend`: step ``k`` uses minibatch ``k`` (the same for every run)."""
        n = len(self.y)
        g = torch.Generator().manual_seed(seed)
        batches: list[torch.Tensor] = []

        def grad(w: torch.Tensor, k: int) -> torch.Tensor:
            while len(batches) <= k:  # sample without replacement within each epoch
                perm = torch.randperm(n, generator=g)
                batches.extend(perm[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size))
            idx = batches[k]
            xb, yb = self.x[idx], self.y[idx]
            return (w @ xb.T - yb) @ xb / batch_size

        return grad


@accepts(requires(lambda a: len(a["scales"]) == len(a["w_true"]), "scales and w_true must have the same length, "
                  "got {scales} and {w_true}"),
         n=Int(2), scales=NUMBERS_POSITIVE, w_true=NUMBERS, noise=NonNegative(), seed=Seed())
def regression_problem(n: int = 256, scales: tuple[float, ...] = (1.0, 0.2), w_true: tuple[float, ...] = (1.0, 2.5),
                       noise: float = 0.5, seed: int = 0) -> RegressionProblem:
    r"""A small linear regression :math:`y = w_\text{true}^\top x + \text{noise}` with features of unequal scale.

    Feature :math:`j` has standard deviation ``scales[j]``, so the Hessian
    :math:`\approx \mathrm{diag}(\text{scales}^2)` is ill-conditioned and the
    minibatch gradients of the coordinates differ in size: exactly what Adam's
    per-coordinate normalization reacts to.
    """
    g = torch.Generator().manual_seed(seed)
    s = torch.tensor(scales, dtype=torch.float64)
    x = torch.randn(n, len(scales), generator=g, dtype=torch.float64) * s
    y = x @ torch.tensor(w_true, dtype=torch.float64) + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return RegressionProblem(x, y)


@accepts(beta2=Unit(), eps=NonNegative())
def adam_preconditioner(state, beta2: float = 0.999, eps: float = 1e-8) -> dict[str, torch.Tensor] | None:
    r"""The diagonal of Adam's current preconditioner :math:`C = \sqrt{\hat s} + \epsilon` from an optimizer state.

    :math:`\hat s = s / (1 - \beta_2^t)` is the bias-corrected running average of
    :math:`g^2`: an estimate of the diagonal of the empirical Fisher (of minibatch
    gradients). Searches a chain's state for Adam's; returns ``None`` if there is none.
    ``beta2`` and ``eps`` must be the values the optimizer was built with.
    """
    adam_state = find_state(state, ScaleByAdamState)
    if adam_state is None or adam_state.step == 0:
        return None
    correction = 1 - beta2 ** adam_state.step
    return {k: torch.sqrt(s / correction) + eps for k, s in adam_state.s.items()}


# =========================================================================== 4. grafting


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
