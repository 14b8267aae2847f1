"""The batched training loop: one batched run equals R separate runs, divergence is per run,
records hold what they claim (float64 identities), and a seed reproduces a run bit for bit."""
import math

import numpy as np
import pytest
import torch

from lecture_lib import data, engine
from lecture_lib.models import MLP, DeepLinear, ScaleInvariantLinear
from lecture_lib.optim import adamw, sgd

f64 = torch.float64


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits64():
    return data.digits(dtype=f64)


@pytest.fixture(scope="module")
def regression():
    return data.linear_regression(n=64, dim=5, mean_norm=1.0, noise=0.1, seed=0, dtype=f64)


def _bn_mlp(runs, seed, dtype=f64):
    return MLP([64, 16, 16, 10], norm="batch", runs=runs, seed=seed, dtype=dtype)


# --- batched == separate ----------------------------------------------------------------------------
def test_batched_run_equals_separate_runs_float64(digits64):
    lrs, model_seeds, batch_seeds = [0.02, 0.2, 0.5], [1, 2, 3], [4, 5, 6]
    batched = dict(steps=30, batch_size=32, record_every=3, eval_every=10)
    rec = engine.train(_bn_mlp(3, model_seeds), digits64, "cross_entropy",
                       sgd(torch.tensor(lrs, dtype=f64), momentum=0.9), seed=batch_seeds, **batched)
    for r in range(3):
        alone = engine.train(_bn_mlp(1, model_seeds[r]), digits64, "cross_entropy",
                             sgd(lrs[r], momentum=0.9), seed=[batch_seeds[r]], **batched)
        np.testing.assert_allclose(rec.loss[:, r], alone.loss[:, 0], rtol=1e-10, atol=0)
        np.testing.assert_allclose(rec.test_loss[:, r], alone.test_loss[:, 0], rtol=1e-10, atol=0)
        np.testing.assert_allclose(rec.accuracy[:, r], alone.accuracy[:, 0], rtol=0, atol=0)
        for name in rec.param_norm:
            np.testing.assert_allclose(rec.param_norm[name][:, r], alone.param_norm[name][:, 0], rtol=1e-10)
            np.testing.assert_allclose(rec.grad_norm[name][:, r], alone.grad_norm[name][:, 0], rtol=1e-8)
            np.testing.assert_allclose(rec.angular_step[name][:, r], alone.angular_step[name][:, 0], rtol=1e-7)
    assert (rec.diverged_at == -1).all()


def test_batched_adamw_with_per_run_weight_decay_equals_separate_runs(digits64):
    wds = [0.0, 1e-2, 1e-1]
    kwargs = dict(steps=15, batch_size=40, record_every=1)
    rec = engine.train(_bn_mlp(3, 0), digits64, None, adamw(1e-2, weight_decay=torch.tensor(wds, dtype=f64)),
                       seed=2, **kwargs)
    for r, wd in enumerate(wds):
        alone = engine.train(_bn_mlp(1, 0), digits64, None, adamw(1e-2, weight_decay=wd), seed=2, **kwargs)
        np.testing.assert_allclose(rec.loss[:, r], alone.loss[:, 0], rtol=1e-10, atol=0)
        name = "linears.1.weight"
        np.testing.assert_allclose(rec.param_norm[name][:, r], alone.param_norm[name][:, 0], rtol=1e-10)


def test_int_seed_shares_the_minibatch_order_across_runs(regression):
    """With one int seed every run sees the same minibatches: identical models and lrs give identical runs."""
    rec = engine.train(DeepLinear([5, 1], runs=2, seed=0, dtype=f64), regression, "mse", sgd(0.1), steps=20,
                       batch_size=8, seed=3)
    np.testing.assert_array_equal(rec.loss[:, 0], rec.loss[:, 1])
    rec2 = engine.train(DeepLinear([5, 1], runs=2, seed=0, dtype=f64), regression, "mse", sgd(0.1), steps=20,
                        batch_size=8, seed=[3, 4])
    np.testing.assert_array_equal(rec2.loss[:, 0], rec.loss[:, 0])
    assert not np.array_equal(rec2.loss[:, 1], rec.loss[:, 1])


