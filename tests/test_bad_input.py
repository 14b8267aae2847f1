"""Bad input everywhere: every public entry point of the science core rejects bad arguments by name.

One shared table (:data:`ENTRIES`) lists the public functions of ``lecture_lib`` with a small valid
call and, per numeric/shape/choice parameter, a :class:`Spec` of what it accepts. Hypothesis
strategies derived from each spec generate what it must *not* accept: negative numbers, zero where
a positive value is required, NaN, ±inf, values above a documented upper bound, strings and other
wrong types, empty tensors, tensors of the wrong shape, per-run hyperparameter tensors of the wrong
length. Every one must raise ``ValueError`` or ``TypeError`` whose message names the parameter,
never a crash, a hang, a torch ``RuntimeError``, an ``IndexError`` or a silent NaN.

Two properties go the other way: hyperparameters drawn *inside* the accepted ranges give finite
results on a tiny problem, or a divergence the engine records (``Record.diverged_at``).

The panels side: every panel of ``lecture_lib/viz/*_panels.py`` is built (``LECTURE_FAST=1``, in a
subprocess so that the fast constants do not leak into other tests), each control is set to its
extremes (every option of dropdowns and toggles), and the panel must end "ok" or "bad" with a
message, never "error", with no NaN/inf in any trace's x or y.

Hypothesis runs derandomized and without an example database (repeatable, nothing written to the
checkout).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from lecture_lib import _validate as V
from lecture_lib.experiments import adaptive as adaptive_experiments
from lecture_lib.experiments import ics as ics_experiments
from lecture_lib.experiments import kronecker as kronecker_experiments
from lecture_lib import (adaptive, curvature, data, engine, equilibrium, exercises, ics, kfac_statistics, kronecker,
                         losses, mechanisms, models, optim, scale_invariance)
from lecture_lib.experiments import implicit_decay
from lecture_lib.optim import kfac_transform as kfac_mod

eqx = importlib.import_module("lecture_lib.experiments.equilibrium")

F64 = torch.float64
R = 3                       # runs of every batched object in the table
NAN, INF = math.nan, math.inf
HERE = Path(__file__).resolve().parent

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


# ============================================================================ what a parameter accepts
NOT_A_NUMBER = st.sampled_from(["0.1", None, {"v": 0.1}, b"1", 1j, object()])


def _not_a_number(optional: bool):
    return NOT_A_NUMBER.filter(lambda v: v is not None) if optional else NOT_A_NUMBER
SEQUENCES = st.sampled_from([[0.1], (0.1,)])


def _below(low: float, open_: bool):
    return st.floats(max_value=low, allow_nan=False, allow_infinity=False).filter(
        lambda v: v < low or (open_ and v == low))


def _above(high: float, open_: bool):
    return st.floats(min_value=high, allow_nan=False, allow_infinity=False).filter(
        lambda v: v > high or (open_ and v == high))


class Spec:
    def bad(self, runs: int | None) -> st.SearchStrategy:
        raise NotImplementedError


@dataclass(frozen=True)
class Num(Spec):
    """A real number in ``[low, high]`` (ends open when ``*_open``), or also an ``(R,)`` tensor (``per_run``)."""

    low: float = -INF
    high: float = INF
    low_open: bool = False
    high_open: bool = False
    per_run: bool = False
    good: float = 0.5
    sequences: bool = False      # lists/tuples/arrays of per-run values are accepted (not bad)
    optional: bool = False       # None is accepted (a default)

    def bad_floats(self):
        options = [st.sampled_from([NAN, INF, -INF])]
        if self.low > -INF:
            options.append(_below(self.low, self.low_open))
        if self.high < INF:
            options.append(_above(self.high, self.high_open))
        return st.one_of(options)

    def bad(self, runs):
        options = [self.bad_floats(), _not_a_number(self.optional)]
        if not self.sequences:
            options.append(SEQUENCES)
        if self.per_run:
            n = runs or 2
            options += [
                st.just(torch.full((n, 2), self.good, dtype=F64)),                 # 2-D
                st.just(torch.empty(0, dtype=F64)),                                # empty
                st.builds(lambda v, i: torch.tensor([self.good] * i + [v] + [self.good] * (n - 1 - i), dtype=F64),
                          self.bad_floats(), st.integers(0, n - 1)),               # one bad run
            ]
            if runs is not None:
                options += [st.just(torch.full((runs + 1,), self.good, dtype=F64)),
                            st.just(torch.full((max(runs - 1, 2) if runs != 2 else 4,), self.good, dtype=F64))]
        return st.one_of(options)


def pos(**kw):
    return Num(0.0, low_open=True, **kw)


def nonneg(**kw):
    return Num(0.0, **kw)


def unit(**kw):
    return Num(0.0, 1.0, high_open=True, **kw)


@dataclass(frozen=True)
class Int(Spec):
    low: int = 1
    high: int | None = None
    optional: bool = False

    def bad(self, runs):
        options = [st.integers(max_value=self.low - 1), _not_a_number(self.optional), st.just(True),
                   st.sampled_from([NAN, INF, -INF, 2.5, self.low + 0.5])]
        if self.high is not None:
            options.append(st.integers(min_value=self.high + 1, max_value=self.high + 1000))
        return st.one_of(options)


@dataclass(frozen=True)
class Seed(Spec):
    """A seed: an int >= 0 (or, with ``per_run``, a sequence of R of them)."""

    per_run: bool = False

    def bad(self, runs):
        options = [st.integers(max_value=-1), st.integers(min_value=2 ** 64, max_value=2 ** 70),
                   st.sampled_from([1.5, NAN, "0", True])]
        if self.per_run and runs:
            options += [st.just(list(range(runs + 1))), st.just([0] * (runs - 1) + [-1]),
                        st.just([0] * (runs - 1) + [0.5])]
        return st.one_of(options)


@dataclass(frozen=True)
class Choice(Spec):
    options: tuple

    def bad(self, runs):
        return st.one_of(st.text(max_size=6).filter(lambda s: s not in self.options), st.sampled_from([None, 3]))


@dataclass(frozen=True)
class Obj(Spec):
    """Anything from a fixed list of bad values (wrong types, masks naming unknown parameters, ...)."""

    values: tuple

    def bad(self, runs):
        return st.sampled_from(self.values)


@dataclass(frozen=True)
class Tensor(Spec):
    """A float tensor of ``shape`` (``None``: any positive size), finite unless ``finite=False``."""

    shape: tuple
    finite: bool = True
    dtype: torch.dtype = F64
    nonempty: bool = True
    optional: bool = False       # None is accepted (a default)

    def _make(self, shape, fill=None):
        t = torch.linspace(0.1, 1.0, math.prod(shape), dtype=self.dtype).reshape(shape) if math.prod(shape) \
            else torch.empty(shape, dtype=self.dtype)
        if fill is not None and t.numel():
            t = t.clone()
            t.view(-1)[t.numel() // 2] = fill
        return t

    def bad(self, runs):
        base = tuple(3 if d is None else d for d in self.shape)
        bad_shapes = [base + (2,)]
        if len(base) > 1:
            bad_shapes.append(base[1:])
        for i, d in enumerate(self.shape):
            if d is not None:
                bad_shapes.append(base[:i] + (d + 1,) + base[i + 1:])
        if self.nonempty and base:
            bad_shapes.append((0,) + base[1:])
        options = [st.sampled_from(bad_shapes).map(self._make),
                   st.sampled_from(["x", 1.0] if self.optional else ["x", None, 1.0])]
        if self.finite:
            options.append(st.sampled_from([NAN, INF, -INF]).map(lambda v: self._make(base, v)))
        return st.one_of(options)


# ============================================================================ specs from the library's declarations
def _good(low: float, high: float, low_open: bool, high_open: bool) -> float:
    """A value inside the range (per-run tensors are built around it, with one bad run)."""
    for v in (0.5, 0.1, 2.0, low + 1.0, high - 1.0):
        if (v > low or (v == low and not low_open)) and (v < high or (v == high and not high_open)):
            return v
    return low


def from_declaration(d: V.Spec) -> Spec:
    """The test-side spec (what to draw as *bad*) of one of ``lecture_lib``'s parameter declarations."""
    if isinstance(d, V.Real):
        return Num(d.low, d.high, d.low_open, d.high_open, per_run=d.per_run, sequences=d.sequences,
                   optional=d.optional, good=_good(d.low, d.high, d.low_open, d.high_open))
    if isinstance(d, V.Int):
        return Int(d.low, d.high, optional=d.optional)
    if isinstance(d, V.Seed):
        return Seed(per_run=d.runs is not None)
    if isinstance(d, V.Choice):
        return Choice(tuple(d.options))
    if isinstance(d, V.Tensor):
        shape = d.shape if d.shape is not None else (None,) * (d.dim or 1)
        return Tensor(tuple(shape), finite=d.finite, optional=d.optional)
    if isinstance(d, V.Sizes):
        return Obj(([], [3], [3, 0, 2], [3, -1], [3, 2.5], "ab", None)[d.min_len - 2 if d.min_len > 2 else 0:])
    if isinstance(d, (V.Bool,)):
        return Obj(("yes", 1) if d.optional else ("yes", 1, None))
    if isinstance(d, (V.Function, V.Instance)):
        return Obj((3, "x") if d.optional else (3, "x", None))
    if isinstance(d, (V.Where, V.Matrix, V.Model, V.Loss, V.Optimizer, V.Array)):
        assert d.bad, f"a {type(d).__name__} declaration must list values it rejects (bad=...)"
        return Obj(tuple(d.bad))
    raise TypeError(f"no test strategy for declarations of type {type(d).__name__}")


def declared(fn, *, skip=(), **overrides) -> dict[str, Spec]:
    """Every declared parameter of ``fn`` as a test spec (``overrides`` replace or add some; ``skip`` drops some)."""
    specs = {name: from_declaration(d) for name, d in V.declared(fn).items() if name not in skip}
    assert specs or overrides, f"{getattr(fn, '__qualname__', fn)} declares no parameters (@accepts)"
    specs.update(overrides)
    return specs


# ============================================================================ tiny problems


@functools.lru_cache(maxsize=None)
def regression_data(n=16, dim=3):
    return data.linear_regression(n=n, dim=dim, n_test=4, seed=0, dtype=F64)


@functools.lru_cache(maxsize=None)
def digits_small():
    d = data.digits(dtype=torch.float32)
    return data.Dataset(d.x_train[:96], d.y_train[:96], d.x_test[:32], d.y_test[:32], d.task, "digits (96)",
                        dict(d.meta))


