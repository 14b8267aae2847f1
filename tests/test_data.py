"""Data generators: seeded, with the mean norm and conditioning asked for, and the digits split."""
import math
import os

import pytest
import torch

from conftest import REPO
from lecture_lib import data

f64 = torch.float64


@pytest.mark.parametrize("make", [
    lambda s: data.linear_regression(n=64, dim=5, mean_norm=2.0, cond=10.0, seed=s),
    lambda s: data.logistic_regression(n=64, dim=5, mean_norm=1.0, seed=s),
    lambda s: data.logistic_regression(n=64, dim=5, seed=s, misspecified=True),
    lambda s: data.teacher(n=64, sizes=[5, 8, 2], seed=s, noise=0.1),
])
def test_generators_are_seeded(make):
    a, b, c = make(3), make(3), make(4)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert not torch.equal(a.x_train, c.x_train)
    assert a.x_train.dtype == torch.float32
    assert a.n_train == 64 and a.n_test == 16 and a.n_features == 5


def test_input_mean_norm_and_condition_number():
    x, mean, sigma = data.gaussian_inputs(40000, 6, mean_norm=3.0, cond=50.0, seed=1)
    assert mean.norm().item() == pytest.approx(3.0, rel=1e-12)
    eig = torch.linalg.eigvalsh(sigma)
    assert (eig.max() / eig.min()).item() == pytest.approx(50.0, rel=1e-10)
    assert eig.max().item() == pytest.approx(1.0, rel=1e-10)
    # the sample agrees with the population within sampling error
    assert (x.mean(0) - mean).norm().item() < 5 * math.sqrt(6 / 40000)
    emp = torch.cov(x.T)
    emp_eig = torch.linalg.eigvalsh(emp)
    assert (emp_eig.max() / emp_eig.min()).item() == pytest.approx(50.0, rel=0.1)


def test_uncentered_second_moment_has_the_predicted_outlier():
    """E[x x^T] = I + m m^T has one eigenvalue |m|^2 + 1 (SCIENCE.md §2: 10 for |m| = 3), the rest 1."""
    x, mean, _ = data.gaussian_inputs(100000, 20, mean_norm=3.0, cond=1.0, seed=0)
    A = x.T @ x / x.shape[0]
    eig = torch.linalg.eigvalsh(A)
    assert eig[-1].item() == pytest.approx(10.0, rel=0.02)
    assert eig[:-1].max().item() < 1.05 and eig[:-1].min().item() > 0.95
    top = torch.linalg.eigh(A).eigenvectors[:, -1]
    assert abs(top @ mean).item() / 3.0 > 0.999


def test_axis_aligned_inputs_have_diagonal_covariance():
    _, _, sigma = data.gaussian_inputs(10, 4, cond=8.0, seed=0, rotate=False)
    torch.testing.assert_close(sigma, torch.diag(8.0 ** (-torch.arange(4, dtype=f64) / 3)))


def test_linear_regression_noise_and_teacher():
    d = data.linear_regression(n=20000, dim=4, noise=0.3, seed=2, dtype=f64)
    assert d.task == "regression" and d.y_train.shape == (20000, 1) and d.n_outputs == 1
    resid = d.y_train[:, 0] - d.x_train @ d.meta["w_true"]
    assert resid.std().item() == pytest.approx(0.3, rel=0.03)
    assert d.default_loss == "mse" and d.n_classes is None


def test_logistic_labels_follow_the_teacher():
    d = data.logistic_regression(n=20000, dim=4, seed=0, dtype=f64)
    assert d.task == "binary" and d.n_outputs == 1 and d.n_classes == 2
    assert set(d.y_train.unique().tolist()) == {0, 1}
    p = d.meta["p_true"]
    assert d.y_train.double().mean().item() == pytest.approx(p.mean().item(), abs=0.01)
    # the teacher logit has the requested standard deviation
    logit = torch.logit(p)
    assert logit.std().item() == pytest.approx(2.0, rel=0.05)


def test_misspecified_logit_is_not_linear():
    well = data.logistic_regression(n=4000, dim=3, seed=5, dtype=f64)
    bad = data.logistic_regression(n=4000, dim=3, seed=5, misspecified=True, dtype=f64)
    assert torch.equal(well.x_train, bad.x_train)

    def linear_fit_residual(d):
        z = torch.logit(d.meta["p_true"])
        X = torch.cat([d.x_train, torch.ones(d.n_train, 1, dtype=f64)], 1)
        coef = torch.linalg.lstsq(X, z.unsqueeze(1)).solution
        return (X @ coef - z.unsqueeze(1)).norm().item() / z.norm().item()

    assert linear_fit_residual(well) < 1e-10
    assert linear_fit_residual(bad) > 0.3