def test_minibatches_cover_each_epoch_once():
    stream = engine.MinibatchStream(10, 4, [0, 1], "cpu")
    idx = torch.cat([next(stream) for _ in range(5)], dim=1)  # 20 indices = 2 epochs
    for r in range(2):
        assert sorted(idx[r, :10].tolist()) == list(range(10))
        assert sorted(idx[r, 10:].tolist()) == list(range(10))
    assert not torch.equal(idx[0], idx[1])


# --- reproducibility ---------------------------------------------------------------------------------
def test_same_seed_reproduces_bit_for_bit():
    d = data.digits()  # float32, minibatches, BN: the realistic case

    def run():
        return engine.train(_bn_mlp(3, [0, 1, 2], dtype=torch.float32), d, None,
                            sgd(torch.tensor([0.05, 0.1, 0.3]), momentum=0.9), steps=25, batch_size=16,
                            seed=[7, 8, 9], eval_every=10)

    a, b = run(), run()
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.test_loss, b.test_loss)
    for name in a.param_norm:
        np.testing.assert_array_equal(a.param_norm[name], b.param_norm[name])
        np.testing.assert_array_equal(a.angular_step[name], b.angular_step[name])


# --- divergence ---------------------------------------------------------------------------------------
def test_divergent_run_is_stopped_and_others_are_untouched(regression):
    lrs = [0.1, 50.0, 0.05]
    model = MLP([5, 8, 1], runs=3, seed=[0, 1, 2], activation="tanh", dtype=f64)
    rec = engine.train(model, regression, "mse", sgd(torch.tensor(lrs, dtype=f64)), steps=40, batch_size=16,
                       seed=[3, 4, 5], eval_every=5)
    k = int(rec.diverged_at[1])
    assert k > 0 and rec.diverged_at[0] == -1 and rec.diverged_at[2] == -1
    assert rec.divergence_note(1) == f"diverged at step {k}" and rec.divergence_note(0) is None
    # rows from the divergence step on are NaN, rows before are finite
    assert np.isfinite(rec.loss[:k, 1]).all() and np.isnan(rec.loss[k:, 1]).all()
    assert rec.loss[k - 1, 1] <= 1e6 and np.isfinite(rec.loss[rec.valid(1), 1]).all()
    assert np.isnan(rec.test_loss[rec.eval_steps >= k, 1]).all()
    for name in rec.param_norm:
        assert np.isnan(rec.param_norm[name][k:, 1]).all() and np.isnan(rec.effective_lr[name][k:, 1]).all()
    # the stopped run keeps its last finite weights, frozen
    for p in model.parameters():
        assert torch.isfinite(p[1]).all()
    # the other runs are exactly what they would have been alone
    for r in (0, 2):
        alone = engine.train(MLP([5, 8, 1], runs=1, seed=r, activation="tanh", dtype=f64), regression, "mse",
                             sgd(lrs[r]), steps=40, batch_size=16, seed=[3 + r], eval_every=5)
        np.testing.assert_allclose(rec.loss[:, r], alone.loss[:, 0], rtol=1e-12, atol=0)
        np.testing.assert_allclose(rec.test_loss[:, r], alone.test_loss[:, 0], rtol=1e-12, atol=0)
        for name in rec.param_norm:
            np.testing.assert_allclose(rec.param_norm[name][:, r], alone.param_norm[name][:, 0], rtol=1e-12)


def test_divergence_threshold_and_nan_loss(regression):
    # a threshold below the initial loss stops every run at step 0
    rec = engine.train(DeepLinear([5, 1], runs=2, seed=[0, 1], dtype=f64), regression, "mse", sgd(0.01),
                       steps=5, diverge_above=1e-9)
    assert (rec.diverged_at == 0).all() and np.isnan(rec.loss).all()
    # diverge_above=None only stops non-finite runs: a huge learning rate overflows float64 to inf/NaN
    model = DeepLinear([5, 1], runs=2, seed=[0, 1], dtype=f64)
    rec = engine.train(model, regression, "mse", sgd(torch.tensor([0.01, 1e200], dtype=f64)), steps=6,
                       diverge_above=None)
    assert rec.diverged_at[0] == -1 and 0 <= rec.diverged_at[1] < 6
    assert torch.isfinite(model.linears[0].weight).all()