def tiny_mlp(runs=R, sizes=(3, 4, 1), **kw):
    return models.MLP(list(sizes), runs=runs, dtype=F64, **kw)


def tree(runs=R, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(runs, 4, 3, generator=g, dtype=F64), "b": torch.randn(runs, 4, generator=g, dtype=F64)}


def run_transform(t, runs=R, steps=2):
    """init and a few updates of a transformation on a tiny R-run tree; returns the final params."""
    params = tree(runs)
    state = t.init(params)
    for k in range(steps):
        params, state = optim.functional_step(t, state, params, tree(runs, seed=k + 1))
    return params


DEFAULT = object()   # "not given" (None is a value the table may pass on purpose)


def train_tiny(optimizer=DEFAULT, model=DEFAULT, steps=3, **kw):
    model = tiny_mlp() if model is DEFAULT else model
    optimizer = optim.sgd(0.1) if optimizer is DEFAULT else optimizer
    args = dict(model=model, data=regression_data(), loss="mse", optimizer=optimizer, steps=steps)
    args.update(kw)
    return engine.train(**args)


def kfac_train(model=DEFAULT, loss="mse", **kw):
    net = tiny_mlp()
    return train_tiny(optim.kfac_precondition(net if model is DEFAULT else model, loss, **kw), model=net, steps=2)


def kfac_alias_train(model=DEFAULT, loss="mse", **kw):
    net = tiny_mlp()
    return train_tiny(optim.kfac(net if model is DEFAULT else model, loss, **kw), model=net, steps=2)


def with_model(fn, make=None):
    """``fn(model, ...)`` with a fresh small model unless the table passes a (bad) ``model``."""
    def call(model=DEFAULT, **kw):
        return fn((make or curv_model)() if model is DEFAULT else model, **kw)
    return call


def on_flat(fn):
    """``fn(matrix, flat, ...)`` on the small model's flat view and a (17, 17) matrix unless the table passes them."""
    def call(matrix=DEFAULT, flat=DEFAULT, **kw):
        matrix = torch.eye(17, dtype=F64) if matrix is DEFAULT else matrix
        return fn(matrix, curvature.flatten(curv_model()) if flat is DEFAULT else flat, **kw)
    return call


def transform_optimizer_step(lr=0.1, transform=DEFAULT, has_run_dim=False):
    net = torch.nn.Linear(3, 2).double()
    opt = optim.TransformOptimizer(net.parameters(), optim.trace(0.9) if transform is DEFAULT else transform, lr=lr,
                                   has_run_dim=has_run_dim)
    net(torch.ones(4, 3, dtype=F64)).sum().backward()
    opt.step()
    return net


def forward(model_fn, x=DEFAULT, **kw):
    model = model_fn(**kw)
    x = torch.ones(5, model_in(model), dtype=next(model.parameters()).dtype) if x is DEFAULT else x
    return model(x)


def model_in(model):
    if hasattr(model, "linears"):
        return model.linears[0].in_features
    return getattr(model, "in_features", getattr(model, "dim", 3))


def fake_record(K=6, runs=2):
    return engine.train(tiny_mlp(runs=runs), regression_data(), "mse", optim.sgd(0.1), steps=K)


@functools.lru_cache(maxsize=None)
def cached_record():
    return fake_record()


@functools.lru_cache(maxsize=None)
def small_logistic_problem():
    return adaptive.logistic_problem(n=400, dim=3, seed=0)


@functools.lru_cache(maxsize=None)
def small_regression_problem():
    return adaptive.regression_problem(n=32, seed=0)


@functools.lru_cache(maxsize=None)
def mlp_x_y():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 2, generator=g, dtype=F64), torch.randn(6, 2, generator=g, dtype=F64)


def curv_model():
    return models.MLP([2, 3, 2], activation="tanh", runs=2, dtype=F64)


def bn_model(runs=2):
    return mechanisms.bn_mlp(4, 2, runs=runs, dtype=F64)


mechanisms_exp = importlib.import_module("lecture_lib.experiments.mechanisms")


@dataclass(frozen=True)
class Either(Spec):
    """The bad values of either of two specs."""

    first: Spec
    second: Spec

    def bad(self, runs):
        return st.one_of(self.first.bad(runs), self.second.bad(runs))


def declared_with_relations(fn, **rejected) -> dict[str, Spec]:
    """:func:`declared`, plus values that only a relation between parameters rejects (a run index past the
    model's runs, ``n < dim``): each parameter's bad values are its declaration's or these."""
    specs = declared(fn)
    return {**specs, **{name: Either(specs[name], Obj(tuple(values))) for name, values in rejected.items()}}


def small_spd(n=3):
    return kronecker.random_spd(n, 5.0, seed=0)


# ============================================================================ the table
@dataclass(frozen=True)
class Entry:
    name: str
    call: Callable[..., Any]
    valid: dict
    specs: dict
    runs: int | None = None                       # R of the objects the call builds (for per-run lengths)
    messages: dict = field(default_factory=dict)  # parameter -> regex its message must match (default: its name)


def E(entry_id, call, valid=None, runs=None, /, *, messages=None, **specs):
    return Entry(entry_id, call, dict(valid or {}), specs, runs, dict(messages or {}))


MASK = Obj(({"nope": True}, 3, "w"))
INPUT = {"x": "input"}     # a model's forward names its argument "input"
X_OR_INPUT = {"x": "x|input"}
HP = dict(lr=nonneg(per_run=True), momentum=unit(per_run=True), weight_decay=nonneg(per_run=True))
NESTEROV = Obj(("yes", 1, None))
BETAS = Obj(((0.9,), 0.9, (1.0, 0.999), (0.9, NAN), (-0.1, 0.9), (0.9, 0.999, 0.9), "ab"))

