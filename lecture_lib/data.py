r"""Small seeded data sets for the explorables, as tensors ready for a batched model.

Every generator is deterministic in its ``seed`` (the same seed gives the same
tensors bit for bit, on any machine with the same torch version) and returns a
:class:`Dataset` with a training and a test split.

=====================  =============================================================
generator              what it is for
=====================  =============================================================
``linear_regression``  inputs :math:`x \sim \mathcal N(m, \Sigma)` with chosen
                       :math:`\lVert m\rVert` and condition number of :math:`\Sigma`:
                       the ICS-conditioning experiments (uncentered inputs give
                       :math:`E[xx^\top] = \Sigma + mm^\top` an outlier eigenvalue).
``logistic_regression``  the same inputs, labels from a logistic teacher; with
                       ``misspecified=True`` the teacher's logit has a quadratic
                       term no linear model can express (empirical vs true Fisher).
``teacher``            regression targets from a random teacher MLP.
``digits``             the 8x8 handwritten digits that ship with scikit-learn
                       (1797 images, 10 classes, no download).
=====================  =============================================================

Tasks: ``'regression'`` (float targets ``(n, K)``, loss ``mse``),
``'classification'`` (integer labels, loss ``cross_entropy``), ``'binary'``
(labels in {0, 1}, one logit, loss ``logistic``).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ._validate import (Bool, Choice, Instance, Int, Labels, NonNegative, Real, Seed, Sizes, Tensor, accepts, init_accepts,
                        same_size)
from .cache import cached
from .device import resolve
from .models import ACTIVATIONS, activation as get_activation

TASKS = ("regression", "classification", "binary")
DEFAULT_LOSS = {"regression": "mse", "classification": "cross_entropy", "binary": "logistic"}


TARGETS = {"regression": Tensor(), "classification": Labels(classes=math.inf), "binary": Labels(classes=2)}
TARGET_SHAPES = {"regression": ((1, 2), "(n,) or (n, K)"), "classification": ((1,), "(n,)"), "binary": ((1,), "(n,)")}


def _targets_fit_task(arguments) -> None:
    """Float targets for regression, integer class labels (0 or 1 for binary) otherwise."""
    task = arguments["task"]
    for split in ("y_train", "y_test"):
        y = TARGETS[task].check(split, arguments[split], arguments)
        dims, shapes = TARGET_SHAPES[task]
        if y.dim() not in dims:
            raise ValueError(f"{split} must have shape {shapes} for a {task} task, got {tuple(y.shape)}")


@init_accepts(_targets_fit_task, same_size(0, "x_train", "y_train"), same_size(0, "x_test", "y_test"),
              same_size(1, "x_train", "x_test"), x_train=Tensor(dim=2), y_train=Instance(torch.Tensor),
              x_test=Tensor(dim=2), y_test=Instance(torch.Tensor), task=Choice(TASKS))
@dataclass
class Dataset:
    """Training and test tensors plus what kind of task they pose.

    ``x_*`` are ``(n, features)`` floats; ``y_*`` are ``(n, K)`` floats for
    regression and ``(n,)`` integer labels for classification and binary tasks.
    ``meta`` holds the generator's ground truth (teacher weights, input mean and
    covariance, ...) for experiments that compare against it.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str
    name: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.task == "regression":  # scalar targets become (n, 1), so per-run batches stay unambiguous
            if self.y_train.dim() == 1:
                self.y_train = self.y_train.unsqueeze(1)
            if self.y_test.dim() == 1:
                self.y_test = self.y_test.unsqueeze(1)

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    @property
    def n_test(self) -> int:
        return self.x_test.shape[0]

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int | None:
        """Number of classes (2 for binary), ``None`` for regression."""
        if self.task == "regression":
            return None
        if self.task == "binary":
            return 2
        return int(self.meta.get("n_classes", int(self.y_train.max()) + 1))

    @property
    def n_outputs(self) -> int:
        """The output size a model needs: K targets, C logits, or one logit for binary."""
        if self.task == "regression":
            return 1 if self.y_train.dim() == 1 else self.y_train.shape[1]
        return 1 if self.task == "binary" else self.n_classes

    @property
    def default_loss(self) -> str:
        return DEFAULT_LOSS[self.task]

    def to(self, device=None, dtype=None) -> "Dataset":
        """A copy on ``device`` with float tensors cast to ``dtype`` (labels stay integer)."""
        device = resolve(device)

        def move(t):
            if t.is_floating_point() and dtype is not None:
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        return replace(self, x_train=move(self.x_train), y_train=move(self.y_train),
                       x_test=move(self.x_test), y_test=move(self.y_test))


