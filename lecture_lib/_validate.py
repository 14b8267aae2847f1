"""Argument checks shared by every public function.

Each check raises a ``ValueError`` (or ``TypeError``) whose message names the
parameter and the accepted range, so that a slider set to a bad value produces
a sentence a student can act on instead of a NaN three cells later.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Integral
from numbers import Real as RealNumber

import torch

Hyper = "float | torch.Tensor"  # a scalar, or one value per run (shape (R,))


def _values(name: str, value) -> torch.Tensor:
    if isinstance(value, bool) or not isinstance(value, (RealNumber, torch.Tensor)):
        raise TypeError(f"{name} must be a real number or a 1-D tensor of per-run values, got {type(value).__name__}")
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.dim() > 1:
        raise ValueError(f"{name} must be a scalar or a 1-D tensor with one value per run, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return t


def check_range(name: str, value, low: float = -math.inf, high: float = math.inf,
                low_inclusive: bool = True, high_inclusive: bool = True):
    """Check that a hyperparameter (scalar or per-run tensor) lies in a range; return it unchanged."""
    t = _values(name, value)
    lo_ok = (t >= low) if low_inclusive else (t > low)
    hi_ok = (t <= high) if high_inclusive else (t < high)
    if not bool((lo_ok & hi_ok).all()):
        lb = "[" if low_inclusive else "("
        hb = "]" if high_inclusive else ")"
        shown = value if t.numel() == 1 else f"values {t.tolist()}"
        raise ValueError(f"{name} must be in {lb}{low:g}, {high:g}{hb}, got {shown}")
    return value


def check_nonnegative(name: str, value):
    return check_range(name, value, 0.0)


def check_positive(name: str, value):
    return check_range(name, value, 0.0, low_inclusive=False)


def check_unit_interval(name: str, value):
    """0 <= value < 1: decay rates such as momentum and betas."""
    return check_range(name, value, 0.0, 1.0, high_inclusive=False)


def check_int(name: str, value, low: int = 1, high: int | None = None) -> int:
    """An integer (Python, numpy or 0-d integer tensor; a float only if integral) in ``[low, high]``."""
    if isinstance(value, bool) or not (isinstance(value, Integral) or (
            isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point()
            and not value.is_complex() and value.dtype != torch.bool)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        rng = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {rng}, got {value}")
    return value


SEED_MAX = 2 ** 32 - 1  # seeds are offset (seed + 1, 1000 * seed + layer) and must stay inside torch's 64 bits


def check_seed(name: str, value) -> int:
    """A random seed: an integer in ``[0, 2**32 - 1]``."""
    return check_int(name, value, low=0, high=SEED_MAX)


def check_seeds(name: str, value, runs: int) -> int | list[int]:
    """One seed shared by all runs (an int) or one per run (a sequence of ``runs`` ints); returned as given."""
    if isinstance(value, torch.Tensor) and value.dim() == 1:
        value = value.tolist()
    if isinstance(value, (Sequence, Iterable)) and not isinstance(value, (str, bytes, Integral)) \
            and not (isinstance(value, torch.Tensor) and value.dim() == 0):
        seeds = list(value)
        if len(seeds) != runs:
            raise ValueError(f"{name} must be an int or a sequence of {runs} ints (one per run), got {len(seeds)} "
                             f"values: {seeds!r}")
        return [check_seed(f"{name}[{i}]", s) for i, s in enumerate(seeds)]
    if isinstance(value, float) or value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an int or a sequence of {runs} ints (one per run), got {value!r}")
    return check_seed(name, value)


def check_sizes(name: str, value, min_len: int = 2) -> list[int]:
    """Layer sizes ``[in, h_1, ..., out]``: a sequence of at least ``min_len`` positive integers."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a sequence of layer sizes [in, ..., out], got {value!r}")
    sizes = list(value)
    if len(sizes) < min_len:
        raise ValueError(f"{name} must list at least {min_len} layer sizes (an input and an output size), got {sizes}")
    return [check_int(f"{name}[{i}]", n) for i, n in enumerate(sizes)]


def check_callable(name: str, value):
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    return value