ENTRIES = [
    # ------------------------------------------------------------------ optim: transforms
    E("scale_by_lr", lambda **k: run_transform(optim.scale_by_lr(**k)), dict(lr=0.1), R,
      **declared(optim.scale_by_lr)),
    E("trace", lambda **k: run_transform(optim.trace(**k)), dict(momentum=0.9), R, **declared(optim.trace)),
    E("scale_by_rms", lambda **k: run_transform(optim.scale_by_rms(**k)), {}, R, **declared(optim.scale_by_rms)),
    E("scale_by_adam", lambda **k: run_transform(optim.scale_by_adam(**k)), {}, R, **declared(optim.scale_by_adam)),
    E("add_decayed_weights", lambda **k: run_transform(optim.add_decayed_weights(**k)), dict(weight_decay=0.1), R,
      **declared(optim.add_decayed_weights)),
    E("scale_by_trust_ratio", lambda **k: run_transform(optim.scale_by_trust_ratio(**k)), {}, R,
      **declared(optim.scale_by_trust_ratio)),
    E("project_to_unit_norm", lambda **k: run_transform(optim.project_to_unit_norm(**k)), {}, R,
      **declared(optim.project_to_unit_norm)),
    E("masked", lambda **k: run_transform(optim.masked(**k)), dict(transform=optim.trace(0.9), mask={"w": True}), R,
      **declared(optim.masked)),
    E("graft", lambda **k: run_transform(optim.graft(**k)), dict(magnitude=optim.identity(),
                                                                  direction=optim.scale_by_adam()), R,
      **declared(optim.graft)),
    # ------------------------------------------------------------------ optim: aliases
    E("sgd", lambda **k: run_transform(optim.sgd(**k)), dict(lr=0.1), R, **declared(optim.sgd),
      messages={"weight_decay_mask": "mask"}),
    E("sgdw", lambda **k: run_transform(optim.sgdw(**k)), dict(lr=0.1), R, **declared(optim.sgdw),
      messages={"weight_decay_mask": "mask"}),
    E("rmsprop", lambda **k: run_transform(optim.rmsprop(**k)), dict(lr=0.01), R, **declared(optim.rmsprop),
      messages={"weight_decay_mask": "mask"}),
    E("adam", lambda **k: run_transform(optim.adam(**k)), dict(lr=0.01), R, **declared(optim.adam),
      messages={"betas": "beta", "weight_decay_mask": "mask"}),
    E("adamw", lambda **k: run_transform(optim.adamw(**k)), dict(lr=0.01), R, **declared(optim.adamw),
      messages={"betas": "beta", "weight_decay_mask": "mask"}),
    E("lars", lambda **k: run_transform(optim.lars(**k)), dict(lr=0.1), R, **declared(optim.lars),
      messages={"weight_decay_mask": "mask", "trust_ratio_mask": "mask"}),
    E("optim.get", lambda **k: run_transform(optim.get(k.pop("name"), **k)), dict(name="adam", lr=0.01), R,
      **declared(optim.get)),
    E("TransformOptimizer", transform_optimizer_step, {}, None, **declared(optim.TransformOptimizer)),
    # ------------------------------------------------------------------ optim: K-FAC
    E("kfac_precondition", kfac_train, {}, R, **declared(optim.kfac_precondition)),
    E("kfac", kfac_alias_train, dict(lr=0.1), R, **declared(optim.kfac), messages={"weight_decay_mask": "mask"}),
    E("kron_damped_solve", optim.kron_damped_solve,
      dict(QA=torch.eye(3, dtype=F64), dA=torch.ones(3, dtype=F64), QS=torch.eye(2, dtype=F64),
           dS=torch.ones(2, dtype=F64), G=torch.ones(2, 3, dtype=F64), damping=0.1), None,
      **declared(optim.kron_damped_solve,   # the tensors: shapes that disagree with each other (the relation)
                 QA=Obj((torch.eye(3, 4), torch.ones(3), torch.full((3, 3), NAN), torch.empty(0, 0), "QA")),
                 dA=Obj((torch.ones(2), torch.ones(3, 2), torch.tensor([1.0, INF, 1.0]), torch.ones(()), "dA")),
                 QS=Obj((torch.eye(3), torch.ones(2), torch.eye(2, 3), [[1.0, 0.0], [0.0, 1.0]])),
                 dS=Obj((torch.ones(3), torch.ones(2, 3), torch.tensor([NAN, 1.0]), None)),
                 G=Obj((torch.ones(3, 2), torch.ones(2), torch.ones(2, 3, dtype=torch.long),
                        torch.full((2, 3), NAN), torch.empty(2, 0), torch.ones(2, 3, dtype=torch.float32))))),
    E("eigh_factor", optim.eigh_factor, dict(M=torch.eye(3, dtype=F64)), None, **declared(optim.eigh_factor)),
    # ------------------------------------------------------------------ K-FAC statistics
    E("estimate_factors", lambda model=DEFAULT, **k: kfac_statistics.estimate_factors(
        curv_model() if model is DEFAULT else model, None, **k),
      dict(x=mlp_x_y()[0], y=mlp_x_y()[1], loss="mse"), None,
      **declared(kfac_statistics.estimate_factors, x=Tensor((None, 2))), messages=X_OR_INPUT),
    E("ggn_factor_traces", lambda model=DEFAULT, **k: kfac_statistics.ggn_factor_traces(
        curv_model() if model is DEFAULT else model, None, **k),
      dict(x=mlp_x_y()[0], layer="linears.0"), None,
      **declared(kfac_statistics.ggn_factor_traces, x=Tensor((None, 2)), layer=Obj(("linears.9", "", 0))),
      messages={**X_OR_INPUT, "losses": "losses|loss"}),
    E("sample_targets", kfac_statistics.sample_targets, dict(loss="cross_entropy", out=torch.zeros(2, 3, 4)), None,
      **declared(kfac_statistics.sample_targets)),
    E("output_hessian_sqrt", kfac_statistics.output_hessian_sqrt, dict(loss="cross_entropy", out=torch.zeros(2, 3, 4)),
      None, **declared(kfac_statistics.output_hessian_sqrt)),
    E("check_inputs", kfac_statistics.check_inputs, dict(x=torch.ones(4, 2), y=torch.ones(4)), None,
      **declared(kfac_statistics.check_inputs)),
    # ------------------------------------------------------------------ models
    E("BatchedLinear", lambda x=DEFAULT, **k: forward(models.BatchedLinear, x, **k),
      dict(in_features=3, out_features=2, runs=R), R, **declared(models.BatchedLinear, x=Tensor((None, 3), finite=False)),
      messages=INPUT),
    E("BatchNorm", lambda s=DEFAULT, **k: models.BatchNorm(**k)(torch.ones(R, 4, 5) if s is DEFAULT else s),
      dict(features=5, runs=R), R,
      **declared(models.BatchNorm, s=Tensor((R, None, 5), finite=False, dtype=torch.float32)), messages={"s": "input"}),
    E("MLP", lambda x=DEFAULT, **k: forward(models.MLP, x, **k), dict(sizes=[3, 4, 2], runs=R, norm="batch"), R,
      **declared(models.MLP, x=Tensor((None, 3), finite=False)), messages=INPUT),
    E("DeepLinear", lambda x=DEFAULT, **k: forward(models.DeepLinear, x, **k), dict(sizes=[3, 4, 2], runs=R), R,
      **declared(models.DeepLinear, x=Tensor((None, 3), finite=False)), messages=INPUT),
    E("ScaleInvariantLinear", lambda x=DEFAULT, **k: forward(models.ScaleInvariantLinear, x, **k), dict(dim=3, runs=R),
      R, **declared(models.ScaleInvariantLinear, x=Tensor((None, 3), finite=False)), messages=INPUT),
    E("activation", models.activation, dict(name="tanh"), None, **declared(models.activation)),
    # ------------------------------------------------------------------ data
    E("gaussian_inputs", data.gaussian_inputs, dict(n=8, dim=3), None, **declared(data.gaussian_inputs)),
    E("linear_regression", data.linear_regression, dict(n=8, dim=3), None, **declared(data.linear_regression)),
    E("logistic_regression", data.logistic_regression, dict(n=8, dim=3), None, **declared(data.logistic_regression)),
    E("teacher", data.teacher, dict(n=8, sizes=(3, 4, 1)), None, **declared(data.teacher)),
    E("digits", data.digits, {}, None, **declared(data.digits)),
    E("data.load", lambda **k: data.load(**k), dict(name="teacher", n=8), None, **declared(data.load)),
    # the splits' shapes are relative to each other (the declared relations): bad shapes listed here
    E("Dataset", data.Dataset,
      dict(x_train=torch.ones(4, 2), y_train=torch.ones(4, 1), x_test=torch.ones(2, 2), y_test=torch.ones(2, 1),
           task="regression", name="d"), None,
      **declared(data.Dataset, x_train=Tensor((4, 2), dtype=torch.float32),
                 y_train=Tensor((4, None), dtype=torch.float32), x_test=Tensor((2, 2), dtype=torch.float32))),
    # ------------------------------------------------------------------ engine
    E("train", train_tiny, {}, R, **declared(engine.train, batch_size=Int(1, 16, optional=True),  # 16 examples
                                             seed=Seed(per_run=True), loss=Obj(("hinge", 3, "cross_entropy", "logistic")))),
    E("Trainer", lambda **k: engine.Trainer(**{**dict(model=tiny_mlp(), data=regression_data(), loss="mse",
                                                      optimizer=optim.sgd(0.1)), **k}).step(), {}, R,
      **declared(engine.Trainer, batch_size=Int(1, 16, optional=True), seed=Seed(per_run=True),
                 loss=Obj(("hinge", 3, "cross_entropy", "logistic")))),
    # ------------------------------------------------------------------ losses
    # targets' and labels' shapes are relative to the outputs (the declared relations): bad shapes listed here
    E("mse", losses.mse, dict(out=torch.ones(R, 4, 2), y=torch.ones(4, 2)), R,
      **declared(losses.mse, y=Tensor((4, 2), finite=False, dtype=torch.float32))),
    E("cross_entropy", losses.cross_entropy, dict(logits=torch.zeros(R, 4, 3), y=torch.tensor([0, 1, 2, 0])), R,
      **declared(losses.cross_entropy,
                 y=Obj((torch.tensor([0, 1, 2, 3]), torch.tensor([0, -1, 2, 0]), torch.tensor([0.0, 1.0, 2.0, 0.0]),
                        torch.tensor([0, 1, 2]), torch.zeros(4, 3, dtype=torch.long), "0120", None)
                       + V.declared(losses.cross_entropy)["y"].bad)),
      messages={"logits": "logits|labels", "y": "label|y"}),
    E("logistic", losses.logistic, dict(logits=torch.zeros(R, 4, 1), y=torch.tensor([0, 1, 1, 0])), R,
      **declared(losses.logistic, y=Obj((torch.tensor([0, 1, 1]), torch.zeros(4, 2), "0110", None))),
      messages={"logits": "logits|labels", "y": "label|y"}),
    E("accuracy", losses.accuracy, dict(out=torch.zeros(R, 4, 3), y=torch.tensor([0, 1, 2, 0])), R,
      **declared(losses.accuracy, y=Obj((torch.tensor([0, 1, 2]), torch.zeros(4, 3, dtype=torch.long), "0120", None)))),
    E("losses.get", losses.get, dict(loss="mse"), None, **declared(losses.get)),
    # ------------------------------------------------------------------ curvature
    E("curvature.flatten", with_model(curvature.flatten), {}, None, **declared(curvature.flatten, run=Int(0, 1))),
    E("hessian", with_model(curvature.hessian), dict(x=mlp_x_y()[0], y=mlp_x_y()[1], loss="mse"), None,
      **declared(curvature.hessian, run=Int(0, 1), x=Tensor((None, 2))), messages=X_OR_INPUT),
    E("gauss_newton", with_model(curvature.gauss_newton), dict(x=mlp_x_y()[0], loss="mse"), None,
      **declared(curvature.gauss_newton, run=Int(0, 1), x=Tensor((None, 2))), messages=X_OR_INPUT),
    E("fisher", with_model(curvature.fisher), dict(x=mlp_x_y()[0], loss="mse"), None,
      **declared(curvature.fisher, run=Int(0, 1), x=Tensor((None, 2))), messages=X_OR_INPUT),
    E("empirical_fisher", with_model(curvature.empirical_fisher), dict(x=mlp_x_y()[0], y=mlp_x_y()[1], loss="mse"),
      None, **declared(curvature.empirical_fisher, run=Int(0, 1), x=Tensor((None, 2)), y=Tensor((6, 2))),
      messages={"x": "x|input", "y": "y|target"}),
    E("kfac_factors", with_model(curvature.kfac_factors), dict(x=mlp_x_y()[0], y=mlp_x_y()[1], loss="mse"), None,
      **declared(curvature.kfac_factors, run=Int(0, 1), x=Tensor((None, 2))), messages=X_OR_INPUT),
    E("hvp", with_model(curvature.hvp), dict(x=mlp_x_y()[0], y=mlp_x_y()[1], loss="mse", v=torch.ones(17, dtype=F64)),
      None, **declared(curvature.hvp, run=Int(0, 1), v=Tensor((17,)), x=Tensor((None, 2))), messages=X_OR_INPUT),
    E("gnvp", with_model(curvature.gnvp), dict(x=mlp_x_y()[0], loss="mse", v=torch.ones(17, dtype=F64)), None,
      **declared(curvature.gnvp, run=Int(0, 1), v=Tensor((17,)), x=Tensor((None, 2))), messages=X_OR_INPUT),
    E("lanczos", curvature.lanczos, dict(matvec=lambda v: 2.0 * v, dim=5, k=2), None, **declared(curvature.lanczos)),
    E("top_eigenvalues", with_model(curvature.top_eigenvalues),
      dict(x=mlp_x_y()[0], y=mlp_x_y()[1], loss="mse", k=2, iters=5), None,
      **declared(curvature.top_eigenvalues, run=Int(0, 1))),
    E("layer_block", on_flat(curvature.layer_block), dict(layer="linears.0"), None,
      **declared(curvature.layer_block, layer=Obj(("linears.9", "linears", 0, None)))),
    E("layer_indices", lambda flat=DEFAULT, **k: curvature.layer_indices(
        curvature.flatten(curv_model()) if flat is DEFAULT else flat, **k), dict(layer="linears.0"), None,
      **declared(curvature.layer_indices, layer=Obj(("linears.9", "linears", 0, None)))),
    E("blocks", on_flat(curvature.blocks), {}, None, **declared(curvature.blocks)),
    E("kfac_block", curvature.kfac_block, dict(A=torch.eye(2, dtype=F64), S=torch.eye(3, dtype=F64)), None,
      **declared(curvature.kfac_block, A=Tensor((2, 2)), S=Tensor((3, 3)))),
    # ------------------------------------------------------------------ kronecker
    E("random_spd", kronecker.random_spd, dict(n=3), None, **declared(kronecker.random_spd)),
    E("kron_spectrum", kronecker.kron_spectrum, dict(A=small_spd(3), B=small_spd(2)), None,
      **declared(kronecker.kron_spectrum)),
    E("kron_spectra", kronecker.kron_spectra, dict(A=kronecker.random_spd(3, (2.0, 5.0)), B=small_spd(2)), None,
      **declared(kronecker.kron_spectra)),
    E("spectrum_demo", kronecker_experiments.spectrum_demo, dict(n=3, m=2), None,
      **declared(kronecker_experiments.spectrum_demo)),
    E("spectrum_family", kronecker_experiments.spectrum_family, dict(n=3, m=2, cond_a=(1.0, 5.0)), None,
      **declared(kronecker_experiments.spectrum_family)),
    E("time_inverses", kronecker_experiments.time_inverses, dict(widths=(2, 3), repeats=1), None,
      **declared(kronecker_experiments.time_inverses)),
    E("time_inverses_up_to", kronecker_experiments.time_inverses_up_to, dict(largest=3, widths=(2, 3), repeats=1),
      None, **declared(kronecker_experiments.time_inverses_up_to)),
    E("time_inverses_up_to (relations)", kronecker_experiments.time_inverses_up_to,
      dict(largest=3, widths=(2, 3), repeats=1), None, largest=Obj((1, 2))),
    E("linear_network_blocks", kronecker_experiments.linear_network_blocks, dict(sizes=(2, 3, 2), n=4), None,
      **declared(kronecker_experiments.linear_network_blocks)),
    E("kfac_vs_exact", kronecker_experiments.kfac_vs_exact, dict(sizes=(2, 3, 2), steps=4, checkpoints=2, n=16), None,
      **declared(kronecker_experiments.kfac_vs_exact, layer=Obj(("linears.5", "linear", 0, None)))),
    E("kfac_checkpoint", kronecker_experiments.kfac_checkpoint, dict(sizes=(2, 3, 2), steps=4, checkpoints=2), None,
      **declared(kronecker_experiments.kfac_checkpoint)),
    E("kfac_checkpoint (relations)", kronecker_experiments.kfac_checkpoint,
      dict(sizes=(2, 3, 2), steps=4, checkpoints=2), None, checkpoint=Obj((2, 5))),
    # ------------------------------------------------------------------ ics
    # "(relation)" entries: values that pass each parameter's own declaration but not a relation between
    # parameters (shapes that must agree, an index that must exist in the model the entry builds)
    E("second_moment", ics.second_moment, dict(a=torch.ones(4, 3, dtype=F64)), None, **declared(ics.second_moment)),
    E("predicted_outlier", ics.predicted_outlier, dict(mean=torch.ones(3, dtype=F64)), None,
      **declared(ics.predicted_outlier)),
    E("predicted_bias_outlier", ics.predicted_bias_outlier, dict(mean=torch.ones(3, dtype=F64)), None,
      **declared(ics.predicted_bias_outlier)),
    E("moment_spectrum", ics.moment_spectrum, dict(a=torch.randn(6, 3, dtype=F64)), None,
      **declared(ics.moment_spectrum)),
    E("unit_features", ics.unit_features, dict(activation="tanh", dim=3, samples=5), None,
      **declared(ics.unit_features)),
    E("regression_hessian", ics.regression_hessian, dict(x=torch.ones(4, 3, dtype=F64)), None,
      **declared(ics.regression_hessian)),
    E("kronecker_alignment", ics.kronecker_alignment,
      dict(vectors=torch.eye(6, dtype=F64)[:, :2], direction=torch.ones(3, dtype=F64), out_features=2), None,
      **declared(ics.kronecker_alignment)),
    E("kronecker_alignment (relation)", ics.kronecker_alignment,
      dict(vectors=torch.eye(6, dtype=F64)[:, :2], direction=torch.ones(3, dtype=F64), out_features=2), None,
      vectors=Obj((torch.eye(7, dtype=F64)[:, :2],)),
      direction=Obj((torch.zeros(3, dtype=F64), torch.ones(4, dtype=F64))), out_features=Obj((4, 1))),
    E("conditioning_report", lambda **k: ics.conditioning_report(tiny_mlp(runs=1, sizes=(3, 4, 2)), **k),
      dict(x=torch.randn(8, 3, dtype=F64)), None, **declared(ics.conditioning_report)),
    E("conditioning_report (relation)", lambda **k: ics.conditioning_report(tiny_mlp(runs=1, sizes=(3, 4, 2)), **k),
      dict(x=torch.randn(8, 3, dtype=F64)), None, layer=Int(0, 1), x=Tensor((None, 3)), messages=X_OR_INPUT),
    E("symmetric_power", ics.symmetric_power, dict(cov=torch.eye(2, dtype=F64), power=0.5), None,
      **declared(ics.symmetric_power)),
    E("whiten", ics.whiten, dict(x=torch.ones(4, 2, dtype=F64), mean=torch.zeros(2, dtype=F64),
                                 cov=torch.eye(2, dtype=F64)), None, **declared(ics.whiten)),
    E("whiten (relation)", ics.whiten, dict(x=torch.ones(4, 2, dtype=F64), mean=torch.zeros(2, dtype=F64),
                                            cov=torch.eye(2, dtype=F64)), None,
      x=Tensor((None, 2)), mean=Tensor((2,)), cov=Obj((torch.eye(3, dtype=F64),))),
    E("reparameterize", lambda **k: ics.reparameterize(tiny_mlp(runs=2, sizes=(2, 3, 1)), **k),
      dict(mean=torch.zeros(2, dtype=F64), cov=torch.eye(2, dtype=F64)), None, **declared(ics.reparameterize)),
    E("reparameterize (relation)", lambda **k: ics.reparameterize(tiny_mlp(runs=2, sizes=(2, 3, 1)), **k),
      dict(mean=torch.zeros(2, dtype=F64), cov=torch.eye(2, dtype=F64)), None, mean=Tensor((2,)),
      cov=Obj((torch.eye(3, dtype=F64),))),
    E("quasi_diagonal", ics.quasi_diagonal, dict(mean=torch.zeros(2, dtype=F64), cov=torch.eye(2, dtype=F64),
                                                 out_features=2), None, **declared(ics.quasi_diagonal)),
    E("quasi_diagonal (relation)", ics.quasi_diagonal, dict(mean=torch.zeros(2, dtype=F64),
                                                            cov=torch.eye(2, dtype=F64), out_features=2), None,
      mean=Tensor((2,)), cov=Obj((torch.eye(3, dtype=F64),))),
    E("flat_first_layer", lambda **k: ics.flat_first_layer(tiny_mlp(runs=2), **k), {}, None,
      **declared(ics.flat_first_layer)),
    E("flat_first_layer (relation)", lambda **k: ics.flat_first_layer(tiny_mlp(runs=2), **k), {}, None,
      run=Int(0, 1)),
    E("ShiftedMLP", lambda **k: ics.ShiftedMLP(**k)(torch.ones(4, 3)), dict(sizes=[3, 4, 1], runs=R), R,
      **declared(ics.ShiftedMLP), norm=Choice(models.NORMS)),          # norm: checked by the MLP it extends
    E("ShiftedMLP (relation)", lambda **k: ics.ShiftedMLP(**k)(torch.ones(4, 3)), dict(sizes=[3, 4, 1], runs=R), R,
      shift=Num(per_run=True), scale=Obj(([0.1], (0.1,), [1.0] * (R + 1)))),
    E("centering_gradient", ics.centering_gradient,
      dict(a=torch.randn(4, 3, dtype=F64), weight=torch.randn(2, 3, dtype=F64), loss_fn=lambda s: s.square().sum()),
      None, **declared(ics.centering_gradient)),
    E("centering_gradient (relation)", ics.centering_gradient,
      dict(a=torch.randn(4, 3, dtype=F64), weight=torch.randn(2, 3, dtype=F64), loss_fn=lambda s: s.square().sum()),
      None, a=Obj((torch.ones(1, 3, dtype=F64), torch.ones(4, 2, dtype=F64))), weight=Tensor((None, 3)),
      loss_fn=Obj(("sum",))),
    # ------------------------------------------------------------------ experiments.ics
    E("outlier_experiment", ics_experiments.outlier_experiment, dict(dim=3, samples=10), None,
      **declared(ics_experiments.outlier_experiment)),
    E("outlier_family", ics_experiments.outlier_family, dict(mean_norm=(0.0, 1.0), dim=3, samples=10), None,
      **declared(ics_experiments.outlier_family)),
    E("descent_experiment", ics_experiments.descent_experiment, dict(dim=2, steps=3, n=8), None,
      **declared(ics_experiments.descent_experiment)),
    E("descent_family", ics_experiments.descent_family, dict(mean_norm=(0.0, 1.0), dim=2, steps=3, n=8), None,
      **declared(ics_experiments.descent_family)),
    E("conditioning_experiment", ics_experiments.conditioning_experiment, dict(n=8, dim=2, hidden=3), None,
      **declared(ics_experiments.conditioning_experiment)),
    E("shifted_inputs_dataset", ics_experiments.shifted_inputs_dataset,
      dict(mean_norm=1.0, cond=2.0, dim=2, hidden=3, n=8), None, **declared(ics_experiments.shifted_inputs_dataset)),
    E("reparam_experiment", ics_experiments.reparam_experiment, dict(dim=2, hidden=3, steps=2, n=8, lrs=[0.1, 0.2]),
      None, **declared(ics_experiments.reparam_experiment)),
    E("quasi_diagonal_experiment", ics_experiments.quasi_diagonal_experiment, {}, None,
      **declared(ics_experiments.quasi_diagonal_experiment)),
    E("wrinkle_experiment", ics_experiments.wrinkle_experiment,
      dict(steps=2, sizes=(2, 3, 3, 1), n=8, norms=("center",), curvature_at_init=False), None,
      **declared(ics_experiments.wrinkle_experiment)),
    E("wrinkle_experiment (relation)", ics_experiments.wrinkle_experiment,
      dict(steps=2, sizes=(2, 3, 3, 1), n=8, norms=("center",), curvature_at_init=False), None,
      layer=Int(0, 2), sizes=Obj(((2,), (2, 0, 1), (2, 3, 3, -1), "ab"))),
    E("centering_experiment", ics_experiments.centering_experiment, dict(batch_size=4, dim=2, out_features=2), None,
      **declared(ics_experiments.centering_experiment)),
    # ------------------------------------------------------------------ scale invariance
    E("euler_identities", lambda **k: scale_invariance.euler_identities(
        tiny_mlp(runs=1, sizes=(3, 4, 1), norm="batch"), losses.mse, **k),
      dict(x=torch.randn(6, 3, dtype=F64), y=torch.randn(6, 1, dtype=F64), name="linears.0.weight", factors=[0.5, 2.0]),
      None, messages=X_OR_INPUT, **declared(scale_invariance.euler_identities, skip=("model", "loss_fn"),
                                            x=Tensor((None, 3)), name=Obj(("linears.7.weight", None, 3)))),
    E("pythagorean_residual", scale_invariance.pythagorean_residual,
      dict(param_norm=np.ones((4, 2)), grad_norm=np.ones((4, 2)), lr=0.1), None,
      **declared(scale_invariance.pythagorean_residual, param_norm=Obj((np.ones((1, 2)), np.ones(4), np.ones((4, 3)),
                                                                        "p", np.zeros((4, 2)))),
                 grad_norm=Obj((np.ones((4, 3)), np.ones(4), "g")))),
    E("sqrt_law_k0", scale_invariance.sqrt_law_k0, dict(sq_norm0=1.0, lr=0.1, grad_norm_hat=1.0), None,
      **declared(scale_invariance.sqrt_law_k0)),
    E("sqrt_law", scale_invariance.sqrt_law, dict(steps=np.arange(5.0), sq_norm0=1.0, lr=0.1, grad_norm_hat=1.0),
      None, **declared(scale_invariance.sqrt_law)),
    E("fit_sqrt_law", scale_invariance.fit_sqrt_law, dict(steps=np.arange(5.0), sq_norm=np.linspace(1, 2, 5)), None,
      **declared(scale_invariance.fit_sqrt_law)),
    E("exponential_lr", lambda **k: scale_invariance.exponential_lr(**k)(3), dict(lr=0.1, weight_decay=0.1), None,
      messages={"weight_decay": "weight_decay"}, **declared(scale_invariance.exponential_lr)),
    E("remedy_optimizer", lambda **k: run_transform(scale_invariance.remedy_optimizer(**k)),
      dict(lr=0.1, remedy="weight_decay"), R, **declared(scale_invariance.remedy_optimizer)),
    E("layer_learning_rates", lambda **k: scale_invariance.layer_learning_rates(**k),
      dict(record=cached_record(), lr=0.1), None, **declared(scale_invariance.layer_learning_rates)),
    # ------------------------------------------------------------------ experiments of notebook 04
    E("toy_setup", implicit_decay.toy_setup, dict(dim=3, n=8), None, **declared(implicit_decay.toy_setup)),
    E("bn_setup", implicit_decay.bn_setup, dict(width=3, depth=1), None, **declared(implicit_decay.bn_setup)),
    E("implicit_decay.run", implicit_decay.run, dict(setup="toy", lr=0.1, steps=2, dim=3, n=16), None,
      **declared(implicit_decay.run, batch_size=Int(1, 16, optional=True))),
    E("late_asymptote", lambda **k: implicit_decay.late_asymptote(**k),
      dict(record=cached_record(), name="linears.0.weight"), None,
      **declared(implicit_decay.late_asymptote, name=Obj(("nope", None)))),
    E("spread", implicit_decay.spread, dict(values=np.ones((3, 2)), row=1), None,
      **declared(implicit_decay.spread, row=Int(-3, 2))),
    E("euler_check", implicit_decay.euler_check, dict(model="toy"), None, **declared(implicit_decay.euler_check)),
    E("growth", implicit_decay.growth, dict(model="toy", steps=3), None, **declared(implicit_decay.growth)),
    E("growth_family", implicit_decay.growth_family, dict(model="toy", lr=(0.1, 0.2), steps=3), None,
      **declared(implicit_decay.growth_family)),
    E("collapse", implicit_decay.collapse, dict(lr=(0.1, 0.2), steps=3), None, **declared(implicit_decay.collapse)),
    E("output_layer", implicit_decay.output_layer, dict(steps=2), None, **declared(implicit_decay.output_layer)),
    E("remedies", implicit_decay.remedies, dict(steps=2, chosen=("none", "unit_norm")), None,
      **declared(implicit_decay.remedies)),
    E("optimizers", implicit_decay.optimizers, dict(steps=2), None, **declared(implicit_decay.optimizers)),
    E("kfac_rescaling", implicit_decay.kfac_rescaling, dict(steps=2), None, **declared(implicit_decay.kfac_rescaling)),
    # ------------------------------------------------------------------ equilibrium
    E("resummed_lr", equilibrium.resummed_lr, dict(lr=0.1), None, **declared(equilibrium.resummed_lr)),
    E("equilibrium_ratio", equilibrium.equilibrium_ratio, dict(lr=0.1, weight_decay=0.01), None,
      **declared(equilibrium.equilibrium_ratio)),
    E("equilibrium_angular_step", equilibrium.equilibrium_angular_step, dict(lr=0.1, weight_decay=0.01), None,
      **declared(equilibrium.equilibrium_angular_step)),
    E("equilibrium_turn_angle", equilibrium.equilibrium_turn_angle, dict(lr=0.1, weight_decay=0.01), None,
      **declared(equilibrium.equilibrium_turn_angle)),
    E("relaxation_steps", equilibrium.relaxation_steps, dict(lr=0.1, weight_decay=0.01), None,
      **declared(equilibrium.relaxation_steps)),
    E("equilibrium_sq_norm", equilibrium.equilibrium_sq_norm, dict(lr=0.1, weight_decay=0.01, grad_scale=1.0), None,
      **declared(equilibrium.equilibrium_sq_norm)),
    E("sq_norm_map", equilibrium.sq_norm_map, dict(x0=1.0, lr=0.1, weight_decay=0.01, grad_scale=1.0, steps=3),
      None, **declared(equilibrium.sq_norm_map)),
    E("norm_balance", equilibrium.norm_balance, dict(param_norm=np.ones((3, 2)), grad_norm=np.ones((3, 2)), lr=0.1,
                                                     weight_decay=0.01), None,
      **declared(equilibrium.norm_balance, param_norm=Obj(("w", {"v": 1.0}, np.ones((3, 3)))),   # + a shape mismatch
                 grad_norm=Obj(("g", {"v": 1.0}, np.ones((2, 2)))))),
    E("momentum_growth", equilibrium.momentum_growth, dict(grad_sq=np.ones((3, 2)), grad_dot_history=np.zeros((3, 2)),
                                                           lr=0.1, momentum=0.9), None,
      **declared(equilibrium.momentum_growth, grad_sq=Obj(("w", {"v": 1.0}, np.ones((3, 3)))),   # + a shape mismatch
                 grad_dot_history=Obj(("g", {"v": 1.0}, np.ones((2, 2)))))),
    E("late_median", equilibrium.late_median, dict(values=np.ones((4, 2))), None, **declared(equilibrium.late_median)),
    E("late_rms", equilibrium.late_rms, dict(values=np.ones((4, 2))), None, **declared(equilibrium.late_rms)),
    E("grad_scale", lambda **k: equilibrium.grad_scale(cached_record(), **k), dict(name="linears.0.weight"), None,
      **declared(equilibrium.grad_scale, name=Obj(("w", None)))),             # name: a parameter of the record
    E("equilibrium_check", lambda **k: equilibrium.equilibrium_check(cached_record(), **k),
      dict(lr=0.1, weight_decay=0.01, name="linears.0.weight"), None,
      **declared(equilibrium.equilibrium_check, name=Obj(("w", None)))),
    E("angle_to", equilibrium.angle_to, dict(w=np.ones((3, 2)), direction=np.array([1.0, 0.0])), None,
      **declared(equilibrium.angle_to, direction=Obj((np.zeros(2), np.ones(3), np.array([NAN, 1.0]), "d", None)))),
    # ------------------------------------------------------------------ experiments of notebook 05
    E("toy_data", eqx.toy_data, dict(dim=3, n=8), None, **declared(eqx.toy_data)),
    E("gradient_momentum_correlation", eqx.gradient_momentum_correlation, {}, None,
      **declared(eqx.gradient_momentum_correlation)),
    E("train_toy", eqx.train_toy, dict(lr=[0.1, 0.2], batch_size=4, steps=2, dim=3, data=eqx.toy_data(dim=3, n=16)),
      None, **declared(eqx.train_toy), batch_size=Int(1, 16, optional=True), steps=Int(1),  # checked by engine.train
      scale=pos(), seed=Seed(), record_every=Int(1), dim=Obj((0, -1, 2.5, 5))),             # and by the model
    E("toy_grad_scale", eqx.toy_grad_scale, dict(batch_size=4, dim=3, batches=2, data=eqx.toy_data(dim=3, n=16)),
      None, **declared(eqx.toy_grad_scale, batch_size=Int(1, 16))),          # at most the data's 16 examples
    E("train_bn_network", eqx.train_bn_network, dict(lr=0.1, batch_size=8, steps=2, hidden=(4,)), None,
      **declared(eqx.train_bn_network), batch_size=Int(1, optional=True), steps=Int(1), seed=Seed(),
      eval_every=Int(1, optional=True), record_every=Int(1)),                # checked by engine.train
    E("rescaled_output_gap", lambda **k: eqx.rescaled_output_gap(bn_model(), **k),
      dict(x=torch.randn(6, 64, dtype=F64), factor=2.0), None,
      **declared(eqx.rescaled_output_gap, x=Tensor((None, 64))), messages=X_OR_INPUT),
    E("batch_scaling", eqx.batch_scaling, dict(factors=(1,), examples=64, batch_size=4), None,
      **declared(eqx.batch_scaling)),
    E("layer_balance", eqx.layer_balance, dict(lr=0.1, weight_decay=0.01, momentum=0.9, steps=2, batch_size=8), None,
      **declared(eqx.layer_balance)),
    E("ratio_family", eqx.ratio_family, dict(lr=0.1, weight_decay=0.01, momentum=0.0, batch_size=4, min_steps=2,
                                             max_steps=3), None, **declared(eqx.ratio_family)),
    E("ratio_families", eqx.ratio_families, dict(lr=0.1, weight_decay=(0.01, 0.02), momentum=0.0, batch_size=4,
                                                 min_steps=2, max_steps=3), None, **declared(eqx.ratio_families)),
    E("sgd_vs_lars", eqx.sgd_vs_lars, dict(lr=0.1, weight_decay=0.01, momentum=0.0, min_steps=2, max_steps=3), None,
      **declared(eqx.sgd_vs_lars)),
    E("plane_runs", eqx.plane_runs, dict(lr=0.1, weight_decay=0.01, steps=2), None, **declared(eqx.plane_runs)),
    E("decay_strengths", eqx.decay_strengths, dict(lr=0.1, momentum=0.9, decays=(0.0, 0.01), steps=2, batch_size=8),
      None, **declared(eqx.decay_strengths)),
    # ------------------------------------------------------------------ adaptive
    E("ill_conditioned_quadratic", adaptive.ill_conditioned_quadratic, {}, None,
      **declared(adaptive.ill_conditioned_quadratic)),
    E("Quadratic.grid", lambda **k: adaptive.ill_conditioned_quadratic().grid(**k), dict(xlim=(-1, 1), ylim=(-1, 1)),
      None, **declared(adaptive.Quadratic.grid)),
    E("Quadratic.grid (relations)", lambda **k: adaptive.ill_conditioned_quadratic().grid(**k),
      dict(xlim=(-1, 1), ylim=(-1, 1)), None, xlim=Obj(((1.0, -1.0), (0.0, NAN), (0.0,), "ab", None, 1.0)),
      ylim=Obj(((0.0, 0.0), (-INF, 1.0), None))),
    E("descend", adaptive.descend, dict(optimizer=optim.sgd(0.1), grad_fn=lambda w, k: w, w0=torch.ones(2, 2), steps=3),
      None, **declared(adaptive.descend)),
    E("diverged_at", adaptive.diverged_at, dict(values=np.ones((3, 2))), None, **declared(adaptive.diverged_at)),
    E("fit_logistic", adaptive.fit_logistic, dict(x=small_logistic_problem().x, t=small_logistic_problem().t), None,
      **declared(adaptive.fit_logistic)),
    E("fit_logistic (relations)", adaptive.fit_logistic,
      dict(x=small_logistic_problem().x, t=small_logistic_problem().t), None, x=Tensor((400, None)),
      t=Obj((torch.full((400,), 2.0, dtype=F64), torch.ones(3, dtype=F64), torch.full((400,), NAN), "t"))),
    E("logistic_problem", adaptive.logistic_problem, dict(n=200, dim=2), None, **declared(adaptive.logistic_problem)),
    E("fisher_diagonals", adaptive.fisher_diagonals, dict(x=torch.ones(5, 2, dtype=F64), t=torch.ones(5, dtype=F64),
                                                          w=torch.ones(2, dtype=F64)), None,
      **declared(adaptive.fisher_diagonals)),
    E("fisher_diagonals (relations)", adaptive.fisher_diagonals,
      dict(x=torch.ones(5, 2, dtype=F64), t=torch.ones(5, dtype=F64), w=torch.ones(2, dtype=F64)), None,
      x=Tensor((5, 2)), t=Tensor((5,)), w=Tensor((2,))),
    E("away_direction", adaptive.away_direction, dict(dim=3), None, **declared(adaptive.away_direction)),
    E("point_away", lambda **k: adaptive.point_away(small_logistic_problem(), **k), dict(distance=0.5), None,
      **declared(adaptive.point_away)),
    E("point_away (relations)", lambda **k: adaptive.point_away(small_logistic_problem(), **k), dict(distance=0.5),
      None, direction=Tensor((3,), optional=True)),
    E("fisher_along_path", lambda **k: adaptive_experiments.fisher_along_path(small_logistic_problem(), **k),
      dict(distances=[0.0, 0.5]), None, **declared(adaptive_experiments.fisher_along_path)),
    E("fisher_along_path (relations)", lambda **k: adaptive_experiments.fisher_along_path(small_logistic_problem(),
                                                                                         **k),
      dict(distances=[0.0, 0.5]), None, direction=Tensor((3,), optional=True)),
    E("RegressionProblem.ridge", lambda **k: small_regression_problem().ridge(**k), dict(weight_decay=0.1), None,
      **declared(adaptive.RegressionProblem.ridge)),
    E("RegressionProblem.preconditioned_ridge", lambda **k: small_regression_problem().preconditioned_ridge(**k),
      dict(weight_decay=0.1, preconditioner=torch.ones(2, dtype=F64)), None,
      **declared(adaptive.RegressionProblem.preconditioned_ridge)),
    E("RegressionProblem.preconditioned_ridge (relations)",
      lambda **k: small_regression_problem().preconditioned_ridge(**k),
      dict(weight_decay=0.1, preconditioner=torch.ones(2, dtype=F64)), None,
      preconditioner=Obj((torch.ones(3), torch.tensor([1.0, NAN]), torch.tensor([1.0, -1.0]), torch.zeros(2), "c"))),
    E("RegressionProblem.minibatch_grad", lambda **k: small_regression_problem().minibatch_grad(**k)(
        torch.ones(1, 2, dtype=F64), 0), dict(batch_size=4), None, **declared(adaptive.RegressionProblem.minibatch_grad)),
    E("RegressionProblem.minibatch_grad (relations)", lambda **k: small_regression_problem().minibatch_grad(**k)(
        torch.ones(1, 2, dtype=F64), 0), dict(batch_size=4), None, batch_size=Int(1, 32)),
    E("regression_problem", adaptive.regression_problem, dict(n=8), None, **declared(adaptive.regression_problem)),
    E("regression_problem (relations)", adaptive.regression_problem, dict(n=8), None,
      scales=Obj(((1.0,), (1.0, -0.2), (1.0, NAN), (), "ab")), w_true=Obj(((1.0, NAN), (1.0,), "ab"))),
    E("regularization_sweep", adaptive_experiments.regularization_sweep,
      dict(problem=small_regression_problem(), optimizers={"adam": lambda wd: optim.adam(0.01, weight_decay=wd)},
           weight_decays=[0.0, 0.1], steps=3), None, **declared(adaptive_experiments.regularization_sweep)),
    E("regularization_sweep (relations)", adaptive_experiments.regularization_sweep,
      dict(problem=small_regression_problem(), optimizers={"adam": lambda wd: optim.adam(0.01, weight_decay=wd)},
           weight_decays=[0.0, 0.1], steps=3), None, batch_size=Int(1, 32),
      w0=Obj(((0.0,), (0.0, NAN), "w0", (0.0, 0.0, 0.0)))),
    E("adam_preconditioner", lambda **k: adaptive.adam_preconditioner(
        adaptive.descend(optim.adam(0.01), lambda w, k: w, torch.ones(1, 2), 2, return_state=True)[1], **k), {},
      None, **declared(adaptive.adam_preconditioner)),
    E("trajectories", adaptive_experiments.trajectories, dict(steps=3), None,
      **declared(adaptive_experiments.trajectories)),
    E("fisher_comparison", adaptive_experiments.fisher_comparison, dict(n=2000, path_points=2), None,
      **declared(adaptive_experiments.fisher_comparison)),
    E("decay_comparison", adaptive_experiments.decay_comparison, dict(steps=3, grid=(0.0, 0.1)), None,
      **declared(adaptive_experiments.decay_comparison)),
    E("decay_comparisons", adaptive_experiments.decay_comparisons, dict(steps=3, weight_decay=(0.0, 0.1)), None,
      **declared(adaptive_experiments.decay_comparisons)),
    E("sgd_decay_identity", adaptive_experiments.sgd_decay_identity, dict(steps=3), None,
      **declared(adaptive_experiments.sgd_decay_identity)),
    E("sgd_decay_identities", adaptive_experiments.sgd_decay_identities, dict(steps=3, momentum=(0.0, 0.5)), None,
      **declared(adaptive_experiments.sgd_decay_identities)),
    E("grafting_experiment", adaptive_experiments.grafting_experiment,
      dict(steps=2, batch_size=8, sizes=(64, 4, 10), record_every=1, data=digits_small()), None,
      **declared(adaptive_experiments.grafting_experiment)),
    E("grafting_experiment (relations)", adaptive_experiments.grafting_experiment,
      dict(steps=2, batch_size=8, sizes=(64, 4, 10), record_every=1, data=digits_small()), None,
      batch_size=Int(1, 96, optional=True), sizes=Obj(((64,), (3, 4, 10), (64, 4, 3), (64, 0, 10), "ab", None))),
    # ------------------------------------------------------------------ mechanisms
    E("preconditioner", lambda **k: mechanisms.preconditioner(model=bn_model(), **k), dict(name="kfac-f"), None,
      **declared(mechanisms.preconditioner)),
    E("regularized", lambda **k: run_transform(mechanisms.regularized(**k)), dict(pre=optim.trace(0.9), lr=0.1), R,
      **declared(mechanisms.regularized, lr=HP["lr"])),        # lr: also per-run values of the wrong length
    E("bn_mlp", mechanisms.bn_mlp, dict(width=4), None, **declared(mechanisms.bn_mlp)),
    E("relu_net", mechanisms.relu_net, dict(sizes=(3, 4, 2)), None, **declared(mechanisms.relu_net)),
    E("decay_schemes", mechanisms.decay_schemes, dict(schemes=("none", "wd-all"), weight_decay=0.1), None,
      **declared(mechanisms.decay_schemes)),
    E("graft_norms_", lambda **k: mechanisms.graft_norms_(bn_model(runs=3), **k), dict(receivers=[0], donors=[1]),
      None, **declared_with_relations(mechanisms.graft_norms_, receivers=([5], [0, 1]), donors=([3], [1, 2]))),
    E("whitened_inputs", mechanisms.whitened_inputs, dict(n=6, dim=3), None,
      **declared_with_relations(mechanisms.whitened_inputs, n=(1, 2))),
    E("input_jacobian", lambda **k: mechanisms.input_jacobian(mechanisms.relu_net((3, 4, 2), runs=2, dtype=F64), **k),
      dict(x=torch.ones(4, 3, dtype=F64)), None, messages=X_OR_INPUT,
      **declared(mechanisms.input_jacobian, x=Tensor((None, 3)))),
    E("jacobian_norm", lambda **k: mechanisms.jacobian_norm(mechanisms.relu_net((3, 4, 2), runs=2, dtype=F64), **k),
      dict(x=torch.ones(4, 3, dtype=F64)), None, messages=X_OR_INPUT,
      **declared(mechanisms.jacobian_norm, x=Tensor((None, 3)))),
    E("kfac_gn_norm", lambda **k: mechanisms.kfac_gn_norm(mechanisms.relu_net((3, 4, 2), runs=2, dtype=F64), **k),
      dict(x=torch.ones(4, 3, dtype=F64)), None, messages=X_OR_INPUT,
      **declared(mechanisms.kfac_gn_norm, x=Tensor((None, 3)))),
    E("gn_norm", lambda **k: mechanisms.gn_norm(mechanisms.relu_net((3, 4, 2), runs=2, dtype=F64), **k),
      dict(x=torch.ones(4, 3, dtype=F64)), None, messages=X_OR_INPUT,
      **declared(mechanisms.gn_norm, x=Tensor((None, 3)))),
    E("linear_identity", mechanisms.linear_identity, dict(sizes=(3, 2, 2), n=8), None,
      **declared_with_relations(mechanisms.linear_identity, n=(1, 2))),
    E("direction_cosine", mechanisms.direction_cosine,
      dict(eigenvalues=[1.0, 0.1], gradient=[1.0, 2.0], damping=1e-3, w_norm=2.0), None,
      **declared_with_relations(mechanisms.direction_cosine, gradient=([1.0],))),
    E("paired_interval", mechanisms.paired_interval, dict(differences=[0.1, 0.2, 0.4]), None,
      **declared_with_relations(mechanisms.paired_interval, differences=([1.0],))),
    E("direction_update", lambda **k: mechanisms.direction_update(bn_model(), **k),
      dict(x=torch.randn(6, 64, dtype=F64), y=torch.tensor([0, 1, 2, 3, 4, 5]), layer="linears.0", damping=1e-3),
      None, **declared_with_relations(mechanisms.direction_update, layer=("linears.2", "linears.9"))),
    E("effective_lr_experiment", mechanisms_exp.effective_lr_experiment,
      dict(schemes=("none", "graft", "wd-all"), steps=2, batch_size=16, width=4, depth=1, eval_every=1,
           record_every=1), None,
      **declared_with_relations(mechanisms_exp.effective_lr_experiment, graft_from=("wd-fc",))),
    E("effective_lr_family", mechanisms_exp.effective_lr_family,
      dict(weight_decay=(0.0, 0.1), schemes=("none", "graft", "wd-all"), steps=2, batch_size=16, width=4, depth=1,
           eval_every=1, record_every=1), None,
      **declared_with_relations(mechanisms_exp.effective_lr_family, graft_from=("wd-fc",))),
    E("jacobian_experiment", mechanisms_exp.jacobian_experiment,
      dict(steps=2, width=4, depth=1, seeds=(0,), batch_size=16, decays_per_step=(0.0, 1e-3)), None,
      **declared(mechanisms_exp.jacobian_experiment)),
    E("architecture_experiment", mechanisms_exp.architecture_experiment,
      dict(widths=(4,), depths=(1,), seeds=(0,), steps=2, batch_size=16, checkpoints=(1, 2)), None,
      **declared_with_relations(mechanisms_exp.architecture_experiment, checkpoints=((3,),))),
    E("damping_experiment", mechanisms_exp.damping_experiment,
      dict(steps=2, batch_size=16, width=4, depth=1, record_every=1, eval_every=1, schemes=("none",), probe_size=8),
      None, **declared(mechanisms_exp.damping_experiment)),
    E("large_batch_experiment", mechanisms_exp.large_batch_experiment,
      dict(batch_sizes=(8, 16), seeds=(0, 1), steps=2, width=4, depth=1, wd_grid=(0.1,), tune_seeds=(0,)), None,
      **declared(mechanisms_exp.large_batch_experiment)),
    E("validation_split", lambda **k: mechanisms_exp.validation_split(regression_data(), **k), {}, None,
      **declared(mechanisms_exp.validation_split)),
    E("train_family", lambda **k: mechanisms_exp.train_family(
        config=mechanisms_exp.TableConfig(width=4, depth=1, steps=2, batch_size=16), data=digits_small(), **k),
      dict(name="sgd", l2=[0.0, 0.1], wd=[0.1, 0.0], seeds=[0, 1]), None,
      **declared_with_relations(mechanisms_exp.train_family, l2=([0.0],), wd=([0.0],), seeds=([0],))),
    E("TableConfig", lambda **k: mechanisms_exp.headline_table(mechanisms_exp.TableConfig(**k)),
      dict(optimizers=("sgd",), seeds=(0,), width=4, depth=1, steps=2, batch_size=16), None,
      **declared_with_relations(mechanisms_exp.TableConfig.validate, lr=({},), l2=({},), wd=({},))),
    # ------------------------------------------------------------------ exercises
    E("exercises.check", exercises.check, dict(key="04.effective_lr", answer=lambda lr, norm: lr / norm ** 2), None,
      **declared(exercises.check), messages={"key": "exercise"}),
    E("exercises.exercise", exercises.exercise, dict(key="99.table", title="a new exercise", hint="none"), None,
      **declared(exercises.exercise), messages={"key": "exercise"}),
]

