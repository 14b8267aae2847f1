r"""The experiments of notebook 01, "Adaptive gradient methods and grafting": ``params -> result``.

One function per panel of the notebook, each built on the mathematics of
:mod:`lecture_lib.adaptive`:

1. :func:`trajectories` -- SGD, RMSprop and Adam on one ill-conditioned 2-D valley;
2. :func:`fisher_comparison` -- empirical and true Fisher diagonals of logistic regression,
   at one point and along a path away from the optimum (:func:`fisher_along_path`);
3. :func:`decay_comparison` -- L2 regularization against decoupled weight decay, a whole
   :math:`\lambda` sweep per optimizer as one batched run (:func:`regularization_sweep`);
   :func:`decay_comparisons` -- the same for every :math:`\lambda` of the sweep at once (a panel scrubs it);
   :func:`sgd_decay_identity` -- the two coincide for plain SGD, not for SGD with momentum;
4. :func:`grafting_experiment` -- an MLP trained with M, D and AdaGraft's graft(M, D).

Nothing here imports plotly or ipywidgets; sizes (step counts, data sizes) are parameters,
so a notebook's fast mode is a choice of arguments.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import optim
from .._validate import Choice, Function, Instance, Int, NonNegative, Positive, Real, Seed, Sizes, Tensor, Unit, Where, accepts
from ..cache import cached
from ..adaptive import (NUMBERS, Quadratic, RegressionProblem, adam_preconditioner, descend, diverged_at,
                        fisher_diagonals, ill_conditioned_quadratic, logistic_problem, numbers, point_away,
                        regression_problem, requires, step_comparison)
from ..optim.base import Transform
from ..record import Stream

NON_NEGATIVE_NUMBERS = Where(lambda name, v: numbers(name, v, 0.0), bad=([], [-1.0], [math.nan], "d", None, [[0.1]]))

# =========================================================================== 1. trajectories


@dataclass(frozen=True)
class Trajectories:
    """SGD, RMSprop and Adam from one start on one 2-D quadratic (numpy arrays, one entry per optimizer)."""

    quadratic: Quadratic
    start: np.ndarray               # (2,) w₀
    paths: dict[str, np.ndarray]    # name -> (K + 1, 2) iterates
    loss: dict[str, np.ndarray]     # name -> (K + 1,) J(w_k)
    diverged_at: dict[str, int]     # name -> first step with J > 1e6 or non-finite, -1 if none


def rotated(point: tuple[float, float], angle: float) -> tuple[float, float]:
    """``point`` turned by ``angle`` degrees about the origin (the valley's minimum)."""
    t = math.radians(angle)
    return (math.cos(t) * point[0] - math.sin(t) * point[1], math.sin(t) * point[0] + math.cos(t) * point[1])


@cached
@accepts(lr_sgd=NonNegative(), lr_adaptive=NonNegative(), beta2=Unit(), angle=Real(-360.0, 360.0),
         condition=Real(1.0), steps=Int(0))
def trajectories(lr_sgd: float = 1.6, lr_adaptive: float = 0.1, beta2: float = 0.9, angle: float = 0.0,
                 condition: float = 100.0, steps: int = 150, start: tuple[float, float] = (-3.5, 2.0)) -> Trajectories:
    r"""SGD, RMSprop (the lecture's :math:`g/\sqrt{s+\epsilon}`) and Adam on one ill-conditioned valley.

    The valley and the start turn together by ``angle``: SGD's trajectory turns
    with them (it is rotation invariant), the diagonal methods' does not.
    """
    q = ill_conditioned_quadratic(condition, angle)
    chains = {
        "SGD": optim.sgd(lr_sgd),
        "RMSprop": optim.rmsprop(lr_adaptive, beta2=beta2, eps=1e-8, eps_in_sqrt=True),
        "Adam": optim.adam(lr_adaptive, betas=(0.9, beta2)),
    }
    w0 = torch.tensor([rotated(start, angle)], dtype=torch.float64)
    paths, losses, diverged = {}, {}, {}
    for name, opt in chains.items():
        path = descend(opt, lambda w, k: q.grad(w), w0, steps)[:, 0].numpy()
        loss = q.loss(torch.as_tensor(path)).numpy()
        paths[name], losses[name] = path, loss
        diverged[name] = int(diverged_at(loss[:, None], limit=1e6)[0])
    return Trajectories(q, w0[0].numpy(), paths, losses, diverged)


# =========================================================================== 2. empirical vs true Fisher


@dataclass(frozen=True)
class FisherPath:
    """Both Fisher diagonals along a path away from the optimum: ``(S, D)`` arrays and ``(S,)`` distances."""

    distances: np.ndarray
    empirical: np.ndarray
    true: np.ndarray

    @property
    def relative_difference(self) -> np.ndarray:
        return np.linalg.norm(self.empirical - self.true, axis=1) / np.linalg.norm(self.true, axis=1)


@accepts(distances=NON_NEGATIVE_NUMBERS, direction=Tensor(dim=1, optional=True))
def fisher_along_path(problem, distances, direction: torch.Tensor | None = None) -> FisherPath:
    """:func:`~lecture_lib.adaptive.fisher_diagonals` at :func:`~lecture_lib.adaptive.point_away` for every distance."""
    emp, true = [], []
    for r in distances:
        f = fisher_diagonals(problem.x, problem.t, point_away(problem, float(r), direction))
        emp.append(f.empirical.numpy())
        true.append(f.true.numpy())
    return FisherPath(np.asarray(distances, dtype=float), np.stack(emp), np.stack(true))


@dataclass(frozen=True)
class FisherComparison:
    """Both Fisher diagonals at one distance from the optimum, and both data sets' paths (``paths[misspecified]``)."""

    distance: float
    misspecified: bool
    empirical: np.ndarray           # (D,)
    true: np.ndarray                # (D,)
    relative_difference: float
    paths: dict[bool, FisherPath]


@functools.lru_cache(maxsize=4)
def _fisher_setup(misspecified: bool, n: int, max_distance: float, path_points: int):
    problem = logistic_problem(n=n, misspecified=misspecified, seed=0)
    return problem, fisher_along_path(problem, np.linspace(0.0, max_distance, path_points))


@cached
@accepts(distance=NonNegative(), n=Int(10), max_distance=Positive(), path_points=Int(2))
def fisher_comparison(distance: float = 0.0, misspecified: bool = False, n: int = 20000, max_distance: float = 2.0,
                      path_points: int = 41) -> FisherComparison:
    """Both Fisher diagonals at ``distance`` from the fitted optimum, and along the whole path for both data sets.

    The data and the paths are cached on ``(misspecified, n, max_distance, path_points)``: a slider over
    ``distance`` computes one pair of diagonals.
    """
    problem, _ = _fisher_setup(bool(misspecified), n, float(max_distance), path_points)
    diag = fisher_diagonals(problem.x, problem.t, point_away(problem, distance))
    paths = {m: _fisher_setup(m, n, float(max_distance), path_points)[1] for m in (False, True)}
    return FisherComparison(float(distance), bool(misspecified), diag.empirical.numpy(), diag.true.numpy(),
                            diag.relative_difference, paths)


# =========================================================================== 3. L2 vs decoupled weight decay


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

    def select(self, runs) -> RegularizationSweep:
        """The sweep of the runs ``runs`` only (indices, in that order): one member of a batched family."""
        runs = np.asarray(runs, dtype=int)

        def per_run(arrays: dict, axis: int = 0) -> dict:
            return {name: np.take(a, runs, axis=axis) for name, a in arrays.items()}

        return RegularizationSweep(self.weight_decays[runs], per_run(self.paths, axis=1), per_run(self.final),
                                   self.ridge[runs], self.least_squares, per_run(self.diverged_at),
                                   per_run(self.preconditioner), per_run(self.decoupled_prediction))


@accepts(requires(lambda a: len(a["w0"]) == a["problem"].x.shape[1],
                  "w0 must have one entry per feature of the problem ({problem.x.shape[1]}), got {w0}"),
         problem=Instance(RegressionProblem), weight_decays=NON_NEGATIVE_NUMBERS,
         steps=Int(0), batch_size=Int(1), w0=NUMBERS, seed=Seed(), progress=Function(optional=True))
def regularization_sweep(problem: RegressionProblem, optimizers: Mapping[str, Callable[[torch.Tensor], Transform]],
                         weight_decays, steps: int = 400, batch_size: int = 8, w0=(0.0, 0.0),
                         seed: int = 0, progress=None) -> RegularizationSweep:
    r"""Train each optimizer from the same start for every weight decay at once, on the same minibatches.

    ``optimizers[name](weight_decay)`` builds the chain for an ``(R,)`` tensor
    of weight decays (e.g. ``lambda wd: optim.adam(lr, weight_decay=wd)``), so
    the whole :math:`\lambda` sweep of one optimizer is one batched run. ``progress(fraction, partial)``: the
    paths so far, as they train (:class:`~lecture_lib.record.Stream`; the optimizers still to train sit at
    ``w0``, and only the Adam chains already trained have a preconditioner).
    """
    wds = torch.tensor(weight_decays, dtype=torch.float64)
    start = torch.tensor(w0, dtype=torch.float64).expand(len(wds), -1).clone()
    ridge = np.stack([problem.ridge(float(wd)).numpy() for wd in wds])
    paths, precond, predicted = {}, {}, {}

    def sweep(paths: dict[str, np.ndarray]) -> RegularizationSweep:
        paths = {name: paths.get(name, start.numpy()[None]) for name in optimizers}
        final = {name: arr[-max(1, (len(arr) - 1) // 4):].mean(axis=0) for name, arr in paths.items()}
        div = {name: diverged_at(np.abs(arr).max(axis=2)) for name, arr in paths.items()}
        return RegularizationSweep(wds.numpy(), paths, final, ridge, problem.least_squares.numpy(), div,
                                   dict(precond), dict(predicted))

    stream = Stream(progress)
    for i, (name, make) in enumerate(optimizers.items()):
        report = stream.stage(lambda path, name=name: sweep({**paths, name: path.numpy()}),
                              i / len(optimizers), (i + 1) / len(optimizers))
        path, state = descend(make(wds), problem.minibatch_grad(batch_size, seed), start, steps, return_state=True,
                              report=report)
        paths[name] = path.numpy()
        c = adam_preconditioner(state)
        if c is not None:
            c = c["w"]
            precond[name] = c.numpy()
            predicted[name] = np.stack([problem.preconditioned_ridge(float(wd), c[r]).numpy()
                                        for r, wd in enumerate(wds)])
    return sweep(paths)


#: The four optimizers of the weight-decay panel, in the order they are drawn.
DECAY_OPTIMIZERS = ("SGD + L2", "SGDW", "Adam + L2", "AdamW")


@dataclass(frozen=True)
class DecayComparison:
    """The four optimizers of :data:`DECAY_OPTIMIZERS` over a λ grid; the last λ of the sweep is the chosen one."""

    sweep: RegularizationSweep
    problem: RegressionProblem
    lr: float
    lr_sgd: float
    weight_decay: float


@functools.lru_cache(maxsize=1)
def _regression() -> RegressionProblem:
    return regression_problem(seed=0)


def _decay_optimizers(lr: float, lr_sgd: float) -> dict[str, Callable[[torch.Tensor], Transform]]:
    """The chains of :data:`DECAY_OPTIMIZERS`, each a function of an ``(R,)`` tensor of weight decays."""
    return {"SGD + L2": lambda wd: optim.sgd(lr_sgd, weight_decay=wd),
            "SGDW": lambda wd: optim.sgdw(lr_sgd, weight_decay=wd),
            "Adam + L2": lambda wd: optim.adam(lr, weight_decay=wd),
            "AdamW": lambda wd: optim.adamw(lr, weight_decay=wd)}


#: The λ grid of the weight-decay panel: three decades, four values per decade.
DECAY_GRID = tuple(np.logspace(-3, 0, 13))


@cached
@accepts(lr=Positive(), weight_decay=NonNegative(), lr_sgd=Positive(), steps=Int(0), batch_size=Int(1),
         grid=NON_NEGATIVE_NUMBERS)
def decay_comparison(lr: float = 0.02, weight_decay: float = 0.3, steps: int = 600, batch_size: int = 8,
                     lr_sgd: float = 0.2, grid=DECAY_GRID) -> DecayComparison:
    """SGD + L2, SGDW (learning rate ``lr_sgd``), Adam + L2 and AdamW (``lr``) over ``grid`` plus the chosen λ.

    One batched run per optimizer (:func:`regularization_sweep`) on the cached regression problem
    (:func:`~lecture_lib.adaptive.regression_problem` with seed 0).
    """
    sweep = regularization_sweep(_regression(), _decay_optimizers(lr, lr_sgd), [*grid, weight_decay], steps=steps,
                                 batch_size=batch_size)
    return DecayComparison(sweep, _regression(), float(lr), float(lr_sgd), float(weight_decay))


@cached
@accepts(lr=Positive(), weight_decay=NON_NEGATIVE_NUMBERS, lr_sgd=Positive(), steps=Int(0), batch_size=Int(1),
         progress=Function(optional=True))
def decay_comparisons(lr: float = 0.02, weight_decay=DECAY_GRID, steps: int = 600, batch_size: int = 8,
                      lr_sgd: float = 0.2, progress=None) -> list[DecayComparison]:
    """:func:`decay_comparison` for every λ of ``weight_decay`` (a sequence, which is also the grid), computed
    together: one batched run per optimizer over all the λ, each λ's runs once.

    Member ``p`` is ``decay_comparison(lr, weight_decay[p], steps, batch_size, lr_sgd, grid=weight_decay)``
    (the sweep's runs of the grid, then λ's own again): a panel can switch between the λ without computing.
    ``progress(fraction, partial)``: the family so far, as it trains (:func:`regularization_sweep`).
    """
    def family(sweep: RegularizationSweep) -> list[DecayComparison]:
        grid = list(range(len(sweep.weight_decays)))
        return [DecayComparison(sweep.select(grid + [p]), _regression(), float(lr), float(lr_sgd), float(wd))
                for p, wd in enumerate(sweep.weight_decays)]

    partial = None if progress is None else (lambda fraction, sweep=None:
                                             progress(fraction, None if sweep is None else family(sweep)))
    return family(regularization_sweep(_regression(), _decay_optimizers(lr, lr_sgd), weight_decay, steps=steps,
                                       batch_size=batch_size, progress=partial))


@dataclass(frozen=True)
class SGDDecayIdentity:
    r"""SGD + L2 (``optim.sgd``, PyTorch's convention) against SGDW (``optim.sgdw``), without and with momentum.

    ``paths[rho]`` maps ``"SGD + L2"`` and ``"SGDW"`` to their ``(K + 1, D)`` iterates (full-batch gradients,
    float64, same start) for :math:`\rho = 0` and the chosen ``momentum``; ``ridge`` holds the minimizers of
    :math:`J + \frac{\lambda'}2\lVert w\rVert^2` for :math:`\lambda' = \lambda` (key ``"λ"``) and
    :math:`(1-\rho)\lambda` (key ``"(1−ρ)λ"``).
    """

    lr: float
    weight_decay: float
    momentum: float
    w0: np.ndarray
    paths: dict[float, dict[str, np.ndarray]]
    ridge: dict[str, np.ndarray]

    def gap(self, rho: float) -> np.ndarray:
        r""":math:`\lVert w_k^{L2} - w_k^{W}\rVert` for k = 0..K, for momentum ``rho`` (0 or the chosen one)."""
        p = self.paths[rho]
        return np.linalg.norm(p["SGD + L2"] - p["SGDW"], axis=1)

    @property
    def predicted_second_step_gap(self) -> float:
        r""":math:`\alpha\rho\lambda\lVert w_0\rVert`: after two steps, with momentum, the runs differ by :math:`\alpha\rho\lambda w_0`."""
        return self.lr * self.momentum * self.weight_decay * float(np.linalg.norm(self.w0))


@cached
@accepts(lr=Positive(), weight_decay=NonNegative(), momentum=Unit(), steps=Int(2), w0=NUMBERS)
def sgd_decay_identity(lr: float = 0.05, weight_decay: float = 0.3, momentum: float = 0.9, steps: int = 600,
                       w0=(-1.0, 4.0)) -> SGDDecayIdentity:
    r"""Where "L2 = weight decay for SGD" holds: plain SGD, not SGD with momentum.

    Without momentum both chains compute :math:`w - \alpha(\nabla J + \lambda w)`: the trajectories are
    identical (bit for bit here). With momentum PyTorch's SGD puts :math:`\lambda w` into the buffer,
    :math:`v \leftarrow \rho v + \nabla J + \lambda w`, while SGDW adds it after,
    :math:`w \leftarrow w - \alpha(v + \lambda w)`. The first steps agree; the second differs by exactly
    :math:`\alpha\rho\lambda w_0`, and at a fixed point the buffer holds :math:`\nabla J/(1-\rho)`, so SGD + L2
    settles at the ridge solution of :math:`\lambda` and SGDW at that of :math:`(1-\rho)\lambda`. Full-batch
    gradients of the cached regression problem (:func:`~lecture_lib.adaptive.regression_problem`, seed 0).
    """
    problem = _regression()
    start = torch.tensor([list(w0)], dtype=torch.float64)
    paths = {}
    for rho in sorted({0.0, float(momentum)}):
        chains = {"SGD + L2": optim.sgd(lr, momentum=rho, weight_decay=weight_decay),
                  "SGDW": optim.sgdw(lr, momentum=rho, weight_decay=weight_decay)}
        paths[rho] = {name: descend(opt, problem.grad, start, steps)[:, 0].numpy() for name, opt in chains.items()}
    ridge = {"λ": problem.ridge(weight_decay).numpy(),
             "(1−ρ)λ": problem.ridge((1 - float(momentum)) * weight_decay).numpy()}
    return SGDDecayIdentity(float(lr), float(weight_decay), float(momentum), np.asarray(w0, dtype=float), paths,
                            ridge)


@cached
@accepts(lr=Positive(), weight_decay=NonNegative(), momentum=Unit(sequences=True), steps=Int(2), w0=NUMBERS)
def sgd_decay_identities(lr: float = 0.05, weight_decay: float = 0.3, momentum=(0.0, 0.5, 0.9), steps: int = 600,
                         w0=(-1.0, 4.0)) -> list[SGDDecayIdentity]:
    r""":func:`sgd_decay_identity` for every :math:`\rho` of ``momentum`` (a sequence), computed together: one
    batched run per chain (SGD + L2, SGDW) over :math:`\rho = 0` and every :math:`\rho` of ``momentum``.

    Member ``p`` is ``sgd_decay_identity(lr, weight_decay, momentum[p], steps, w0)``.
    """
    problem = _regression()
    rhos = [0.0, *(float(r) for r in momentum)]                         # run 0: ρ = 0, the reference of every member
    rho = torch.tensor(rhos, dtype=torch.float64)
    start = torch.tensor([list(w0)], dtype=torch.float64).expand(len(rhos), -1).clone()
    chains = {"SGD + L2": optim.sgd(lr, momentum=rho, weight_decay=weight_decay),
              "SGDW": optim.sgdw(lr, momentum=rho, weight_decay=weight_decay)}
    runs = {name: descend(opt, problem.grad, start, steps).numpy() for name, opt in chains.items()}
    family = []
    for p, r in enumerate(rhos[1:], start=1):
        paths = {0.0: {name: path[:, 0] for name, path in runs.items()}}
        paths[r] = {name: path[:, p] for name, path in runs.items()}
        ridge = {"λ": problem.ridge(weight_decay).numpy(), "(1−ρ)λ": problem.ridge((1 - r) * weight_decay).numpy()}
        family.append(SGDDecayIdentity(float(lr), float(weight_decay), r, np.asarray(w0, dtype=float), paths, ridge))
    return family


# =========================================================================== 4. grafting

#: The learning rate each optimizer gets in :func:`grafting_experiment` unless told otherwise.
DEFAULT_LR = {"sgd": 0.1, "rmsprop": 1e-3, "adam": 1e-3}


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
    step_norms: dict[str, np.ndarray] = field(default_factory=dict)


def _data_shape(data) -> tuple[int, int]:
    """(features, classes) of ``data``; ``None`` stands for the 8×8 digits (64 pixels, 10 classes)."""
    return (64, 10) if data is None else (data.n_features, data.n_outputs)


@cached
@accepts(requires(lambda a: (a["sizes"][0], a["sizes"][-1]) == _data_shape(a["data"]),
                  "sizes must start with the data's features and end with its classes, got {sizes}"),
         magnitude=Choice(tuple(DEFAULT_LR)), direction=Choice(tuple(DEFAULT_LR)), steps=Int(2),
         batch_size=Int(1, optional=True), sizes=Sizes(), lr_magnitude=Positive(optional=True),
         lr_direction=Positive(optional=True), record_every=Int(1), seed=Seed())
def grafting_experiment(magnitude: str = "sgd", direction: str = "adam", steps: int = 300, batch_size: int = 64,
                        sizes=(64, 64, 64, 10), lr_magnitude: float | None = None,
                        lr_direction: float | None = None, record_every: int = 5, data=None,
                        seed: int = 0, progress: Callable[[float], None] | None = None) -> GraftingResult:
    r"""AdaGraft on an MLP: train M, D and graft(M, D) on the same minibatches from the same start.

    .. math:: w \leftarrow w + \frac{\lVert u_M \rVert}{\lVert u_D \rVert + \epsilon}\, u_D
        \qquad\text{per parameter tensor (layer)}

    where :math:`u_M, u_D` are the steps M and D (each with its own learning
    rate, :data:`DEFAULT_LR` by default) would take from the current weights.
    ``data`` defaults to the digits in the notebooks' shared split (:func:`lecture_lib.data.digits` with
    :data:`~lecture_lib.data.DIGITS_TEST_FRACTION` and :data:`~lecture_lib.data.DIGITS_SPLIT_SEED`); the loss is
    cross-entropy. ``progress(fraction, partial)``: the runs so far, as they train (:class:`~lecture_lib.record.Stream`).

    Reference: Agarwal, Anil, Hazan, Koren & Zhang, "Disentangling Adaptive Gradient
    Methods from Learning Rates", arXiv:2002.11803, 2020 (Algorithm 2, AdaGraft).
    """
    from .. import data as data_mod
    from .. import engine, models

    def make(name, lr):
        return optim.get(name, lr=DEFAULT_LR[name] if lr is None else lr)

    m_opt, d_opt = make(magnitude, lr_magnitude), make(direction, lr_direction)

    def track(_model, params, grads, state):
        return step_comparison(m_opt, d_opt, grads, state, params)

    ds = data_mod.digits(data_mod.DIGITS_TEST_FRACTION, data_mod.DIGITS_SPLIT_SEED) if data is None else data
    labels = (f"M = {magnitude}", f"D = {direction}", f"graft({magnitude}, {direction})")
    optimizers = (make(magnitude, lr_magnitude), make(direction, lr_direction), optim.graft(m_opt, d_opt))
    records = {}
    layer_names = [n for n, _ in models.MLP(list(sizes), runs=1, seed=seed).named_parameters()]

    def result(records):
        """The result of the runs in ``records`` (partial while streaming: the graft's norms once it trains)."""
        rec = records.get(labels[2])
        if rec is None or "steps" not in rec.extras:
            comp, k = np.zeros((0, len(layer_names), 4)), np.zeros(0, dtype=int)
        else:
            comp, k = rec.extras["steps"][:, 0], rec.steps          # (K, P, 4), run 0
        norms = {"graft": comp[..., 0], "M": comp[..., 1], "D": comp[..., 2], "cos_D": comp[..., 3]}
        return GraftingResult(magnitude, direction, k, dict(records), layer_names, norms)

    stream = Stream(progress)
    for i, (label, opt) in enumerate(zip(labels, optimizers)):
        net = models.MLP(list(sizes), runs=1, seed=seed)
        report = stream.stage(lambda r, label=label: result({**records, label: r}), i / 3, (i + 1) / 3)
        records[label] = engine.train(net, data=ds, loss="cross_entropy", optimizer=opt, steps=steps,
                                      batch_size=batch_size, seed=seed, record_every=record_every,
                                      track={"steps": track} if i == 2 else None, report=report)
    return result(records)