def check_choice(name: str, value, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def check_tensor(name: str, value, dim: int | None = None, finite: bool = True,
                 shape: tuple | None = None) -> torch.Tensor:
    """A non-empty tensor with ``dim`` dimensions (or exactly ``shape``, ``None`` entries free), finite by default."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if shape is not None:
        dim = len(shape)
    if dim is not None and value.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(value.shape)}")
    if shape is not None and any(want is not None and got != want for got, want in zip(value.shape, shape)):
        wanted = "(" + ", ".join("*" if d is None else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")
        raise ValueError(f"{name} must have shape {wanted}, got {tuple(value.shape)}")
    if value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")
    if value.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    if finite and value.is_floating_point() and not torch.isfinite(value).all():
        raise ValueError(f"{name} must contain only finite values")
    return value


# =========================================================================== declarations
# A public function declares what each parameter accepts once, next to its signature:
#
#     @accepts(lr=Real(0, per_run=True), momentum=Real(0, 1, high_open=True, per_run=True))
#     def sgd(lr, momentum=0.0): ...        # the body holds only the algorithm
#
# ``accepts`` checks the bound arguments at entry (defaults included) and raises a ValueError or
# TypeError naming the parameter. ``fn.__accepts__`` exposes the declarations, so the bad-input
# tests generate their cases from the same source instead of restating every range.
# Relations between parameters (two tensors that must agree in shape) are plain functions
# ``check(arguments) -> None`` passed positionally: ``@accepts(same_rows, x=..., y=...)``.

import functools
import inspect
from dataclasses import dataclass


class Spec:
    """What one parameter accepts; ``check(name, value, arguments)`` raises or returns the value."""

    optional: bool = False      # None is accepted (a default meaning "choose for me")

    def check(self, name: str, value, arguments: Mapping):
        raise NotImplementedError


@dataclass(frozen=True)
class Real(Spec):
    """A real number in ``[low, high]`` (ends open when ``*_open``); with ``per_run`` also an ``(R,)`` tensor;
    with ``sequences`` also a list/tuple/array of them (one per run)."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    per_run: bool = False
    sequences: bool = False
    optional: bool = False

    def check(self, name, value, arguments):
        if self.sequences and (isinstance(value, (list, tuple)) or getattr(value, "ndim", None) == 1
                               and not isinstance(value, torch.Tensor)):
            if len(value) == 0:
                raise ValueError(f"{name} must not be empty")
            for i, v in enumerate(value):
                check_range(f"{name}[{i}]", v, self.low, self.high, not self.low_open, not self.high_open)
            return value
        return check_range(name, value, self.low, self.high, not self.low_open, not self.high_open)


def Positive(**kw) -> Real:
    """> 0 (learning rates of some methods, eps, scales)."""
    return Real(0.0, low_open=True, **kw)


def NonNegative(**kw) -> Real:
    """>= 0 (learning rates, weight decay, damping)."""
    return Real(0.0, **kw)


def Unit(**kw) -> Real:
    """[0, 1): decay rates such as momentum and betas."""
    return Real(0.0, 1.0, high_open=True, **kw)


@dataclass(frozen=True)
class Int(Spec):
    """An integer in ``[low, high]`` (``high=None``: no upper bound)."""

    low: int = 1
    high: int | None = None
    optional: bool = False

    def check(self, name, value, arguments):
        return check_int(name, value, self.low, self.high)


@dataclass(frozen=True)
class Seed(Spec):
    """A random seed in ``[0, 2**32 - 1]``; with ``runs`` (an int, or the name of the argument holding R or a
    batched model with R ``runs``), also one seed per run."""

    runs: str | int | None = None
    optional: bool = False

    def check(self, name, value, arguments):
        runs = self.runs if self.runs is None or isinstance(self.runs, int) else arguments[self.runs]
        runs = getattr(runs, "runs", runs)          # a batched model: its number of runs
        if not isinstance(runs, int):
            return check_seed(name, value)
        return check_seeds(name, value, runs)


@dataclass(frozen=True)
class Choice(Spec):
    """One of a fixed set of names (``options``)."""

    options: tuple
    optional: bool = False

    def check(self, name, value, arguments):
        return check_choice(name, value, self.options)


@dataclass(frozen=True)
class Bool(Spec):
    optional: bool = False

    def check(self, name, value, arguments):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
        return value


@dataclass(frozen=True)
class Tensor(Spec):
    """A non-empty real tensor with ``dim`` dimensions or ``shape`` (``None`` entries free), finite by default."""

    dim: int | None = None
    shape: tuple | None = None
    finite: bool = True
    optional: bool = False

    def check(self, name, value, arguments):
        return check_tensor(name, value, self.dim, self.finite, self.shape)


@dataclass(frozen=True)
class Sizes(Spec):
    """Layer sizes ``[in, h_1, ..., out]``: at least ``min_len`` positive integers."""

    min_len: int = 2
    optional: bool = False

    def check(self, name, value, arguments):
        return check_sizes(name, value, self.min_len)


@dataclass(frozen=True)
class Function(Spec):
    """Anything callable."""

    optional: bool = False

    def check(self, name, value, arguments):
        return check_callable(name, value)


@dataclass(frozen=True)
class Instance(Spec):
    """An instance of ``kind`` (a class or a tuple of classes)."""

    kind: type | tuple
    optional: bool = False

    def check(self, name, value, arguments):
        if not isinstance(value, self.kind):
            kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
            raise TypeError(f"{name} must be a {' or '.join(k.__name__ for k in kinds)}, got {type(value).__name__}")
        return value


@dataclass(frozen=True)
class Where(Spec):
    """A custom rule: ``rule(name, value)`` raises ValueError/TypeError naming ``name`` (or returns the value).
    ``bad`` lists values the rule rejects (the bad-input tests draw from them)."""

    rule: Callable
    bad: tuple = ()
    optional: bool = False

    def check(self, name, value, arguments):
        out = self.rule(name, value)
        return value if out is None else out


def sequence_of(spec: Spec, bad: tuple, optional: bool = False) -> Where:
    """Declares a non-empty sequence whose entries ``name[i]`` each satisfy ``spec`` (passed on as a tuple);
    ``optional``: None is accepted too."""

    def rule(name, values):
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise TypeError(f"{name} must be a sequence, got {values!r}")
        values = list(values)
        if not values:
            raise ValueError(f"{name} must not be empty")
        return tuple(spec.check(f"{name}[{i}]", v, {}) for i, v in enumerate(values))

    return Where(rule, bad=bad, optional=optional)


def accepts(*relations: Callable[[Mapping], None], **specs: Spec):
    """Declare what a function's parameters accept; check them when it is called.

    ``specs`` maps parameter names to :class:`Spec` objects; ``relations`` are functions of the
    bound arguments (a dict, defaults applied) that check constraints between parameters.
    Values returned by a spec (e.g. ``3.0`` turned into ``3`` by :class:`Int`) are passed on.
    """
    def decorate(fn):
        signature = inspect.signature(fn)
        unknown = set(specs) - set(signature.parameters)
        if unknown:
            raise TypeError(f"@accepts on {fn.__qualname__} declares unknown parameters {sorted(unknown)}")

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
            for name, spec in specs.items():
                value = arguments[name]
                if value is None and spec.optional:
                    continue
                arguments[name] = spec.check(name, value, arguments)
            for relation in relations:
                relation(arguments)
            return fn(*bound.args, **bound.kwargs)

        checked.__accepts__ = dict(specs)
        checked.__relations__ = tuple(relations)
        return checked

    return decorate


def declared(fn) -> dict[str, Spec]:
    """The parameter declarations of a function (or class) decorated with :func:`accepts`."""
    target = fn.__init__ if isinstance(fn, type) else fn
    return dict(getattr(target, "__accepts__", {}))


# =========================================================================== tensors of the core
# Specs and relations for the models, losses and data sets: class labels, batches of inputs, and
# tensors whose shapes must agree. None of these reads a tensor's values unless its docstring says so
# (a loss runs every training step: reading values on a GPU would wait for the device).

def check_labels(name: str, value, classes: float | None = None) -> torch.Tensor:
    """A non-empty tensor of integer class indices; with ``classes`` (``math.inf``: any number of them),
    also each in ``[0, classes)``, which reads the values."""
    check_tensor(name, value, finite=False)
    if value.is_floating_point() or value.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices (torch.long), got dtype {value.dtype}")
    if classes is not None:
        low, high = (int(v) for v in torch.aminmax(value))
        if low < 0 or high >= classes:
            wanted = "class indices >= 0" if math.isinf(classes) else f"class indices in [0, {int(classes) - 1}]"
            raise ValueError(f"{name} must hold {wanted}, got values from {low} to {high}")
    return value


def Labels(classes: float | None = None, **kw) -> Where:
    """Integer class indices (:func:`check_labels`); which shape, the function's relations say."""
    return Where(functools.partial(check_labels, classes=classes),
                 bad=(torch.tensor([0.0, 1.0]), torch.tensor([True, False]), torch.zeros(0, dtype=torch.long),
                      "0", None) + ((torch.tensor([0, -1]),) if classes is not None else ()), **kw)


@dataclass(frozen=True)
class Scalar(Real):
    """A real number in a range shared by all runs: a one-element tensor passes, an ``(R,)`` tensor does not."""

    def check(self, name, value, arguments):
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            raise ValueError(f"{name} must be one number shared by all runs, got shape {tuple(value.shape)}")
        return super().check(name, value, arguments)


def fits(name: str, reference: str, shapes: Callable[[tuple], Iterable[tuple]]):
    """Relation: tensor ``name`` has one of the shapes that ``shapes(reference.shape)`` lists."""
    def relation(arguments):
        value, ref = arguments[name], arguments[reference]
        allowed = [tuple(s) for s in shapes(tuple(ref.shape))]
        if tuple(value.shape) not in allowed:
            raise ValueError(f"{name} of shape {tuple(value.shape)} and {reference} of shape {tuple(ref.shape)} do "
                             f"not match: {name} must have shape {' or '.join(map(str, allowed))}")

    relation.__name__ = f"{name}_fits_{reference}"
    return relation


def labels_below(name: str, reference: str):
    """Relation: labels ``name`` index the ``reference.shape[-1]`` classes of a ``(..., C)`` tensor.

    Reads the labels on the CPU only: on a GPU reading them would wait for the device at every step
    (an out-of-range label then fails inside the kernel, with the device's own message)."""
    def relation(arguments):
        labels = arguments[name]
        if labels.device.type == "cpu":
            check_labels(name, labels, arguments[reference].shape[-1])

    relation.__name__ = f"{name}_below_{reference}"
    return relation


def same_size(dim: int, *names: str):
    """Relation: the tensors ``names`` agree in dimension ``dim`` (``0``: as many rows; ``-1``: as many features)."""
    what = {0: "rows", -1: "features", 1: "features"}.get(dim, f"entries along dimension {dim}")

    def relation(arguments):
        first = arguments[names[0]]
        for other in names[1:]:
            t = arguments[other]
            if t.dim() == 0 or t.shape[dim] != first.shape[dim]:
                raise ValueError(f"{names[0]} has {first.shape[dim]} {what} but {other} has shape {tuple(t.shape)}")

    relation.__name__ = f"same_{what}"
    return relation


def check_batch(name: str, x, runs: int, features: int | None = None, like: torch.Tensor | None = None,
                shared: bool = True, min_batch: int = 1, size_name: str = "features") -> torch.Tensor:
    """The input of a model holding ``runs`` copies: ``(runs, batch, features)``, or ``(batch, features)``
    shared by all runs when ``shared``; at least ``min_batch`` examples; the dtype of ``like``.
    ``size_name``: the model's parameter that set ``features`` (named in the message)."""
    f = "features" if features is None else features
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch, {f}), got {type(x).__name__}")
    if not (x.dim() == 3 and x.shape[0] == runs or shared and x.dim() == 2):
        shapes = f"(batch, {f}) or ({runs}, batch, {f})" if shared else f"({runs}, batch, {f})"
        raise ValueError(f"{name} must have shape {shapes}, got {tuple(x.shape)}")
    if features is not None and x.shape[-1] != features:
        raise ValueError(f"{name} has {x.shape[-1]} features, the model expects {size_name}={features}: "
                         f"shape {tuple(x.shape)}")
    if x.shape[-2] < min_batch:
        raise ValueError(f"{name} must hold at least {min_batch} example{'s' * (min_batch > 1)} per run, "
                         f"got shape {tuple(x.shape)}")
    if like is not None and x.dtype != like.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the model's weights are {like.dtype}: "
                        f"convert one of them (x.to({like.dtype}) or model.to(...))")
    return x