CASES = [pytest.param(e, p, id=f"{e.name}:{p}") for e in ENTRIES for p in e.specs]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("entry, param", CASES)
@settings(max_examples=8, **SETTINGS)
@given(data=st.data())
def test_bad_argument_is_rejected_by_name(entry, param, data):
    bad = data.draw(entry.specs[param].bad(entry.runs), label=param)
    if isinstance(bad, torch.Tensor):
        note(f"{param}: tensor of shape {tuple(bad.shape)}, dtype {bad.dtype}: {bad.flatten()[:6].tolist()}")
    kwargs = {**entry.valid, param: bad}
    pattern = entry.messages.get(param, re.escape(param))
    with pytest.raises((ValueError, TypeError), match=pattern):
        entry.call(**kwargs)


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name) for e in ENTRIES])
def test_valid_call_of_the_table_works(entry):
    """The table's valid arguments are valid: the bad-argument test changes one thing at a time."""
    entry.call(**entry.valid)


def _declared_functions() -> dict[str, Any]:
    """Every function or class of lecture_lib whose parameters are declared with @accepts, by qualified name."""
    import pkgutil
    import lecture_lib
    found = {}
    for info in pkgutil.walk_packages(lecture_lib.__path__, "lecture_lib."):
        if ".viz" in info.name or info.name.endswith("teaching"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if V.declared(obj) and getattr(obj, "__module__", None) == module.__name__:
                found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_declared_function_is_in_the_table():
    """The table is generated from the declarations: a function that declares its parameters is tested."""
    tested = {e.name.split(" ")[0].split(".")[-1] for e in ENTRIES}
    missing = sorted(q for q in _declared_functions() if q.split(".")[-1] not in tested)
    assert not missing, f"declared but not in the bad-input table: {missing}"


def test_table_covers_every_science_module():
    functions = {e.name.split(" ")[0].split(".")[-1] for e in ENTRIES}
    for module in (optim, kfac_mod, kfac_statistics, models, data, engine, losses, curvature, kronecker, ics, scale_invariance,
                   equilibrium, adaptive, mechanisms, exercises):
        public = {n for n, f in vars(module).items() if callable(f) and not n.startswith("_")
                  and getattr(f, "__module__", "").startswith(module.__name__)}
        assert functions & public, f"no entry of the table calls {module.__name__}"
    assert len(CASES) > 500, len(CASES)


# ============================================================================ valid values: finite, or a recorded divergence
def _log_uniform(low: float, high: float):
    return st.floats(math.log10(low), math.log10(high)).map(lambda e: 10.0 ** e)


# decay rates in [0, 1), often within 1e-7 of 1 (float32 rounds those to 1.0)
UNIT = st.one_of(st.floats(0.0, 1.0, exclude_max=True), _log_uniform(1e-16, 1e-2).map(lambda e: 1.0 - e))
GOOD = {
    "lr": _log_uniform(1e-4, 1e2), "momentum": UNIT, "beta1": UNIT, "beta2": UNIT, "eps": _log_uniform(1e-12, 1.0),
    "weight_decay": st.one_of(st.just(0.0), _log_uniform(1e-6, 1.0)), "trust_coefficient": _log_uniform(1e-4, 1.0),
    "damping": _log_uniform(1e-6, 1.0),
}
ALIASES = {
    "sgd": ("lr", "momentum", "weight_decay"), "sgdw": ("lr", "momentum", "weight_decay"),
    "rmsprop": ("lr", "beta2", "eps", "momentum", "weight_decay"), "adam": ("lr", "betas", "eps", "weight_decay"),
    "adamw": ("lr", "betas", "eps", "weight_decay"), "lars": ("lr", "momentum", "weight_decay", "trust_coefficient"),
    "kfac": ("lr", "damping", "weight_decay"),
}


def _draw_hparams(data, names, runs):
    """Per-run ``(R,)`` float64 tensors drawn inside the accepted ranges (``betas``: a pair of them)."""
    out = {}
    for name in names:
        if name == "betas":
            out[name] = tuple(torch.tensor([data.draw(UNIT, label=f"{b}[{r}]") for r in range(runs)], dtype=F64)
                              for b in ("beta1", "beta2"))
        else:
            out[name] = torch.tensor([data.draw(GOOD[name], label=f"{name}[{r}]") for r in range(runs)], dtype=F64)
    return out


def _optimizer(alias, model, hp):
    if alias == "kfac":
        return optim.get("kfac", model=model, loss="mse", curvature="ggn", stat_interval=1, inv_interval=2, **hp)
    return optim.get(alias, **hp)


def _assert_finite_or_diverged(rec, model):
    """Every recorded row before a run's divergence is finite, every row after it NaN, the weights finite."""
    assert rec.diverged_at.shape == (rec.runs,)
    for r in range(rec.runs):
        valid = rec.valid(r)
        rows = {"loss": rec.loss[:, r], **{f"‖{n}‖": v[:, r] for n, v in rec.param_norm.items()},
                **{f"grad ‖{n}‖": v[:, r] for n, v in rec.grad_norm.items()}}
        for what, values in rows.items():
            assert np.all(np.isfinite(values[valid])), f"run {r}: non-finite {what} before divergence: {values}"
            if rec.diverged(r):
                assert np.all(np.isnan(values[valid.stop:])), f"run {r}: {what} after divergence is not NaN"
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), f"parameter {name} is not finite after training"


