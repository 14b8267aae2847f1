r"""Gradient transformations: the building block of every optimizer here.

An optimizer is a *chain* of small transformations of the gradient, in the
style of optax. Each transformation is an ``init``/``update`` pair::

    state = t.init(params)
    updates, state = t.update(grads, state, params)
    params = apply_updates(params, updates)

The order of the chain is the algorithm. Adam with L2 regularization adds
:math:`\lambda w` to the gradient *before* the preconditioner; AdamW adds it
*after*::

    adam_l2 = chain(add_decayed_weights(wd), scale_by_adam(), scale_by_lr(lr))
    adamw   = chain(scale_by_adam(), add_decayed_weights(wd), scale_by_lr(lr))

Conventions
-----------
* ``params``, ``grads`` and ``updates`` are ``dict[str, Tensor]`` with the same
  keys. **Every tensor carries a leading run dimension** ``R`` (``R = 1`` for a
  single run), so R configurations train as one computation.
* Every hyperparameter is a Python float or a tensor of shape ``(R,)`` holding
  one value per run; :func:`per_run` broadcasts it against a parameter.
* Updates are *added* to the parameters; ``scale_by_lr`` supplies the minus sign.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch

from .._validate import Where, check_mask, check_runs  # noqa: F401  (re-exported: optim.check_runs)

Params = dict[str, torch.Tensor]
Mask = Mapping[str, bool] | Callable[[str], bool] | None


class Transform(NamedTuple):
    """A gradient transformation: ``init(params) -> state`` and
    ``update(updates, state, params=None, **extra) -> (updates, state)``.

    ``extra`` are keyword arguments a training loop passes to every update, as in optax's
    ``GradientTransformationExtraArgs``: today ``batch=(x, y)``, the mini-batch that K-FAC's
    statistics need. A transformation that does not need one ignores it; combinators
    (``chain``, ``masked``, ``graft``) pass it on. ``updates`` may hold fewer tensors than
    ``init`` saw (a frozen parameter has no gradient): a transformation updates the state of the
    tensors it is given and keeps the others' state unchanged.

    ``hparams`` names the hyperparameters a transformation was built with (e.g.
    ``{"lr": 0.1}``) so that a training loop can record, say, the effective
    learning rate without being told the learning rate twice.
    """

    init: Callable[[Params], Any]
    update: Callable[[Params, Any, Params | None], tuple[Params, Any]]
    hparams: Mapping[str, Any] = {}


class EmptyState(NamedTuple):
    pass


def stateless(fn: Callable[[Params, Params | None], Params], hparams: Mapping[str, Any] | None = None) -> Transform:
    """Wrap a pure function of (updates, params) as a transformation without state.

    ``init`` checks that per-run values in ``hparams`` match the parameters' run count.
    """
    hparams = dict(hparams or {})

    def init(params):
        check_runs(params, **hparams)
        return EmptyState()

    def update(updates, state, params=None, **extra):
        return fn(updates, params), state

    return Transform(init, update, hparams)


def chain(*transforms: Transform) -> Transform:
    """Apply transformations in order; the state is the tuple of their states."""

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None, **extra):
        new_state = []
        for t, s in zip(transforms, state):
            updates, s = t.update(updates, s, params, **extra)
            new_state.append(s)
        return updates, tuple(new_state)

    hparams = {}
    for t in transforms:
        hparams.update(t.hparams)
    return Transform(init, update, hparams)


def apply_updates(params: Params, updates: Params) -> Params:
    """``w <- w + u`` for every tensor (out of place); a tensor without an update is kept."""
    return {k: params[k] + updates[k] if k in updates else params[k] for k in params}


def functional_step(transform: Transform, state, params: Params, grads: Params, **extra) -> tuple[Params, Any]:
    """One optimizer step without side effects: ``(params, state) -> (new params, new state)``.

    ``extra`` (e.g. ``batch=(x, y)`` for K-FAC) is passed to the update."""
    updates, state = transform.update(grads, state, params, **extra)
    return apply_updates(params, updates), state


def per_run(value, like: torch.Tensor, name: str = "per-run hyperparameter") -> torch.Tensor | float:
    """Broadcast a hyperparameter against a parameter with a leading run dimension.

    A Python number is returned unchanged; a tensor of shape ``(R,)`` becomes
    shape ``(R, 1, ..., 1)`` on ``like``'s device and dtype.
    """
    if not isinstance(value, torch.Tensor):
        return value
    if value.dim() == 0:
        return value.to(like)
    if value.shape[0] != like.shape[0]:
        raise ValueError(
            f"{name} has {value.shape[0]} values (one per run) but the parameters hold {like.shape[0]} runs")
    return value.to(like).reshape(-1, *([1] * (like.dim() - 1)))


def run_norm(t: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each run's slice of a tensor, shaped ``(R, 1, ..., 1)`` to broadcast back."""
    return t.flatten(1).norm(dim=1).reshape(-1, *([1] * (t.dim() - 1)))


MASK = Where(lambda name, mask: check_mask(mask, name), bad=({"nope": True}, 3, "w"))  # the declaration of a mask


def need_params(params, who: str) -> Params:
    """``params`` for a transformation that needs the current weights (decay, trust ratio, projection)."""
    if params is None:
        raise ValueError(f"{who} needs the current parameters: call update(updates, state, params)")
    return params


def resolve_mask(mask: Mask, names) -> dict[str, bool]:
    """Turn a mask (dict, predicate or None meaning 'all') into ``{name: bool}``."""
    check_mask(mask)
    if mask is None:
        return {n: True for n in names}
    if callable(mask):
        return {n: bool(mask(n)) for n in names}
    unknown = set(mask) - set(names)
    if unknown:
        raise ValueError(f"mask names unknown parameters {sorted(unknown)}; known: {sorted(names)}")
    return {n: bool(mask.get(n, False)) for n in names}


def find_state(state, kind: type):
    """The first state of type ``kind`` inside a (nested) chain state, or ``None``.

    Chains hold tuples of states and NamedTuple states hold their fields, so a depth-first walk
    over tuples finds e.g. the :class:`~lecture_lib.optim.transforms.ScaleByAdamState` of an Adam chain.
    """
    if isinstance(state, kind):
        return state
    if isinstance(state, tuple):
        for s in state:
            found = find_state(s, kind)
            if found is not None:
                return found
    return None


def stack_runs(values: Mapping[str, Any], dtype=torch.float32) -> tuple[dict, int]:
    """Hyperparameters given as floats, sequences or tensors -> floats or ``(R,)`` tensors, and R.

    Sequences of one value per run become tensors; all per-run lengths must agree (a length-1 value is
    broadcast). This is how a list of learning rates becomes one batched family of runs.
    """
    runs, out = 1, {}
    for name, v in values.items():
        if isinstance(v, (list, tuple)) or type(v).__module__ == "numpy" and getattr(v, "ndim", 0) >= 1:
            v = torch.as_tensor([float(x) for x in v], dtype=torch.float64)
        if isinstance(v, torch.Tensor):
            v = v.to(dtype)
            if v.dim() == 0:
                v = float(v)
            elif v.shape[0] != 1:
                if runs not in (1, v.shape[0]):
                    raise ValueError(f"{name} holds {v.shape[0]} per-run values but another hyperparameter "
                                     f"holds {runs}; give every per-run hyperparameter the same length")
                runs = v.shape[0]
        out[name] = v
    for name, v in out.items():
        if isinstance(v, torch.Tensor) and v.shape[0] != runs:
            out[name] = v.expand(runs).clone()
    return out, runs
