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

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ._validate import check_choice, check_int, check_nonnegative, check_range, check_seed, check_sizes, check_tensor
from .device import resolve

TASKS = ("regression", "classification", "binary")
DEFAULT_LOSS = {"regression": "mse", "classification": "cross_entropy", "binary": "logistic"}


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
        check_choice("task", self.task, TASKS)
        for split in ("train", "test"):
            for kind in ("x", "y"):
                if not isinstance(getattr(self, f"{kind}_{split}"), torch.Tensor):
                    raise TypeError(f"{kind}_{split} must be a torch.Tensor, got "
                                    f"{type(getattr(self, f'{kind}_{split}')).__name__}")
        if self.task == "regression":  # scalar targets become (n, 1), so per-run batches stay unambiguous
            if self.y_train.dim() == 1:
                self.y_train = self.y_train.unsqueeze(1)
            if self.y_test.dim() == 1:
                self.y_test = self.y_test.unsqueeze(1)
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dim() != 2:
                raise ValueError(f"x_{split} must have shape (n, features), got {tuple(x.shape)}")
            if y.dim() == 0 or y.shape[0] != x.shape[0]:
                raise ValueError(f"x_{split} has {x.shape[0]} rows but y_{split} has shape {tuple(y.shape)}")
            check_tensor(f"x_{split}", x)    # non-empty and finite: a NaN input would pass for a diverged run
            if self.task == "regression":
                check_tensor(f"y_{split}", y, dim=2)
            else:
                if y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
                    raise TypeError(f"y_{split} must hold integer class labels of shape (n,) for a "
                                    f"{self.task} task, got dtype {y.dtype} and shape {tuple(y.shape)}")
                high = 1 if self.task == "binary" else None
                if int(y.min()) < 0 or (high is not None and int(y.max()) > high):
                    raise ValueError(f"y_{split} must hold labels in {{0, 1}}" if high else
                                     f"y_{split} must hold class labels >= 0")
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise ValueError(f"x_train has {self.x_train.shape[1]} features but x_test has {self.x_test.shape[1]}")

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


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(check_seed("seed", seed))


def _n_test(n: int, n_test) -> int:
    check_int("n", n)
    return max(1, n // 4) if n_test is None else check_int("n_test", n_test)


def _random_rotation(dim: int, g: torch.Generator) -> torch.Tensor:
    """A Haar-random orthogonal matrix (QR of a Gaussian matrix with the sign fix)."""
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def gaussian_inputs(n: int, dim: int, mean_norm: float = 0.0, cond: float = 1.0, seed: int = 0,
                    rotate: bool = True):
    r"""Draw ``n`` inputs :math:`x \sim \mathcal N(m, \Sigma)` in float64.

    :math:`\Sigma = Q\,\mathrm{diag}(\sigma_1^2..\sigma_D^2)\,Q^\top` with variances spaced
    geometrically from 1 down to ``1/cond`` (so :math:`\kappa(\Sigma)` = ``cond``) and
    :math:`Q` a random rotation (``rotate=False``: axis aligned). :math:`m` has norm
    ``mean_norm`` along a random direction. Returns ``(x, m, Sigma)``.
    """
    check_int("n", n)
    check_int("dim", dim)
    check_nonnegative("mean_norm", mean_norm)
    check_range("cond", cond, 1.0)
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


def linear_regression(n: int = 512, dim: int = 10, mean_norm: float = 0.0, cond: float = 1.0,
                      noise: float = 0.1, seed: int = 0, n_test: int | None = None, rotate: bool = True,
                      dtype=torch.float32, device=None) -> Dataset:
    r"""Linear regression :math:`y = w_*^\top x + \epsilon`, :math:`\epsilon \sim \mathcal N(0, \text{noise}^2)`.

    Inputs as in :func:`gaussian_inputs`. The teacher :math:`w_* \sim \mathcal N(0, I/D)`
    has no bias, so centering the inputs changes the curvature but not the optimum's
    predictions. ``meta`` holds ``w_true``, ``mean``, ``cov`` (float64).
    """
    check_nonnegative("noise", noise)
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
    check_range("weight_scale", weight_scale, 0.0)
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


def teacher(n: int = 512, sizes=(10, 32, 1), activation: str = "tanh", seed: int = 0, noise: float = 0.0,
            n_test: int | None = None, dtype=torch.float32, device=None) -> Dataset:
    r"""Regression targets from a random teacher MLP ``sizes = [in, h_1, ..., out]``.

    Inputs :math:`x \sim \mathcal N(0, I)`; teacher weights :math:`\mathcal N(0, 1/\text{fan-in})`,
    biases :math:`\mathcal N(0, 0.1^2)` (so hidden units are neither dead nor saturated);
    targets :math:`y = f_*(x) + \text{noise}\cdot\epsilon`. ``meta['weights']`` lists the
    teacher's ``(W, b)`` pairs.
    """
    from .models import activation as get_activation

    sizes = check_sizes("sizes", sizes)
    act = get_activation(activation)
    check_nonnegative("noise", noise)
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


def digits(test_fraction: float = 0.25, seed: int = 0, standardize: bool = True,
           dtype=torch.float32, device=None) -> Dataset:
    """The 8x8 digits of scikit-learn (1797 images, 64 features, 10 classes), split with stratification.

    ``standardize``: subtract the training mean and divide by the training standard
    deviation per pixel (pixels constant on the training set are only centered).
    The split is seeded: the same ``seed`` gives the same split.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    check_range("test_fraction", test_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_seed("seed", seed)
    bunch = load_digits()
    n, classes = len(bunch.target), len(set(bunch.target.tolist()))
    n_test = math.ceil(float(test_fraction) * n)          # how scikit-learn rounds a fractional test_size
    if n_test < classes or n - n_test < classes:          # a stratified split needs every class on both sides
        raise ValueError(f"test_fraction must leave at least one example of each of the {classes} classes in both "
                         f"splits: it must be in [{classes / n:.4g}, {1 - classes / n:.4g}], got {test_fraction}")
    x_tr, x_te, y_tr, y_te = train_test_split(bunch.data, bunch.target, test_size=test_fraction,
                                              random_state=seed, stratify=bunch.target)
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


def load(name: str, **kwargs) -> Dataset:
    """Build a data set by name: ``'linear_regression'``, ``'logistic_regression'``, ``'teacher'``, ``'digits'``."""
    makers = {"linear_regression": linear_regression, "logistic_regression": logistic_regression,
              "teacher": teacher, "digits": digits}
    return makers[check_choice("name", name, makers)](**kwargs)
