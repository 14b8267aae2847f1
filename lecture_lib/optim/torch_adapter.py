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
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .._validate import check_nonnegative
from .base import Transform, per_run


class TransformOptimizer(torch.optim.Optimizer):
    r"""Apply :math:`w \leftarrow w - \alpha\, u` where :math:`u` comes from a transformation *without* learning rate.

    The learning rate :math:`\alpha` is read from each param group's ``"lr"`` at
    every step, so ``torch.optim.lr_scheduler`` works unchanged.

    ``params``
        Tensors, ``(name, tensor)`` pairs (``model.named_parameters()``), or
        param-group dicts of either. Names are what masks see; unnamed tensors
        are called ``"<group>.<index>"``, e.g. ``"0.3"``.
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

    A parameter whose ``.grad`` is ``None`` is given a zero gradient (so it is
    still decayed). Add all param groups before the first step. The
    transformation's state is not part of ``state_dict()``.
    """

    def __init__(self, params, transform: Transform | Callable[[dict], Transform], lr=1e-3,
                 has_run_dim: bool = False, **defaults):
        if not (isinstance(transform, Transform) or callable(transform)):
            raise TypeError(f"transform must be a Transform or a function group -> Transform, "
                            f"got {type(transform).__name__}")
        if isinstance(transform, Transform):
            self._check_no_lr(transform)
        check_nonnegative("lr", lr)
        self.transform, self.has_run_dim = transform, bool(has_run_dim)
        self._units = None  # [(transform, group indices, state)], built at the first step
        super().__init__(params, dict(lr=lr, **defaults))

    @staticmethod
    def _check_no_lr(transform: Transform) -> Transform:
        if "lr" in transform.hparams:
            raise ValueError("transform already contains scale_by_lr; pass it without the learning rate "
                             "and give lr= to TransformOptimizer (its param groups hold the lr)")
        return transform

    def add_param_group(self, param_group: dict) -> None:
        if getattr(self, "_units", None) is not None:
            raise RuntimeError("add all param groups before the first step: the transformation's state is built then")
        super().add_param_group(param_group)

    def _names(self, gi: int) -> list[str]:
        group = self.param_groups[gi]
        return group.get("param_names") or [f"{gi}.{i}" for i in range(len(group["params"]))]

    def _named(self, gi: int, use_grad: bool) -> dict[str, torch.Tensor]:
        out = {}
        for name, p in zip(self._names(gi), self.param_groups[gi]["params"]):
            t = (p.grad if p.grad is not None else torch.zeros_like(p)) if use_grad else p
            out[name] = t if self.has_run_dim else t.unsqueeze(0)
        return out

    def _gather(self, groups, use_grad: bool) -> dict[str, torch.Tensor]:
        out = {}
        for gi in groups:
            out.update(self._named(gi, use_grad))
        return out

    def _build_units(self):
        n = len(self.param_groups)
        if isinstance(self.transform, Transform):
            plan = [(self.transform, list(range(n)))]
        else:
            plan = [(self._check_no_lr(self.transform(self.param_groups[gi])), [gi]) for gi in range(n)]
        self._units = [(t, groups, t.init(self._gather(groups, use_grad=False))) for t, groups in plan]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._units is None:
            self._build_units()
        for i, (transform, groups, state) in enumerate(self._units):
            params = self._gather(groups, use_grad=False)
            updates, state = transform.update(self._gather(groups, use_grad=True), state, params)
            self._units[i] = (transform, groups, state)
            for gi in groups:
                group = self.param_groups[gi]
                lr = check_nonnegative("lr", group["lr"])
                for name, p in zip(self._names(gi), group["params"]):
                    u = updates[name]
                    p.add_((-per_run(lr, u, "lr") * u).view_as(p))
        return loss