def init_accepts(*relations: Callable[[Mapping], None], **specs: Spec):
    """:func:`accepts` for a class's ``__init__``, as a class decorator (above ``@dataclass``, whose
    generated ``__init__`` it wraps): ``declared(cls)`` then lists the declarations."""
    def decorate(cls):
        cls.__init__ = accepts(*relations, **specs)(cls.__init__)
        return cls

    return decorate


def Key(registry: Mapping, what: str, new: bool = False, **kw) -> Where:
    """A name in ``registry`` (looked up at each call, so entries registered later count); with ``new``,
    a string that is not in it yet (registering one twice is a mistake)."""
    def rule(name, value):
        if new and (not isinstance(value, str) or value in registry):
            raise ValueError(f"{what} {value!r} ({name}) is registered twice" if isinstance(value, str) else
                             f"{what} names ({name}) must be strings, got {value!r}")
        if not new and (not isinstance(value, str) or value not in registry):
            raise ValueError(f"unknown {what} {value!r} ({name}); known: {', '.join(sorted(registry))}")

    return Where(rule, bad=(None, 3) if new else (None, 3, "nope"), **kw)


# =========================================================================== models, batches, runs, layers
# One declaration per rule that several modules share (a batch of inputs, a run index, a layer name,
# a square matrix, per-run values, a model, a loss, a gradient transformation, an array of numbers).
# Choices that belong to other modules (the loss names) are passed in as arguments: this module
# imports only torch, numpy and the standard library.

