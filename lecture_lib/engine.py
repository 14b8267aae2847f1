r"""The batched training loop: R configurations, one computation, one :class:`Record`.

A model built with ``runs=R`` holds R independent copies of its weights; an
optimizer's hyperparameters are floats (shared) or ``(R,)`` tensors (one per
run). Each step evaluates every run's loss on its minibatch, sums the R losses
(runs share no parameters, so each run receives exactly the gradient of its own
loss), asks the optimizer for an update (``optim.base`` chain API) and adds it in
place:

.. math::  w^{(r)}_{k+1} = w^{(r)}_k + u^{(r)}_k, \qquad
           u_k = \text{optimizer.update}(\nabla J(w_k), \text{state}_k, w_k).

Recorded per parameter tensor and run (every ``record_every`` steps):

* ``param_norm``  :math:`\lVert w_k \rVert` and ``grad_norm`` :math:`\lVert \nabla J(w_k) \rVert`;
* ``effective_lr`` :math:`\alpha_k / \lVert w_k \rVert^2`, the learning rate the *direction*
  :math:`\hat w = w/\lVert w \rVert` of a scale-invariant tensor feels (Lecture 5,
  "implicit learning-rate decay"); :math:`\alpha_k` is read from ``optimizer.hparams['lr']``;
* ``angular_step`` the angle between :math:`w_k` and :math:`w_{k+1}`, computed stably as
  :math:`2\,\mathrm{atan2}(\lVert \hat w_k - \hat w_{k+1} \rVert, \lVert \hat w_k + \hat w_{k+1} \rVert)`.

Divergence: a run whose loss is non-finite or above ``diverge_above`` (or whose
update is non-finite) at step k is stopped there: its parameters stay at their
last finite values, its updates are zeroed from then on, its record rows from step k
on are NaN and ``diverged_at[r] = k``. The other runs are untouched: their numbers
are exactly those of running them alone.

Reproducibility: the minibatch order of run r is drawn from ``torch.Generator``
seeded with ``seed`` (or ``seed[r]``), epoch by epoch, so the same seed gives the
same run bit for bit on the same device, and a batched run with per-run seeds
equals R separate runs with those seeds.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from . import losses as losses_mod
from ._validate import (Function, Instance, Int, Loss, Model, Optimizer, Where, accepts, check_int, check_per_run,
                        check_positive, check_seeds)
from .data import Dataset
from .optim.base import Transform
from .record import Record

TrackFn = Callable[[nn.Module, dict, dict, Any], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# minibatches
# ---------------------------------------------------------------------------------------------
class MinibatchStream:
    """Per-run minibatch indices: consecutive slices of a fresh random permutation per epoch.

    ``seed`` int: one order shared by all runs (indices ``(B,)``); a sequence of R ints:
    one order per run (indices ``(R, B)``), run r's order being exactly that of a
    single run seeded with ``seed[r]``. Batches may straddle two epochs, so every
    example is used equally often and no data are dropped.
    """

    def __init__(self, n: int, batch_size: int, seed, device):
        self.n, self.batch_size, self.device = n, batch_size, device
        self.shared = isinstance(seed, int)
        seeds = [seed] if self.shared else list(seed)
        self._gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self._buffer = torch.empty(len(seeds), 0, dtype=torch.long, device=device)

    def __next__(self) -> torch.Tensor:
        while self._buffer.shape[1] < self.batch_size:
            epoch = torch.stack([torch.randperm(self.n, generator=g) for g in self._gens]).to(self.device)
            self._buffer = torch.cat([self._buffer, epoch], dim=1)
        idx, self._buffer = self._buffer[:, :self.batch_size], self._buffer[:, self.batch_size:]
        return idx[0] if self.shared else idx

    def __iter__(self):
        return self


# ---------------------------------------------------------------------------------------------
# declarations: what train and Trainer accept
# ---------------------------------------------------------------------------------------------
def _threshold(name: str, value) -> None:
    if value != math.inf:             # inf (or None): stop only on non-finite losses
        check_positive(name, value)


def _track_fns(name: str, track) -> None:
    if not isinstance(track, Mapping) or not all(callable(f) for f in track.values()):
        raise TypeError(f"{name} must be a dict {{name: fn(model, params, grads, opt_state) -> (R, ...) tensor}}")


def _loss_fits_task(arguments: Mapping) -> None:
    loss, data = arguments["loss"], arguments["data"]
    if loss in ("cross_entropy", "logistic") and data.task == "regression":
        raise ValueError(f"loss {loss!r} needs class labels but the data are a regression task "
                         f"({data.name}); use loss='mse' (or None for the task's default)")


def _batch_fits_data(arguments: Mapping) -> None:
    if arguments["batch_size"] is not None:
        check_int("batch_size", arguments["batch_size"], low=1, high=arguments["data"].n_train)


def _optimizer_fits_model(arguments: Mapping) -> None:
    """Per-run hyperparameters (and what a schedule returns at step 0) hold one value per run of the model."""
    hparams = dict(getattr(arguments["optimizer"], "hparams", {}) or {})
    check_per_run(arguments["model"].runs, "the model (model.runs)",
                  {f"optimizer hyperparameter {name!r}": value(0) if name == "lr" and callable(value) else value
                   for name, value in hparams.items()})


RELATIONS = (_loss_fits_task, _batch_fits_data, _optimizer_fits_model)
SPECS = dict(model=Model(batched=True), data=Instance(Dataset),
             loss=Loss(losses_mod.LOSSES, custom=True, optional=True), optimizer=Optimizer(),
             batch_size=Int(1, optional=True),
             diverge_above=Where(_threshold, bad=(-1.0, 0.0, math.nan, -math.inf, "big", [1e6]), optional=True))


def _resolve_loss(loss, data: Dataset):
    if loss is None:
        return data.default_loss, losses_mod.get(data.default_loss)
    if isinstance(loss, str):
        return loss, losses_mod.get(loss)
    return getattr(loss, "__name__", "custom"), loss


def _plain(value):
    """A JSON-friendly copy of a hyperparameter for ``Record.config``."""
    if isinstance(value, torch.Tensor):
        values = value.detach().cpu().double().reshape(-1).tolist() if value.is_floating_point() else None
        if values is not None and value.dtype in (torch.float32, torch.float16, torch.bfloat16):
            values = [float(f"{v:.7g}") for v in values]  # 0.1, not 0.10000000149011612
            return values if value.dim() else values[0]
        return value.detach().cpu().tolist()
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if callable(value):
        return getattr(value, "__name__", repr(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return repr(value)


def _runs_view(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.reshape(-1, *([1] * (like.dim() - 1)))


def _run_norms(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t.flatten(1), dim=1)


# ---------------------------------------------------------------------------------------------
# the stepper
# ---------------------------------------------------------------------------------------------
class Trainer:
    r"""Step a batched model by hand; :func:`train` drives one of these and records.

    Attributes after each :meth:`step`: ``step_count``, ``alive`` (``(R,)`` bool),
    ``diverged_at`` (``(R,)`` long, -1 while alive), ``state`` (the optimizer state),
    ``last_loss`` (``(R,)``). The data are moved to the model's device, and their float
    tensors cast to the model's dtype.
    """

    @accepts(*RELATIONS, **SPECS)
    def __init__(self, model: nn.Module, data: Dataset, loss, optimizer: Transform, batch_size: int | None = None,
                 seed=0, diverge_above: float | None = 1e6):
        self.runs = model.runs
        self.seed = check_seeds("seed", seed, self.runs)    # an int (shared order) or R ints (one per run)
        n = data.n_train
        self.batch_size = None if batch_size in (None, n) else batch_size
        self.diverge_above = math.inf if diverge_above is None else float(diverge_above)

        first = next(model.parameters())
        self.device, self.dtype = first.device, first.dtype
        self.model, self.optimizer = model, optimizer
        self.data = data.to(device=self.device, dtype=self.dtype)
        self.loss_name, self.loss_fn = _resolve_loss(loss, data)
        self.classify = data.task in ("classification", "binary")
        self.names = [name for name, _ in model.named_parameters()]
        self._tensors = [p for _, p in model.named_parameters()]
        self.params = {name: p.detach() for name, p in zip(self.names, self._tensors)}
        self.state = optimizer.init(self.params)
        self.lr = (getattr(optimizer, "hparams", {}) or {}).get("lr")
        self._batches = None if self.batch_size is None else MinibatchStream(n, self.batch_size, self.seed,
                                                                             self.device)
        self.step_count = 0
        self.alive = torch.ones(self.runs, dtype=torch.bool, device=self.device)
        self.diverged_at = torch.full((self.runs,), -1, dtype=torch.long, device=self.device)
        self.last_loss = None
        model.train()

    # -- pieces ---------------------------------------------------------------------------------
    def batch(self):
        """The next minibatch ``(x, y)``: shared ``(B, ...)`` or per run ``(R, B, ...)``."""
        if self._batches is None:
            return self.data.x_train, self.data.y_train
        idx = next(self._batches)
        return self.data.x_train[idx], self.data.y_train[idx]

    def lr_at(self, step: int) -> torch.Tensor | None:
        """The learning rate α_k of every run at ``step``, shape ``(R,)``; None if the optimizer has none."""
        lr = self.lr(step) if callable(self.lr) else self.lr
        if lr is None:
            return None
        return torch.as_tensor(lr, dtype=self.dtype, device=self.device).expand(self.runs)

    def _stop(self, bad: torch.Tensor, step: int):
        bad = bad & self.alive
        self.diverged_at = torch.where(bad, torch.full_like(self.diverged_at, step), self.diverged_at)
        self.alive = self.alive & ~bad

    def evaluate(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                 buffers: Mapping[str, torch.Tensor] | None = None):
        """Loss and accuracy ``(R,)`` on the test set (or on ``x, y``) in eval mode (BN: running statistics).
        ``buffers``: evaluate with these buffer values (a snapshot of :meth:`buffers`) in place of the model's
        own, which are restored after."""
        if x is None:
            x, y = self.data.x_test, self.data.y_test
        was_training = self.model.training
        own = dict(self.model.named_buffers())
        current = {n: own[n].clone() for n in buffers} if buffers else {}
        self.model.eval()
        try:
            with torch.no_grad():
                for n, value in (buffers or {}).items():
                    own[n].copy_(value)
                out = self.model(x)
                loss = self.loss_fn(out, y)
                acc = losses_mod.accuracy(out, y) if self.classify else None
        finally:
            with torch.no_grad():
                for n, value in current.items():
                    own[n].copy_(value)
            self.model.train(was_training)
        return loss, acc

    def buffers(self) -> dict[str, torch.Tensor]:
        """A copy of the model's buffers (BN's running statistics, which a training-mode forward pass moves)."""
        return {n: b.clone() for n, b in self.model.named_buffers()}

    # -- one step -------------------------------------------------------------------------------
    def step(self, record: bool = False, track: Mapping[str, TrackFn] | None = None,
             before_update: Callable[[dict], None] | None = None) -> dict | None:
        """Take one optimizer step for all runs; with ``record`` return this step's statistics.

        The returned dict holds ``(R,)`` tensors ``loss`` (and ``accuracy``) plus
        ``(P, R)`` tensors ``param_norm``, ``grad_norm``, ``effective_lr``,
        ``angular_step`` (P = parameter tensors, in ``self.names`` order) and the
        ``track`` outputs, evaluated at :math:`w_k` with the gradient :math:`g_k` and the
        optimizer state before this step's update. ``before_update(stats)`` (with ``record``) sees them
        before the update, without ``angular_step``.
        """
        k = self.step_count
        x, y = self.batch()
        out = self.model(x)
        loss = self.loss_fn(out, y)
        if loss.shape != (self.runs,):
            raise ValueError(f"loss must return one value per run, shape ({self.runs},), got {tuple(loss.shape)}")
        grads = torch.autograd.grad(loss.sum(), self._tensors)
        with torch.no_grad():
            loss = loss.detach()
            self._stop(~torch.isfinite(loss) | (loss > self.diverge_above), k)
            grads = dict(zip(self.names, grads))
            if not self._all_alive():  # a stopped run's gradient (maybe NaN) must not reach the optimizer state
                grads = {n: torch.where(_runs_view(self.alive, g), g, 0.0) for n, g in grads.items()}
            stats = None
            if record:
                stats = self._pre_stats(k, loss, out, y, grads, track)
                if before_update is not None:
                    before_update(stats)
            # every update sees the batch; a transform that needs it (K-FAC's statistics) reads it
            updates, self.state = self.optimizer.update(grads, self.state, self.params, batch=(x, y))
            # a non-finite update stops its run at this step, before it touches the weights
            total = torch.stack([_run_norms(updates[n]) for n in self.names]).sum(0)
            self._stop(~torch.isfinite(total), k)
            if not self._all_alive():
                updates = {n: torch.where(_runs_view(self.alive, u), u, 0.0) for n, u in updates.items()}
            if record:
                stats["angular_step"] = torch.stack([
                    self._angle(self.params[n], updates[n], stats["param_norm"][i])
                    for i, n in enumerate(self.names)])
            for n, p in self.params.items():
                p.add_(updates[n])
        self.last_loss = loss
        self.step_count += 1
        return stats

    def _pre_stats(self, k, loss, out, y, grads, track):
        stats = {"loss": loss}
        if self.classify:
            stats["accuracy"] = losses_mod.accuracy(out.detach(), y)
        w_norm = torch.stack([_run_norms(self.params[n]) for n in self.names])
        stats["param_norm"] = w_norm
        stats["grad_norm"] = torch.stack([_run_norms(grads[n]) for n in self.names])
        lr = self.lr_at(k)
        if lr is not None:
            stats["effective_lr"] = lr.unsqueeze(0) / w_norm.square()
        for name, fn in (track or {}).items():
            value = torch.as_tensor(fn(self.model, self.params, grads, self.state))
            if value.dim() == 0 or value.shape[0] != self.runs:
                raise ValueError(f"track[{name!r}] must return a tensor with a leading run dimension "
                                 f"of size {self.runs}, got shape {tuple(value.shape)}")
            stats[f"track:{name}"] = value.detach()
        return stats

    def _all_alive(self) -> bool:
        # On the CPU reading the flag is free and lets the common case skip the masking;
        # on a GPU it would force a sync every step, so there the masks are always applied.
        return self.device.type == "cpu" and bool(self.alive.all())

    @staticmethod
    def _angle(w: torch.Tensor, u: torch.Tensor, w_norm: torch.Tensor) -> torch.Tensor:
        r"""Angle between :math:`w` and :math:`w + u`, accurate for tiny steps.

        With :math:`c = u\cdot w / \lVert w \rVert^2` and :math:`u_\perp = u - c\,w`:
        :math:`\theta = \mathrm{atan2}(\lVert u_\perp \rVert,\ \lVert w \rVert (1 + c))`
        (no :math:`1 - \cos\theta` cancellation). NaN where :math:`w = 0`.
        """
        w, u = w.flatten(1), u.flatten(1)
        c = (torch.linalg.vecdot(w, u) / w_norm.square()).unsqueeze(1)
        u_perp = torch.linalg.vector_norm(torch.addcmul(u, c, w, value=-1.0), dim=1)
        return torch.atan2(u_perp, w_norm * (1 + c.squeeze(1)))


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
@accepts(*RELATIONS, steps=Int(1), record_every=Int(1), eval_every=Int(1, optional=True),
         track=Where(_track_fns, bad=(3, {"x": 3}), optional=True), callback=Function(optional=True),
         report=Function(optional=True), **SPECS)
def train(model: nn.Module, data: Dataset, loss, optimizer: Transform, steps: int, batch_size: int | None = None,
          seed=0, record_every: int = 1, diverge_above: float | None = 1e6, eval_every: int | None = None,
          track: Mapping[str, TrackFn] | None = None,
          callback: Callable[[int, nn.Module], None] | None = None,
          report: Callable[[int, int, Callable[[], Record]], None] | None = None) -> Record:
    r"""Train all R runs of ``model`` for ``steps`` steps as one computation and return a :class:`Record`.

    Arguments (lecture symbols in brackets):

    * ``model``: a batched model from :mod:`lecture_lib.models` (``model.runs = R``); trained in place.
    * ``data``: a :class:`~lecture_lib.data.Dataset`; moved to the model's device and dtype.
    * ``loss``: ``'mse'``, ``'cross_entropy'``, ``'logistic'``, a callable ``(R,B,K) -> (R,)``, or
      ``None`` for the task's default.
    * ``optimizer``: a gradient transformation from :mod:`lecture_lib.optim`; per-run
      hyperparameters are ``(R,)`` tensors; ``hparams['lr']`` (α) feeds ``effective_lr``.
    * ``steps``: number of updates; ``batch_size`` (B): ``None`` for full-batch gradient descent.
    * ``seed``: minibatch order, an int (shared by all runs) or R ints (one per run).
    * ``record_every``: record rows at steps 0, record_every, 2·record_every, ... (< steps).
    * ``diverge_above``: a run whose loss exceeds this (or is not finite) is stopped.
    * ``eval_every``: evaluate on the test set at steps 0, eval_every, ... and after the last step.
    * ``track``: ``{name: fn(model, params, grads, opt_state) -> (R, ...)}``, recorded in
      ``record.extras[name]`` with shape ``(K, R, ...)``.
    * ``callback``: ``callback(step, model)`` after every update (e.g. norm grafting).
    * ``report``: ``report(done, steps, so_far)`` after every recorded step (``done`` updates of
      ``steps``), and once before the first update (``done = 0``: the initial row alone, whose
      ``angular_step`` comes with its update and whose evaluation follows the report, so its Record has
      neither); ``so_far()`` assembles the Record of
      the rows recorded until now (a panel draws the runs as they train, :class:`lecture_lib.record.Stream`).
      Assembling copies the rows: call it only to draw. Nothing else changes: the final Record is the same
      with or without ``report``.

    Example::

        model = MLP([64, 32, 10], norm="batch", runs=3)
        rec = train(model, digits(), "cross_entropy", sgd(lr=torch.tensor([0.01, 0.1, 1.0])), steps=200,
                    batch_size=64)
        rec.effective_lr["linears.0.weight"]   # (200, 3)
    """
    trainer = Trainer(model, data, loss, optimizer, batch_size=batch_size, seed=seed, diverge_above=diverge_above)
    record_steps = list(range(0, steps, record_every))
    eval_steps = [] if eval_every is None else sorted(set(range(0, steps, eval_every)) | {steps})
    rows: list[dict] = []
    evals: list[tuple] = []
    # the training's settings, in every Record's config: a partial one's too (its plot can span all the steps)
    settings = dict(steps=steps, batch_size=batch_size, seed=seed, record_every=record_every,
                    diverge_above=diverge_above, eval_every=eval_every)

    for k in range(steps):
        # The initial report goes out before step 0's evaluation, which a panel's first frame would otherwise wait
        # for (06's damping panel: a fifth of its first partial's time); the evaluation still sees step 0's weights
        # and buffers (the step's forward pass moves BN's running statistics, so they are kept), so the Record is
        # the same with or without a report.
        initial_eval = report is not None and k == 0 and eval_every is not None
        if eval_every is not None and k % eval_every == 0 and not initial_eval:
            evals.append(trainer.evaluate())
        if k % record_every == 0:
            initial = None
            if report is not None and k == 0:
                buffers = trainer.buffers() if initial_eval else None

                def initial(stats):
                    report(0, steps, lambda: _assemble(trainer, [stats], record_steps[:1], evals, eval_steps[:len(evals)],
                                                       track, partial=True, **settings))
                    if initial_eval:
                        evals.append(trainer.evaluate(buffers=buffers))
            rows.append(trainer.step(record=True, track=track, before_update=initial))
        else:
            trainer.step()
        if callback is not None:
            callback(k, model)
        if report is not None and k % record_every == 0:
            report(k + 1, steps, lambda: _assemble(trainer, rows, record_steps[:len(rows)], evals,
                                                   eval_steps[:len(evals)], track, partial=True, **settings))
    if eval_every is not None:
        evals.append(trainer.evaluate())

    return _assemble(trainer, rows, record_steps, evals, eval_steps, track, **settings)


def _assemble(trainer: Trainer, rows, record_steps, evals, eval_steps, track, partial: bool = False,
              **settings) -> Record:
    """The Record of ``rows``; ``partial``: of a run still training (its config says so, ``partial: True``, and
    holds the training's ``settings`` like the final Record's)."""
    names = trainer.names
    steps_arr = np.asarray(record_steps, dtype=np.int64)
    diverged_at = trainer.diverged_at.cpu().numpy().astype(np.int64)
    # rows at or after a run's divergence step are NaN
    dead = (diverged_at[None, :] >= 0) & (steps_arr[:, None] >= diverged_at[None, :])  # (K, R)

    def stack(key):
        t = torch.stack([row[key] for row in rows]).cpu().to(torch.float64).numpy()
        mask = dead.reshape(dead.shape + (1,) * (t.ndim - 2)) if t.ndim >= 2 else dead
        return np.where(mask, np.nan, t)

    def per_param(key):
        if key not in rows[0]:
            return {}
        t = torch.stack([row[key] for row in rows]).cpu().to(torch.float64).numpy()  # (K, P, R)
        return {n: np.where(dead, np.nan, t[:, i, :]) for i, n in enumerate(names)}

    extras = {}
    for name in (track or {}):
        t = torch.stack([row[f"track:{name}"] for row in rows]).cpu()
        t = t.to(torch.float64).numpy() if t.is_floating_point() else t.numpy()
        if t.dtype.kind == "f":
            t = np.where(dead.reshape(dead.shape + (1,) * (t.ndim - 2)), np.nan, t)
        extras[name] = t

    eval_arr = test_loss = test_acc = None
    if evals:
        eval_arr = np.asarray(eval_steps, dtype=np.int64)
        dead_e = (diverged_at[None, :] >= 0) & (eval_arr[:, None] >= diverged_at[None, :])
        test_loss = np.where(dead_e, np.nan, torch.stack([e[0] for e in evals]).cpu().double().numpy())
        if trainer.classify:
            test_acc = np.where(dead_e, np.nan, torch.stack([e[1] for e in evals]).cpu().double().numpy())

    model = trainer.model
    hparams = dict(getattr(trainer.optimizer, "hparams", {}) or {})
    config = {
        "model": type(model).__name__,
        "model_sizes": list(getattr(model, "sizes", [])) or None,
        "norm": getattr(model, "norm", None),
        "runs": trainer.runs,
        "data": trainer.data.name,
        "task": trainer.data.task,
        "loss": trainer.loss_name,
        "optimizer": {k: _plain(v) for k, v in hparams.items()},
        "dtype": str(trainer.dtype).replace("torch.", ""),
        "device": str(trainer.device),
        **{k: _plain(v) for k, v in settings.items()},
        **({"partial": True} if partial else {}),
    }
    return Record(
        steps=steps_arr,
        loss=stack("loss"),
        accuracy=stack("accuracy") if trainer.classify else None,
        param_norm=per_param("param_norm"),
        grad_norm=per_param("grad_norm"),
        effective_lr=per_param("effective_lr"),
        angular_step=per_param("angular_step"),
        diverged_at=diverged_at,
        scale_invariant=dict(getattr(model, "scale_invariant", {}) or {}),
        eval_steps=eval_arr,
        test_loss=test_loss,
        test_accuracy=test_acc,
        extras=extras,
        config=config,
    )
