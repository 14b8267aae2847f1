r"""A thin ``torch.optim.Optimizer`` around any transformation.

The library's training engine calls transformations functionally; this adapter
is for everything else: an ordinary PyTorch loop, a ``torch.nn`` model, and the
schedulers in ``torch.optim.lr_scheduler``::

    opt = TransformOptimizer(model.named_parameters(), chain(add_decayed_weights(5e-4), trace(0.9)), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.1)
    for x, y in batches:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        sched.step()

A transformation that needs the mini-batch (K-FAC) gets it as a keyword of ``step``, which passes
its keywords on to the transformation's update (optax's "extra args")::

    opt = TransformOptimizer(model.named_parameters(), kfac_precondition(model, "mse"), lr=0.1, has_run_dim=True)
    ...
        loss_fn(model(x), y).sum().backward()
        opt.step(batch=(x, y))
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .._validate import Bool, NonNegative, Where, accepts, check_nonnegative
from .base import Transform, per_run


def _check_no_lr(transform: Transform) -> Transform:
    if "lr" in transform.hparams:
        raise ValueError("transform already contains scale_by_lr; pass it without the learning rate "
                         "and give lr= to TransformOptimizer (its param groups hold the lr)")
    return transform


def _transform_without_lr(name: str, transform):
    if isinstance(transform, Transform):
        return _check_no_lr(transform)
    if not callable(transform):
        raise TypeError(f"{name} must be a Transform or a function group -> Transform, got {type(transform).__name__}")


class TransformOptimizer(torch.optim.Optimizer):
    r"""Apply :math:`w \leftarrow w - \alpha\, u` where :math:`u` comes from a transformation *without* learning rate.

    The learning rate :math:`\alpha` is read from each param group's ``"lr"`` at
    every step, so ``torch.optim.lr_scheduler`` works unchanged.

    ``params``
        Tensors, ``(name, tensor)`` pairs (``model.named_parameters()``), or
        param-group dicts of either. Names are what masks see (and what K-FAC matches
        its layers by); unnamed tensors are called ``"<group>.<index>"``, e.g. ``"0.3"``.
    ``transform``
        Either a :class:`Transform`, run once per step over *all* parameters
        (masks select by name, e.g. ``add_decayed_weights(5e-4, mask=model.scale_invariant)``),
        or a function ``group -> Transform`` called once per param group with the
        group's dict, for per-group settings the PyTorch way::

            TransformOptimizer([{"params": body, "weight_decay": 5e-4}, {"params": head, "weight_decay": 0.0}],
                               lambda group: chain(add_decayed_weights(group["weight_decay"]), trace(0.9)),
                               lr=0.1)

    ``lr``
        Default learning rate for groups that do not set one (float, or an
        ``(R,)`` tensor when ``has_run_dim``).
    ``has_run_dim``
        False (default): ordinary tensors, viewed with a leading run dimension of 1.
        True: tensors already carry the run dimension (the models of :mod:`lecture_lib.models`).

    ``step(closure=None, **extra)`` passes ``extra`` to the transformation's update, e.g.
    ``step(batch=(x, y))`` for K-FAC. As in ``torch.optim``, a parameter whose ``.grad`` is
    ``None`` is left untouched: it is neither decayed nor moved by momentum, and its state is
    kept (Adam's step count is shared by all tensors, so a parameter frozen for a while and then
    released is bias-corrected with the global count). Add all param groups before the first
    step. The transformation's state is not part of ``state_dict()``.
    """

    @accepts(transform=Where(_transform_without_lr, bad=("sgd", None, 3)), lr=NonNegative(per_run=True),
             has_run_dim=Bool())
    def __init__(self, params, transform: Transform | Callable[[dict], Transform], lr=1e-3,
                 has_run_dim: bool = False, **defaults):
        self.transform, self.has_run_dim = transform, has_run_dim
        self._units = None  # [(transform, group indices, state)], built at the first step
        super().__init__(params, dict(lr=lr, **defaults))

    def add_param_group(self, param_group: dict) -> None:
        if getattr(self, "_units", None) is not None:
            raise RuntimeError("add all param groups before the first step: the transformation's state is built then")
        super().add_param_group(param_group)
        check_nonnegative("lr", self.param_groups[-1]["lr"])

    def _names(self, gi: int) -> list[str]:
        group = self.param_groups[gi]
        return group.get("param_names") or [f"{gi}.{i}" for i in range(len(group["params"]))]

    def _gather(self, groups, use_grad: bool) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` of the groups' parameters (``use_grad``: their gradients, where they have one)."""
        out = {}
        for gi in groups:
            for name, p in zip(self._names(gi), self.param_groups[gi]["params"]):
                t = p.grad if use_grad else p
                if t is not None:
                    out[name] = t if self.has_run_dim else t.unsqueeze(0)
        return out

    def _build_units(self):
        n = len(self.param_groups)
        if isinstance(self.transform, Transform):
            plan = [(self.transform, list(range(n)))]
        else:
            plan = [(_check_no_lr(self.transform(self.param_groups[gi])), [gi]) for gi in range(n)]
        self._units = [(t, groups, t.init(self._gather(groups, use_grad=False))) for t, groups in plan]

    @torch.no_grad()
    def step(self, closure=None, **extra):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._units is None:
            self._build_units()
        for i, (transform, groups, state) in enumerate(self._units):
            grads = self._gather(groups, use_grad=True)          # only parameters with a gradient move
            updates, state = transform.update(grads, state, self._gather(groups, use_grad=False), **extra)
            self._units[i] = (transform, groups, state)
            for gi in groups:
                lr = self.param_groups[gi]["lr"]
                for name, p in zip(self._names(gi), self.param_groups[gi]["params"]):
                    if name in updates:
                        p.add_((-per_run(lr, updates[name], "lr") * updates[name]).view_as(p))
        return loss