import numpy as np
from torch import nn


def check_inputs_batch(name: str, x) -> torch.Tensor:
    """A finite batch of inputs: ``(batch, features)`` shared by the runs, or ``(runs, batch, features)``."""
    if check_tensor(name, x).dim() not in (2, 3):
        raise ValueError(f"{name} must have shape (batch, features) or (runs, batch, features), got {tuple(x.shape)}")
    return x


def Inputs(**kw) -> Where:
    """A batch of inputs for a batched model (:func:`check_inputs_batch`)."""
    return Where(check_inputs_batch, bad=(torch.ones(3), torch.ones(1, 1, 2, 3), torch.full((3, 2), math.nan),
                                          torch.empty(0, 2), "x", None), **kw)


def one_target_per_example(x: str = "x", y: str = "y", per_run: bool = True):
    """Relation: ``y`` (if given) holds one target per example of the batch ``x`` (``x.shape[-2]`` examples):
    ``(batch, ...)``, or with ``per_run`` also ``(runs, batch, ...)``."""
    def relation(arguments):
        inputs, targets = arguments[x], arguments.get(y)
        if targets is None:
            return
        batch = inputs.shape[-2] if inputs.dim() >= 2 else inputs.shape[0]
        if targets.shape[0] != batch and not (per_run and targets.dim() >= 2 and targets.shape[1] == batch):
            raise ValueError(f"{y} must hold one target per example of {x} ({batch}), got shape {tuple(targets.shape)}")

    relation.__name__ = f"{y}_matches_{x}"
    return relation