SIZES = dict(n=Int(1), dim=Int(1), mean_norm=NonNegative(), cond=Real(1.0), seed=Seed(), n_test=Int(1, optional=True),
             rotate=Bool())     # what the generators share


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _n_test(n: int, n_test) -> int:
    return max(1, n // 4) if n_test is None else n_test


def _random_rotation(dim: int, g: torch.Generator) -> torch.Tensor:
    """A Haar-random orthogonal matrix (QR of a Gaussian matrix with the sign fix)."""
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


@accepts(**{k: SIZES[k] for k in ("n", "dim", "mean_norm", "cond", "seed", "rotate")})
def gaussian_inputs(n: int, dim: int, mean_norm: float = 0.0, cond: float = 1.0, seed: int = 0,
                    rotate: bool = True):
    r"""Draw ``n`` inputs :math:`x \sim \mathcal N(m, \Sigma)` in float64.

    :math:`\Sigma = Q\,\mathrm{diag}(\sigma_1^2..\sigma_D^2)\,Q^\top` with variances spaced
    geometrically from 1 down to ``1/cond`` (so :math:`\kappa(\Sigma)` = ``cond``) and
    :math:`Q` a random rotation (``rotate=False``: axis aligned). :math:`m` has norm
    ``mean_norm`` along a random direction. Returns ``(x, m, Sigma)``.
    """
    g = _generator(seed)
    variances = cond ** (-torch.arange(dim, dtype=torch.float64) / max(dim - 1, 1))
    q = _random_rotation(dim, g) if rotate else torch.eye(dim, dtype=torch.float64)
    direction = torch.randn(dim, generator=g, dtype=torch.float64)
    mean = direction / direction.norm() * float(mean_norm)
    z = torch.randn(n, dim, generator=g, dtype=torch.float64)
    x = (z * variances.sqrt()) @ q.T + mean
    sigma = (q * variances) @ q.T
    return x, mean, sigma


def _split(x, y, n_train: int):
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


@accepts(noise=NonNegative(), **SIZES)
def linear_regression(n: int = 512, dim: int = 10, mean_norm: float = 0.0, cond: float = 1.0,
                      noise: float = 0.1, seed: int = 0, n_test: int | None = None, rotate: bool = True,
                      dtype=torch.float32, device=None) -> Dataset:
    r"""Linear regression :math:`y = w_*^\top x + \epsilon`, :math:`\epsilon \sim \mathcal N(0, \text{noise}^2)`.

    Inputs as in :func:`gaussian_inputs`. The teacher :math:`w_* \sim \mathcal N(0, I/D)`
    has no bias, so centering the inputs changes the curvature but not the optimum's
    predictions. ``meta`` holds ``w_true``, ``mean``, ``cov`` (float64).
    """
    m = _n_test(n, n_test)
    x, mean, sigma = gaussian_inputs(n + m, dim, mean_norm, cond, seed, rotate)
    g = _generator(seed + 1)
    w_true = torch.randn(dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
    y = (x @ w_true + float(noise) * torch.randn(n + m, generator=g, dtype=torch.float64)).unsqueeze(1)
    device = resolve(device)
    x, y = x.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device)
    return Dataset(*_split(x, y, n), task="regression",
                   name=f"linear regression (D={dim}, |m|={mean_norm:g}, cond={cond:g})",
                   meta={"w_true": w_true, "mean": mean, "cov": sigma, "noise": float(noise)})


@accepts(misspecified=Bool(), weight_scale=NonNegative(), **SIZES)
def logistic_regression(n: int = 512, dim: int = 10, mean_norm: float = 0.0, cond: float = 1.0,
                        seed: int = 0, misspecified: bool = False, weight_scale: float = 2.0,
                        n_test: int | None = None, rotate: bool = True,
                        dtype=torch.float32, device=None) -> Dataset:
    r"""Binary labels :math:`y \sim \mathrm{Bernoulli}(\sigma(z))` from a logistic teacher.

    Well specified: :math:`z = w_*^\top (x - m)` with :math:`\lVert w_* \rVert` set so the
    logit has standard deviation ``weight_scale``. Misspecified: :math:`z = w_*^\top (x - m)
    + \text{weight\_scale}\,(u^2 - 1)` with :math:`u` the standardized projection of
    :math:`x` on a second direction: a quadratic term that a linear logistic model cannot
    represent, so even at its optimum the empirical Fisher differs from the true Fisher
    (Kunstner et al., 2019, "Limitations of the empirical Fisher approximation").
    ``meta`` holds ``w_true``, ``mean``, ``cov``, ``p_true`` (training probabilities).
    """
    m = _n_test(n, n_test)
    x, mean, sigma = gaussian_inputs(n + m, dim, mean_norm, cond, seed, rotate)
    g = _generator(seed + 1)
    w = torch.randn(dim, generator=g, dtype=torch.float64)
    w_true = w * (float(weight_scale) / torch.sqrt(w @ sigma @ w))
    logit = (x - mean) @ w_true
    if misspecified:
        v = torch.randn(dim, generator=g, dtype=torch.float64)
        u = (x - mean) @ v / torch.sqrt(v @ sigma @ v)
        logit = logit + float(weight_scale) * (u ** 2 - 1)
    p = torch.sigmoid(logit)
    y = (torch.rand(n + m, generator=g, dtype=torch.float64) < p).long()
    device = resolve(device)
    x, y = x.to(dtype=dtype, device=device), y.to(device=device)
    kind = "misspecified" if misspecified else "well specified"
    return Dataset(*_split(x, y, n), task="binary",
                   name=f"logistic regression, {kind} (D={dim}, |m|={mean_norm:g}, cond={cond:g})",
                   meta={"w_true": w_true, "mean": mean, "cov": sigma, "p_true": p[:n],
                         "misspecified": bool(misspecified)})


@accepts(sizes=Sizes(), activation=Choice(ACTIVATIONS), noise=NonNegative(),
         **{k: SIZES[k] for k in ("n", "seed", "n_test")})
def teacher(n: int = 512, sizes=(10, 32, 1), activation: str = "tanh", seed: int = 0, noise: float = 0.0,
            n_test: int | None = None, dtype=torch.float32, device=None) -> Dataset:
    r"""Regression targets from a random teacher MLP ``sizes = [in, h_1, ..., out]``.

    Inputs :math:`x \sim \mathcal N(0, I)`; teacher weights :math:`\mathcal N(0, 1/\text{fan-in})`,
    biases :math:`\mathcal N(0, 0.1^2)` (so hidden units are neither dead nor saturated);
    targets :math:`y = f_*(x) + \text{noise}\cdot\epsilon`. ``meta['weights']`` lists the
    teacher's ``(W, b)`` pairs.
    """
    act = get_activation(activation)
    m = _n_test(n, n_test)
    g = _generator(seed)
    x = torch.randn(n + m, sizes[0], generator=g, dtype=torch.float64)
    weights, a = [], x
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = torch.randn(n_out, n_in, generator=g, dtype=torch.float64) / math.sqrt(n_in)
        b = 0.1 * torch.randn(n_out, generator=g, dtype=torch.float64)
        weights.append((w, b))
        a = a @ w.T + b
        if i < len(sizes) - 2:
            a = act(a)
    y = a + float(noise) * torch.randn(a.shape, generator=g, dtype=torch.float64)
    device = resolve(device)
    x, y = x.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device)
    return Dataset(*_split(x, y, n), task="regression",
                   name=f"teacher MLP {sizes} ({activation})", meta={"weights": weights, "noise": float(noise)})