# --- what the record holds -----------------------------------------------------------------------------
def test_record_shapes_and_config(digits64):
    R, steps = 2, 23
    rec = engine.train(_bn_mlp(R, [0, 1]), digits64, "cross_entropy", sgd(torch.tensor([0.1, 0.2], dtype=f64)),
                       steps=steps, batch_size=50, record_every=5, eval_every=10)
    K = math.ceil(steps / 5)
    np.testing.assert_array_equal(rec.steps, [0, 5, 10, 15, 20])
    assert rec.loss.shape == (K, R) and rec.accuracy.shape == (K, R) and rec.runs == R
    names = [n for n, _ in _bn_mlp(1, 0).named_parameters()]
    for field in (rec.param_norm, rec.grad_norm, rec.effective_lr, rec.angular_step):
        assert list(field) == names and all(v.shape == (K, R) for v in field.values())
    np.testing.assert_array_equal(rec.eval_steps, [0, 10, 20, 23])
    assert rec.test_loss.shape == (4, R) and rec.test_accuracy.shape == (4, R)
    assert rec.scale_invariant["linears.0.weight"] and not rec.scale_invariant["linears.2.weight"]
    assert rec.config["optimizer"]["lr"] == [0.1, 0.2] and rec.config["optimizer"]["momentum"] == 0.0
    assert rec.config["optimizer"]["weight_decay"] == 0.0
    assert rec.config["steps"] == steps and rec.config["batch_size"] == 50 and rec.config["loss"] == "cross_entropy"
    assert rec.config["runs"] == R and rec.config["dtype"] == "float64"
    # regression: no accuracy
    reg = engine.train(DeepLinear([64, 10], dtype=f64), digits64, lambda out, y: out.pow(2).mean((1, 2)),
                       sgd(0.1), steps=2)
    assert reg.loss.shape == (2, 1)


def test_effective_lr_is_lr_over_squared_norm(digits64):
    lr = torch.tensor([0.1, 0.4], dtype=f64)
    rec = engine.train(_bn_mlp(2, [0, 1]), digits64, None, sgd(lr), steps=12, batch_size=64)
    for name in rec.effective_lr:
        with np.errstate(divide="ignore"):  # BN shifts start at zero: alpha / 0 = inf, recorded as such
            expected = lr.numpy() / rec.param_norm[name] ** 2
        np.testing.assert_allclose(rec.effective_lr[name], expected, rtol=1e-14)
    assert np.isinf(rec.effective_lr["norms.0.shift"][0]).all()


def test_effective_lr_follows_a_schedule(regression):
    schedule = lambda step: 0.1 * 0.5 ** step  # noqa: E731
    rec = engine.train(DeepLinear([5, 1], dtype=f64), regression, "mse", sgd(schedule), steps=4)
    alphas = np.array([0.1 * 0.5 ** k for k in range(4)])[:, None]
    np.testing.assert_allclose(rec.effective_lr["linears.0.weight"], alphas / rec.param_norm["linears.0.weight"] ** 2)


def test_scale_invariant_sgd_records_pythagoras_and_angles():
    """For w ⊥ ∇J: ||w_{k+1}||² = ||w_k||² + α²||∇J||², angle = atan(α||∇J||/||w||) (SCIENCE.md §4)."""
    d = data.logistic_regression(n=128, dim=6, seed=1, dtype=f64)
    lr = np.array([0.05, 0.5, 2.0])
    rec = engine.train(ScaleInvariantLinear(6, scale=3.0, runs=3, seed=[0, 1, 2], dtype=f64), d, "logistic",
                       sgd(torch.tensor(lr, dtype=f64)), steps=50)
    w, g, angle = rec.param_norm["w"], rec.grad_norm["w"], rec.angular_step["w"]
    np.testing.assert_allclose(w[1:] ** 2, w[:-1] ** 2 + lr ** 2 * g[:-1] ** 2, rtol=1e-12)
    np.testing.assert_allclose(angle, np.arctan(lr * g / w), rtol=1e-9, atol=1e-15)
    assert (np.diff(w, axis=0) >= 0).all() and (w[-1] > w[0]).all()  # without weight decay the norm only grows