def runs_of(model: nn.Module) -> int:
    """The number of runs of a batched model: the leading dimension of its parameters."""
    first = next(model.parameters(), None)
    if first is None or first.dim() == 0:
        raise ValueError("model must have parameters with a leading run dimension")
    return first.shape[0]


def run_of(*names: str, model: str = "model"):
    """Relation: each argument in ``names`` (an int, or a sequence of ints) indexes a run of ``model``."""
    def relation(arguments):
        last = runs_of(arguments[model]) - 1
        for name in names:
            value = arguments[name]
            if isinstance(value, (list, tuple)):
                for i, r in enumerate(value):
                    check_int(f"{name}[{i}] (a run of {model})", r, 0, last)
            else:
                check_int(f"{name} (a run of {model})", value, 0, last)

    relation.__name__ = f"{'_'.join(names)}_of_{model}"
    return relation


def one_of(name: str, options: Callable[[Mapping], Iterable], what: str):
    """Relation: argument ``name`` is one of ``options(arguments)`` (e.g. the layers of a model); ``what``
    says what they are (``"a linear layer of model"``)."""
    def relation(arguments):
        allowed, value = list(options(arguments)), arguments[name]
        if not any(type(value) is type(o) and value == o for o in allowed):
            raise ValueError(f"{name} must name {what}, one of {allowed}; got {value!r}")

    relation.__name__ = f"{name}_is_known"
    return relation