DIGITS_SIZE, DIGITS_CLASSES = 1797, 10     # scikit-learn's 8x8 digits
# a stratified split needs every class on both sides: at least 10 test and 10 training examples
TEST_FRACTION = Real(DIGITS_CLASSES / DIGITS_SIZE, 1 - DIGITS_CLASSES / DIGITS_SIZE)


#: The one digits split the notebooks share: 25% of the images (450) held out for testing, split seed 0.
#: The split seed is not a training seed: runs that vary their initialization or minibatch order keep this split,
#: so their test accuracies are measured on the same images. An experiment that needs another split (e.g. a larger
#: test set to shrink the sampling noise of test accuracy) passes its own values and says why.
DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


@accepts(test_fraction=TEST_FRACTION, seed=Seed(), standardize=Bool(), n_train=Int(DIGITS_CLASSES, optional=True),
         label_noise=Real(0.0, 1.0, high_open=True))
def digits(test_fraction: float = DIGITS_TEST_FRACTION, seed: int = DIGITS_SPLIT_SEED, standardize: bool = True,
           n_train: int | None = None, label_noise: float = 0.0, dtype=torch.float32, device=None) -> Dataset:
    """The 8x8 digits of scikit-learn (1797 images, 64 features, 10 classes), split with stratification.

    ``standardize``: subtract the training mean and divide by the training standard
    deviation per pixel (pixels constant on the training set are only centered).
    The split is seeded: the same ``seed`` gives the same split. The defaults are the shared split
    (:data:`DIGITS_TEST_FRACTION`, :data:`DIGITS_SPLIT_SEED`).

    Harder variants (the test split is the same images either way; defaults change nothing):
    ``n_train`` keeps only that many training images (a stratified subset, chosen with ``seed``);
    ``label_noise`` replaces that fraction of the *training* labels by a different class drawn uniformly
    (the images chosen with ``seed``; the test labels stay clean). Standardization uses the kept images.
    """
    images, labels = _digits_arrays()
    train, test = _digits_split(test_fraction, seed)
    x_tr, x_te, y_tr, y_te = images[train], images[test], labels[train], labels[test]     # copies
    if n_train is not None and n_train < len(y_tr):
        from sklearn.model_selection import train_test_split

        x_tr, _, y_tr, _ = train_test_split(x_tr, y_tr, train_size=n_train, random_state=seed, stratify=y_tr)
    y_tr = _noisy_labels(y_tr, label_noise, seed) if label_noise > 0 else y_tr
    x_tr = torch.as_tensor(x_tr, dtype=torch.float64)
    x_te = torch.as_tensor(x_te, dtype=torch.float64)
    if standardize:
        mu, sd = x_tr.mean(0), x_tr.std(0)
        sd = torch.where(sd > 0, sd, torch.ones_like(sd))
        x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    device = resolve(device)
    return Dataset(x_tr.to(dtype=dtype, device=device), torch.as_tensor(y_tr, dtype=torch.long, device=device),
                   x_te.to(dtype=dtype, device=device), torch.as_tensor(y_te, dtype=torch.long, device=device),
                   task="classification", name="digits (8x8, scikit-learn)", meta={"n_classes": 10})


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    """scikit-learn's digits (images ``(1797, 64)``, labels), read once per process, read-only.

    Read from the CSV scikit-learn ships, as its ``load_digits`` reads it, without importing
    ``sklearn.datasets``: that import (scipy with it) took 0.66 s and 77 MB in a kernel whose notebook had
    come from the result cache, on the first slider move that computed anything. ``load_digits`` where the
    file is not where scikit-learn keeps it.
    """
    import gzip
    import importlib.util
    from pathlib import Path

    import numpy as np

    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is not None and path.is_file():
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",")
        images, labels = table[:, :-1], table[:, -1].astype(int)
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images, labels = bunch.data, bunch.target
    for a in (images, labels):
        a.setflags(write=False)
    return images, labels