@settings(max_examples=40, **SETTINGS)
@given(alias=st.sampled_from(sorted(ALIASES)), dtype=st.sampled_from([torch.float32, torch.float64]),
       data=st.data())
def test_valid_hyperparameters_train_finite_or_record_their_divergence(alias, dtype, data):
    model = models.MLP([3, 4, 1], activation="tanh", runs=R, dtype=dtype)
    hp = _draw_hparams(data, ALIASES[alias], R)
    rec = engine.train(model, regression_data(), "mse", _optimizer(alias, model, hp), steps=5, batch_size=8)
    _assert_finite_or_diverged(rec, model)


@settings(max_examples=30, **SETTINGS)
@given(alias=st.sampled_from(["sgd", "sgdw", "adam", "adamw"]), data=st.data())
def test_small_learning_rates_never_diverge_in_float32(alias, data):
    """With α ≤ 1e-3 five steps cannot blow up a tiny tanh network: a recorded divergence would be a numerical bug
    (e.g. β = 0.99999999 rounding to 1 in float32 and the bias correction dividing 0 by 0)."""
    model = models.MLP([3, 4, 1], activation="tanh", runs=R, dtype=torch.float32)
    hp = _draw_hparams(data, [n for n in ALIASES[alias] if n != "lr"], R)
    hp["lr"] = torch.tensor([data.draw(_log_uniform(1e-6, 1e-3), label=f"lr[{r}]") for r in range(R)], dtype=F64)
    rec = engine.train(model, regression_data(), "mse", optim.get(alias, **hp), steps=5, batch_size=8)
    _assert_finite_or_diverged(rec, model)
    assert np.all(rec.diverged_at == -1), f"diverged at {rec.diverged_at} with {hp}"