@dataclass(frozen=True)
class Matrix(Spec):
    """A square matrix ``(n, n)``; with ``batched`` a batch of them ``(..., n, n)``; with ``definite`` symmetric
    positive definite (tested in float64, which reads the values)."""

    batched: bool = False
    definite: bool = False
    finite: bool = True
    optional: bool = False

    def check(self, name, value, arguments):
        check_tensor(name, value, dim=None if self.batched else 2, finite=self.finite)
        if value.dim() < 2 or value.shape[-1] != value.shape[-2]:
            what = "a (batch of) square matrices" if self.batched else "a square matrix"
            raise ValueError(f"{name} must be {what}, got shape {tuple(value.shape)}")
        c = value.to(torch.float64)
        if self.definite and not (torch.allclose(c, c.mT, rtol=1e-8, atol=1e-12 * float(c.abs().max()))
                                  and float(torch.linalg.eigvalsh(c).min()) > 0):
            raise ValueError(f"{name} must be a symmetric positive definite matrix, got shape {tuple(value.shape)}")
        return value

    @property
    def bad(self) -> tuple:
        f64 = torch.float64
        out = (torch.ones(2, 3, dtype=f64), torch.ones(2, dtype=f64), "M", None)
        if not self.batched:
            out += (torch.ones(2, 2, 2, dtype=f64),)
        if self.finite:
            out += (torch.full((2, 2), math.nan, dtype=f64),)
        if self.definite:
            out += (-torch.eye(2, dtype=f64), torch.zeros(2, 2, dtype=f64),
                    torch.tensor([[1.0, 0.9], [-0.9, 1.0]], dtype=f64))
        return out if not self.optional else tuple(v for v in out if v is not None)


def check_per_run(runs: int, of: str, values: Mapping, single: bool = False) -> None:
    """Every per-run value in ``values`` (a 1-D tensor, array or sequence) holds ``runs`` values (with
    ``single`` also 1, broadcast); ``of`` names what holds the ``runs`` runs."""
    for name, value in values.items():
        n = len(value) if np.ndim(value) == 1 else None
        if n is not None and n != runs and not (single and n == 1):
            raise ValueError(f"{name} holds {n} per-run values but {of} holds {runs} runs; "
                             f"pass a float or {runs} values, one per run")


def one_per_run(*names: str, runs: Callable[[Mapping], int], of: str = "runs", single: bool = False):
    """Relation: the per-run values among ``names`` hold ``runs(arguments)`` values (:func:`check_per_run`)."""
    def relation(arguments):
        check_per_run(runs(arguments), of, {name: arguments[name] for name in names}, single)

    relation.__name__ = f"{'_'.join(names)}_one_per_run"
    return relation


def check_runs(params: Mapping[str, torch.Tensor], **hparams) -> int | None:
    """Check that all parameters share one run count ``R`` and every ``(R,)`` hyperparameter matches it.

    Returns ``R`` (``None`` for an empty ``params``); raises ``ValueError`` naming the culprit.
    """
    runs = {name: p.shape[0] if p.dim() > 0 else None for name, p in params.items()}
    if any(r is None for r in runs.values()):
        raise ValueError(f"every parameter needs a leading run dimension; scalars: "
                         f"{sorted(n for n, r in runs.items() if r is None)}")
    if len(set(runs.values())) > 1:
        raise ValueError(f"parameters disagree on the number of runs (leading dimension): {runs}")
    R = next(iter(runs.values()), None)
    for name, value in hparams.items():
        if isinstance(value, torch.Tensor) and value.dim() == 1 and R is not None and value.shape[0] != R:
            raise ValueError(f"{name} has {value.shape[0]} values (one per run) but the parameters hold {R} runs")
    return R


def check_mask(mask, name: str = "mask"):
    """A mask is ``None`` (all tensors), a dict ``{param name: bool}`` or a predicate ``name -> bool``."""
    if mask is None or callable(mask) or isinstance(mask, Mapping):
        return mask
    raise TypeError(f"{name} must be a dict {{param name: bool}}, a function name -> bool, or None; "
                    f"got {type(mask).__name__}")