def test_track_and_callback(regression):
    seen = []
    R = 2
    track = {
        "w": lambda model, params, grads, state: params["linears.0.weight"].clone(),
        "buffer_dot_grad": lambda model, params, grads, state: (state[1].velocity["linears.0.weight"]
                                                                * grads["linears.0.weight"]).flatten(1).sum(1),
    }
    rec = engine.train(DeepLinear([5, 1], runs=R, seed=[0, 1], dtype=f64), regression, "mse",
                       sgd(0.05, momentum=0.9), steps=6, record_every=2, track=track,
                       callback=lambda step, model: seen.append((step, model.training)))
    assert rec.extras["w"].shape == (3, R, 1, 5) and rec.extras["buffer_dot_grad"].shape == (3, R)
    np.testing.assert_allclose(np.linalg.norm(rec.extras["w"].reshape(3, R, -1), axis=-1),
                               rec.param_norm["linears.0.weight"], rtol=1e-14)
    assert rec.extras["buffer_dot_grad"][0].tolist() == [0.0, 0.0]  # the buffer starts at zero
    assert seen == [(k, True) for k in range(6)]


def test_callback_can_rescale_weights(digits64):
    """Norm grafting's mechanism: a callback that renormalizes a scale-invariant layer after each step."""
    def to_unit(step, model):
        with torch.no_grad():
            w = model.linears[0].weight
            w.div_(w.flatten(1).norm(dim=1)[:, None, None])

    rec = engine.train(_bn_mlp(2, [0, 1]), digits64, None, sgd(0.5), steps=5, batch_size=64, callback=to_unit)
    np.testing.assert_allclose(rec.param_norm["linears.0.weight"][1:], 1.0, rtol=1e-14)


def test_eval_uses_running_statistics_and_restores_train_mode(digits64):
    model = _bn_mlp(1, 0)
    rec = engine.train(model, digits64, None, sgd(0.1), steps=3, batch_size=100, eval_every=3)
    assert model.training
    model.eval()
    with torch.no_grad():
        out = model(digits64.x_test)
    final = torch.nn.functional.cross_entropy(out[0], digits64.y_test).item()
    assert rec.test_loss[-1, 0] == pytest.approx(final, rel=1e-14)


def test_trainer_steps_by_hand(regression):
    trainer = engine.Trainer(DeepLinear([5, 1], runs=2, seed=[0, 1], dtype=f64), regression, "mse",
                             sgd(torch.tensor([0.1, 0.2], dtype=f64)))
    first = trainer.step(record=True)
    assert first["loss"].shape == (2,) and first["param_norm"].shape == (1, 2)
    assert trainer.step() is None and trainer.step_count == 2
    assert trainer.alive.all() and (trainer.diverged_at == -1).all()
    test_loss, acc = trainer.evaluate()
    assert test_loss.shape == (2,) and acc is None


# --- validation ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, err, match", [
    (dict(steps=0), ValueError, "steps"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=65), ValueError, "batch_size"),
    (dict(loss="hinge"), ValueError, "loss"),
    (dict(optimizer=sgd(torch.tensor([0.1, 0.2, 0.3]))), ValueError, "3 per-run values"),
    (dict(optimizer=sgd(lambda step: torch.tensor([0.1, 0.2, 0.3]))), ValueError, "per-run"),
    (dict(seed=[1, 2, 3]), ValueError, "seed"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(record_every=0), ValueError, "record_every"),
    (dict(eval_every=0), ValueError, "eval_every"),
    (dict(diverge_above=-1.0), ValueError, "diverge_above"),
    (dict(data="digits"), TypeError, "Dataset"),
    (dict(optimizer=torch.optim.SGD), TypeError, "transformation"),
    (dict(track={"x": 3}), TypeError, "track"),
    (dict(track={"x": lambda *a: torch.zeros(5)}), ValueError, "leading run dimension"),
])
def test_train_rejects_bad_arguments(regression, kwargs, err, match):
    args = dict(model=DeepLinear([5, 1], runs=2, seed=[0, 1], dtype=f64), data=regression, loss="mse",
                optimizer=sgd(0.1), steps=3)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        engine.train(**args)