@settings(max_examples=60, **SETTINGS)
@given(lr=_log_uniform(1e-4, 10.0), weight_decay=_log_uniform(1e-6, 1.0), momentum=st.floats(0.0, 0.99),
       grad_scale=_log_uniform(1e-3, 1e3), x0=_log_uniform(1e-3, 1e3))
def test_equilibrium_formulas_are_finite_inside_their_ranges(lr, weight_decay, momentum, grad_scale, x0):
    values = [equilibrium.resummed_lr(lr, momentum), equilibrium.equilibrium_ratio(lr, weight_decay, momentum),
              equilibrium.equilibrium_angular_step(lr, weight_decay, momentum),
              equilibrium.equilibrium_turn_angle(lr, weight_decay, momentum),
              equilibrium.relaxation_steps(lr, weight_decay, momentum),
              equilibrium.equilibrium_sq_norm(lr, weight_decay, grad_scale, momentum)]
    assert all(math.isfinite(v) and v > 0 for v in values), values
    path = equilibrium.sq_norm_map(x0, lr, weight_decay, grad_scale, 20, momentum)
    assert np.all(np.isfinite(path)) and np.all(path > 0), path


# ============================================================================ the panels: no control reaches a value the library rejects
VIZ = HERE.parent / "lecture_lib" / "viz"
PANEL_TIMEOUT = 300          # seconds for the whole sweep (one subprocess, LECTURE_FAST=1; ~90 s on 2 idle cores)
NOT_LIVE_PANELS = {"mechanisms_panels.headline_panel": "a saved table and a 'recompute' button (minutes of training), "
                                                         "no control that sets a value",
                   "mechanisms_panels.large_batch_panel": "a table computed once (cached), no control"}