@dataclass(frozen=True)
class Model(Spec):
    """A ``torch.nn.Module``; with ``batched``, one of lecture_lib's batched models: an integer attribute
    ``runs`` and parameters, each with a leading run dimension of that size."""

    batched: bool = False
    optional: bool = False

    def check(self, name, model, arguments):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{name} must be a torch.nn.Module from lecture_lib.models, got {type(model).__name__}")
        if not self.batched:
            return model
        runs = getattr(model, "runs", None)
        if not isinstance(runs, int):
            raise TypeError(f"{name} must have an integer attribute `runs` (the leading run dimension of its parameters)")
        bad = [(n, tuple(p.shape)) for n, p in model.named_parameters() if p.dim() == 0 or p.shape[0] != runs]
        if bad or not any(True for _ in model.parameters()):
            raise ValueError(f"{name} needs parameters, each with a leading run dimension of size model.runs={runs}; "
                             f"got {bad or 'no parameters'}")
        return model

    @property
    def bad(self) -> tuple:
        return ("mlp", 3) + ((nn.Linear(3, 1),) if self.batched else ()) + (() if self.optional else (None,))


@dataclass(frozen=True)
class Loss(Spec):
    """A loss: a name in ``losses`` (a mapping name -> function), or one of its functions, returned as its
    name; with ``custom`` also any other callable, passed on as given."""

    losses: Mapping
    custom: bool = False
    optional: bool = False

    def check(self, name, loss, arguments):
        if isinstance(loss, str):
            return check_choice(name, loss, self.losses)
        if self.custom and callable(loss):
            return loss
        for key, fn in self.losses.items():
            if loss is fn:
                return key
        raise (TypeError if self.custom else ValueError)(
            f"{name} must be one of {', '.join(map(repr, self.losses))} (a name or the function from "
            f"lecture_lib.losses){', a callable or None' if self.custom else ''}, got {loss!r}")

    @property
    def bad(self) -> tuple:
        return ("hinge", 3) + (() if self.optional else (None,))


@dataclass(frozen=True)
class Optimizer(Spec):
    """A gradient transformation of lecture_lib.optim: an object with ``init`` and ``update``."""

    optional: bool = False

    def check(self, name, optimizer, arguments):
        if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
            raise TypeError(f"{name} must be a gradient transformation (lecture_lib.optim: init/update/hparams), "
                            f"got {type(optimizer).__name__}")
        return optimizer

    @property
    def bad(self) -> tuple:
        return ("sgd", torch.optim.SGD) + (() if self.optional else (None,))


def as_array(name: str, value) -> np.ndarray:
    """``value`` as a float64 numpy array; a ``TypeError`` naming ``name`` if it holds no numbers."""
    try:
        return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of numbers, got {type(value).__name__}") from None


@dataclass(frozen=True)
class Array(Spec):
    """Numbers (a list, numpy array or tensor), passed on as a float64 numpy array. ``ndim=2``: a per-step
    table ``(K, R)`` of a record with ``K >= min_rows``; ``ndim=1``: flattened to a vector. ``positive``:
    its finite entries are > 0; ``finite``: all entries are finite. ``also_bad``: values that the function's
    relations reject (the bad-input tests draw from them too)."""

    ndim: int | None = None
    min_rows: int = 1
    positive: bool = False
    finite: bool = False
    also_bad: tuple = ()
    optional: bool = False

    def check(self, name, value, arguments):
        a = as_array(name, value)
        if self.ndim == 1:
            a = a.ravel()
        if self.ndim == 2 and (a.ndim != 2 or a.shape[0] < self.min_rows):
            raise ValueError(f"{name} must have shape (K, R) with K >= {self.min_rows}, got {a.shape}")
        if self.positive and np.any(a[np.isfinite(a)] <= 0):
            raise ValueError(f"{name} must be positive")
        if self.finite and not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be finite")
        return a

    @property
    def bad(self) -> tuple:
        out = ("a", [1.0, "b"])
        if self.ndim == 2:
            out += (np.ones(4), np.ones((self.min_rows - 1, 2)) if self.min_rows > 1 else np.ones((2, 2, 2)))
        if self.positive:
            out += (np.zeros((4, 2)) if self.ndim == 2 else np.array([1.0, -1.0, 1.0]),)
        if self.finite:
            out += (np.array([0.0, np.nan, 1.0]),)
        if (self.ndim == 2 or self.finite) and not self.optional:
            out += (None,)
        return out + self.also_bad