@cached
def _stratified_split(test_fraction: float, seed: int):
    """scikit-learn's stratified split of the digits: the (train, test) rows ``train_test_split`` gives the images.
    Kept in the result cache (:mod:`lecture_lib.cache`), so a kernel reading its notebook from a warm cache splits
    without importing ``sklearn.model_selection``."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    labels = _digits_arrays()[1]
    train, test = train_test_split(np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels)
    return train, test


@functools.lru_cache(maxsize=16)
def _digits_split(test_fraction: float, seed: int):
    """:func:`_stratified_split`, once per process, read-only."""
    train, test = (a.copy() for a in _stratified_split(test_fraction, seed))
    for a in (train, test):
        a.setflags(write=False)
    return train, test


def _noisy_labels(labels, fraction: float, seed: int):
    """A copy of ``labels`` with ``round(fraction * n)`` of them (chosen with ``seed``) moved to another class."""
    import numpy as np

    rng = np.random.default_rng(seed + 7919)
    labels = np.array(labels, copy=True)
    flip = rng.choice(len(labels), size=int(round(fraction * len(labels))), replace=False)
    labels[flip] = (labels[flip] + rng.integers(1, DIGITS_CLASSES, size=len(flip))) % DIGITS_CLASSES
    return labels


MAKERS = {"linear_regression": linear_regression, "logistic_regression": logistic_regression, "teacher": teacher,
          "digits": digits}


@accepts(name=Choice(tuple(MAKERS)))
def load(name: str, **kwargs) -> Dataset:
    """Build a data set by name: ``'linear_regression'``, ``'logistic_regression'``, ``'teacher'``, ``'digits'``."""
    return MAKERS[name](**kwargs)