def panel_functions() -> list[str]:
    """Every ``def *_panel()`` at the top of ``lecture_lib/viz/*_panels.py``, as ``module.function`` (read, not run)."""
    import ast

    out = []
    for path in sorted(VIZ.glob("*_panels.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_panel") and not node.name.startswith("_"):
                out.append(f"{path.stem}.{node.name}")
    return out


def _fast_panel_patches():
    """Shorter runs for the panels whose fast settings still take 15-70 s per computation on 2 cores.

    Only step counts change (and the K-FAC panel's width): the controls, their ranges and the code paths
    are the app's.
    """
    from lecture_lib.viz import equilibrium_panels as eqp
    from lecture_lib.viz import mechanisms_panels as mp

    mp.DAMPING_SIZES[True] = dict(steps=20, width=16)
    eqp.FAST_SIZES = dataclasses.replace(eqp.FAST_SIZES, toy_max_steps=200, lars_max_steps=200, batch_examples=2000,
                                         bn_steps=60)
    return ["mechanisms_panels.damping: 20 steps, width 16", "equilibrium_panels: toy runs <= 200 steps, "
            "batch scaling 2000 examples, BN runs 60 steps"]


def _extremes(widget) -> list:
    """The values a control can be set to at its ends: slider min and max, every option, both states."""
    import ipywidgets as widgets

    if isinstance(widget, widgets.FloatLogSlider):
        return [widget.base ** widget.min, widget.base ** widget.max]
    if isinstance(widget, (widgets.FloatSlider, widgets.IntSlider)):
        return [widget.min, widget.max]
    if isinstance(widget, widgets.Checkbox):
        return [not widget.value]
    if hasattr(widget, "_options_values"):
        return [v for v in widget._options_values if v != widget.value]
    raise TypeError(f"no extremes known for {type(widget).__name__}")


def _nonfinite_traces(panel) -> list[str]:
    bad = []
    for i, fw in enumerate(panel.figures):
        for j, trace in enumerate(fw.data):
            for axis in ("x", "y"):
                values = getattr(trace, axis, None)
                if values is None:
                    continue
                flat = np.asarray(values, dtype=object).ravel()
                if any(isinstance(v, (float, np.floating)) and not math.isfinite(v) for v in flat):
                    bad.append(f"figure {i} trace {j} ({trace.name!r}) {axis}")
    return bad


def sweep_panel(panel, per_value_timeout: float = 60.0) -> list[dict]:
    """Set each control of a LivePanel to its extremes, one control at a time (then back); what the panel showed."""
    steps = []

    def observe(control, value):
        t0 = time.monotonic()
        idle = panel.wait(per_value_timeout)
        steps.append({"control": control, "value": repr(value), "idle": idle, "outcome": panel._outcome,
                      "message": panel.message, "nonfinite": _nonfinite_traces(panel),
                      "seconds": round(time.monotonic() - t0, 2)})

    observe(None, None)                        # the first draw
    for name, widget in panel.controls.items():
        initial = widget.value
        for value in _extremes(widget):
            widget.value = value               # as a user would: fires the panel's observer
            observe(name, value)
        widget.value = initial
        panel.wait(per_value_timeout)
    return steps


def sweep_panels(names: list[str], per_value_timeout: float = 60.0) -> dict:
    """Build each panel and :func:`sweep_panel` it."""
    import importlib as _importlib

    report = {"patches": _fast_panel_patches(), "panels": {}}
    for qualified in names:
        module, fn = qualified.split(".")
        start = time.monotonic()
        entry = report["panels"][qualified] = {"steps": []}
        try:
            panel = getattr(_importlib.import_module(f"lecture_lib.viz.{module}"), fn)()
        except Exception as exc:     # a panel that cannot even be built fails its test with this message
            entry["build_error"] = f"{type(exc).__name__}: {exc}"
            continue
        entry["build_s"] = round(time.monotonic() - start, 2)
        entry["steps"] = sweep_panel(panel, per_value_timeout)
        entry["total_s"] = round(time.monotonic() - start, 2)
    return report


@pytest.fixture(scope="module")
def panel_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("panels") / "sweep.json"
    env = {**os.environ, "LECTURE_FAST": "1", "MPLBACKEND": "Agg"}
    env.pop("LECTURE_PANEL_RAISE", None)          # the panels must show messages, not raise
    start = time.monotonic()
    proc = subprocess.run([sys.executable, __file__, "--sweep-panels", str(out)], env=env, capture_output=True,
                          text=True, timeout=PANEL_TIMEOUT, cwd=HERE.parent)
    assert proc.returncode == 0, f"panel sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    report = json.loads(out.read_text())
    report["wall_s"] = round(time.monotonic() - start, 1)
    print(f"\npanel sweep: {report['wall_s']} s; patches: {report['patches']}")
    return report


def test_the_sweep_sees_errors_rejections_and_nan():
    """The panel checks can fail: a toy panel that draws NaN, rejects a value and crashes is caught at each."""
    import plotly.graph_objects as go

    from lecture_lib.viz import panels

    def compute(a=1.0, mode="ok"):
        if mode == "crash":
            raise RuntimeError("boom")
        if a >= 2.0:
            raise ValueError("a must be below 2")
        return [0.0, a if a > 0 else math.nan]

    def figure(y):
        return go.Figure(go.Scatter(x=[0.0, 1.0], y=y, name="toy"))

    panel = panels.LivePanel(compute, {"a": panels.slider("a", 0.0, 2.0, 1.0),
                                       "mode": panels.dropdown("mode", ["ok", "crash"], "ok")},
                             build=figure)
    steps = {(s["control"], s["value"]): s for s in sweep_panel(panel, per_value_timeout=20)}
    assert steps[(None, "None")]["outcome"] == "ok" and not steps[(None, "None")]["nonfinite"]
    assert steps[("a", "0.0")]["nonfinite"] == ["figure 0 trace 0 ('toy') y"]
    assert steps[("a", "2.0")]["outcome"] == "bad" and steps[("a", "2.0")]["message"] == "a must be below 2"
    assert steps[("mode", "'crash'")]["outcome"] == "error"


def test_every_panel_function_is_swept():
    names = panel_functions()
    assert len(names) >= 25, names          # six notebooks' panels
    assert set(NOT_LIVE_PANELS) <= set(names)


@pytest.mark.parametrize("name", [n for n in panel_functions() if n not in NOT_LIVE_PANELS])
def test_panel_controls_at_their_extremes_end_ok_or_with_a_message(panel_sweep, name):
    entry = panel_sweep["panels"][name]
    assert "build_error" not in entry, entry["build_error"]
    assert entry["steps"], "no control was set"
    for step in entry["steps"]:
        where = f"{name}: {step['control']} = {step['value']}" if step["control"] else f"{name} (first draw)"
        assert step["idle"], f"{where}: still computing after the time limit"
        assert step["outcome"] in ("ok", "bad"), f"{where}: outcome {step['outcome']!r}: {step['message']}"
        if step["outcome"] == "bad":
            assert step["message"].strip(), f"{where}: rejected without a message"
        assert not step["nonfinite"], f"{where}: NaN/inf drawn in {step['nonfinite']}"


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--sweep-panels":
    # run by the panel_sweep fixture in a fresh interpreter with LECTURE_FAST=1
    result = sweep_panels([n for n in panel_functions() if n not in NOT_LIVE_PANELS])
    Path(sys.argv[2]).write_text(json.dumps(result, indent=1))