def test_teacher_targets_come_from_the_teacher():
    d = data.teacher(n=100, sizes=[3, 6, 2], activation="tanh", seed=1, noise=0.0, dtype=f64)
    (W1, b1), (W2, b2) = d.meta["weights"]
    torch.testing.assert_close(d.y_train, torch.tanh(d.x_train @ W1.T + b1) @ W2.T + b2)
    assert d.n_outputs == 2


def test_digits_shapes_split_and_standardization(digits):
    d = digits
    assert d.n_train + d.n_test == 1797 and d.n_test == 450
    assert d.x_train.shape == (1347, 64) and d.y_train.dtype == torch.long
    assert d.task == "classification" and d.n_classes == 10 and d.n_outputs == 10
    varying = d.x_train.std(0) > 0
    torch.testing.assert_close(d.x_train.mean(0), torch.zeros(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(d.x_train[:, varying].std(0), torch.ones(int(varying.sum())), atol=1e-5, rtol=0)
    # stratified: every class appears in both splits in proportion
    counts = torch.bincount(d.y_test, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47
    again, other = data.digits(seed=0), data.digits(seed=1)
    assert torch.equal(again.x_train, d.x_train) and not torch.equal(other.y_train, d.y_train)
    raw = data.digits(standardize=False, test_fraction=0.5, dtype=f64)
    assert raw.x_train.max().item() == 16.0 and raw.x_train.dtype == f64 and raw.n_test == 899


def test_digits_is_scikit_learns_split_and_each_call_gets_its_own_copy():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    for fraction, seed in ((0.25, 0), (0.5, 3)):
        x_tr, x_te, y_tr, y_te = train_test_split(bunch.data, bunch.target, test_size=fraction, random_state=seed,
                                                  stratify=bunch.target)
        d = data.digits(test_fraction=fraction, seed=seed, standardize=False, dtype=f64)
        for got, want in ((d.x_train, x_tr), (d.x_test, x_te), (d.y_train, y_tr), (d.y_test, y_te)):
            assert torch.equal(got, torch.as_tensor(want).to(got.dtype))
    # the images and split are read once per process: what a caller does to its dataset stays with it
    first = data.digits(standardize=False, dtype=f64)
    first.x_train.fill_(-1.0)
    first.y_train.fill_(0)
    again = data.digits(standardize=False, dtype=f64)
    assert again.x_train.min().item() == 0.0 and again.y_train.max().item() == 9


def test_dataset_to_device_and_dtype(digits):
    d = digits.to("cpu", dtype=f64)
    assert d.x_train.dtype == f64 and d.y_train.dtype == torch.long


@pytest.mark.parametrize("call", [
    lambda: data.linear_regression(mean_norm=-1.0),
    lambda: data.linear_regression(cond=0.5),
    lambda: data.linear_regression(noise=-0.1),
    lambda: data.linear_regression(n=0),
    lambda: data.logistic_regression(seed=-1),
    lambda: data.teacher(sizes=[3]),
    lambda: data.teacher(activation="swish"),
    lambda: data.digits(test_fraction=0.0),
    lambda: data.digits(test_fraction=1.0),
    lambda: data.load("mnist"),
    lambda: data.Dataset(torch.zeros(3, 2), torch.zeros(4), torch.zeros(1, 2), torch.zeros(1), "regression", "x"),
    lambda: data.Dataset(torch.zeros(3, 2), torch.zeros(3), torch.zeros(1, 2), torch.zeros(1), "ranking", "x"),
])
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_load_by_name():
    d = data.load("linear_regression", n=16, dim=2)
    assert d.n_train == 16 and d.n_features == 2


def test_a_fresh_computation_in_a_kernel_with_a_warm_cache_imports_neither_sklearn_nor_sympy(tmp_path):
    """A kernel whose notebook came from the result cache used to pay 0.9 s and 110 MB of imports on the first slider
    move that computed anything: scikit-learn's datasets (scipy with them) to read the digits, and sympy through
    torch's first autograd.grad with a grad_outputs tensor (K-FAC-G's factors). The split is kept in the cache and
    the CSV read with numpy; the factors back-propagate a scalar."""
    import subprocess
    import sys

    env = dict(os.environ, LECTURE_CACHE_DIR=str(tmp_path), OMP_NUM_THREADS="1")
    fresh = ("import sys\n"
             "from lecture_lib.viz import mechanisms_panels\n"
             "import lecture_lib.experiments.mechanisms as E\n"
             "E.jacobian_experiment(steps=2, width=4, depth=1, seeds=(0,), decays_per_step=(0.0,), lr_kfac={lr})\n"
             "print(sorted(m for m in ('sklearn', 'scipy', 'sympy') if m in sys.modules))\n")
    run = lambda lr: subprocess.run([sys.executable, "-c", fresh.format(lr=lr)], env=env, cwd=REPO, text=True,
                                    capture_output=True, check=True).stdout.split("\n")[-2]
    assert "sklearn" in run(0.01)          # an empty cache: the split is made with scikit-learn, and kept
    assert run(0.02) == "[]"               # another experiment, computed: nothing heavy imported
