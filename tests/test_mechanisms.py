"""Tests for lecture_lib.mechanisms (the three mechanisms of weight decay, Zhang et al. 2019) and their experiments."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lecture_lib import mechanisms as M
from lecture_lib.experiments import mechanisms as E
from lecture_lib.models import DeepLinear


@pytest.fixture
def one_thread():
    """The saved table was computed on one thread; float32 sums are reproducible bit for bit only then."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _bn_net(runs=1, seed=0, width=8):
    model = M.bn_mlp(width, 2, runs=runs, seed=seed, dtype=torch.float64)
    for norm in model.norms:
        if hasattr(norm, "eps"):
            norm.eps = 1e-14     # batch norm's epsilon breaks scale invariance at this level only
    return model


# ----------------------------------------------------------------------------- mechanism 2: identities
def test_whitened_inputs_have_identity_second_moment():
    x = M.whitened_inputs(50, 7, seed=3)
    torch.testing.assert_close(x.T @ x / 50, torch.eye(7, dtype=torch.float64), rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="n must be at least dim"):
        M.whitened_inputs(3, 7)


def test_kfac_gn_norm_equals_k_times_jacobian_norm_for_linear_networks():
    """Theorem 1: sum_l vec(W_l)^T (A ⊗ S) vec(W_l) = K ||J_x||_F^2 for whitened inputs, K = 3 matrices."""
    out = M.linear_identity((6, 5, 4, 3), n=64, seed=0)
    assert out["K"] == 3
    assert out["kfac_norm"] == pytest.approx(out["k_jacobian"], rel=1e-8)
    assert out["gn_norm"] == pytest.approx(out["k2_jacobian"], rel=1e-8)   # exact GN norm: K^2 ||J_x||^2


def test_kfac_gn_norm_is_trace_form_on_explicit_kronecker_product():
    model = DeepLinear([4, 3, 2], seed=1, dtype=torch.float64)
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    factors = M.estimate_factors(model, None, x, None, "mse", curvature="ggn")
    total = 0.0
    for i, lin in enumerate(model.linears):
        A, S = factors[f"linears.{i}"]
        W = lin.weight[0].detach()
        v = W.T.reshape(-1)                                  # vec stacks columns
        total += float(v @ torch.kron(A[0], S[0]) @ v)
    assert float(M.kfac_gn_norm(model, x)[0]) == pytest.approx(total, rel=1e-12)


def test_whitening_matters_for_the_identity():
    """With correlated inputs the two sides differ: the identity is not a tautology of the code."""
    model = DeepLinear([5, 4, 3], seed=0, dtype=torch.float64)
    x = M.whitened_inputs(40, 5) @ torch.diag(torch.tensor([3.0, 1, 1, 1, 0.2], dtype=torch.float64))
    J = (model.linears[1].weight[0] @ model.linears[0].weight[0]).detach()
    assert float(M.kfac_gn_norm(model, x)[0]) != pytest.approx(2 * float(J.square().sum()), rel=1e-3)


def test_relu_network_without_biases_is_its_jacobian_times_input():
    """Lemma 1: f(x) = J_x x, and J_theta theta = K f(x) (so theta^T G theta = K^2 E||f||^2)."""
    net = M.relu_net([5, 7, 6, 3], runs=2, seed=[0, 1], dtype=torch.float64)
    assert all(lin.bias is None for lin in net.linears)
    assert [n for n, _ in net.named_parameters()] == ["linears.0.weight", "linears.1.weight", "linears.2.weight"]
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    J = M.input_jacobian(net, x)
    assert J.shape == (2, 16, 3, 5)
    f = net(x).detach()
    torch.testing.assert_close(torch.einsum("rbkd,bd->rbk", J, x), f, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(M.gn_norm(net, x), 9 * f.square().sum(-1).mean(-1), rtol=1e-12, atol=0)


def test_relu_network_with_biases_breaks_the_lemma():
    net = M.MLP([5, 7, 3], norm="none", activation="relu", seed=0, dtype=torch.float64)
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    J = M.input_jacobian(net, x)
    assert not torch.allclose(torch.einsum("rbkd,bd->rbk", J, x), net(x).detach(), atol=1e-6)


def test_jacobian_norm_matches_autograd_jacobian():
    net = M.relu_net([4, 6, 3], seed=5, dtype=torch.float64)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = np.mean([torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0))[0, 0], x[b])
                        .square().sum().item() for b in range(3)])
    assert float(M.jacobian_norm(net, x)[0]) == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- mechanism 1: norm grafting
def test_decay_schemes():
    bn, fc = M.decay_schemes(M.SCHEMES, 0.5)
    assert bn.tolist() == [0.0, 0.5, 0.0, 0.5, 0.0, 0.0]
    assert fc.tolist() == [0.0, 0.0, 0.5, 0.5, 0.0, 0.5]
    with pytest.raises(ValueError, match="scheme"):
        M.decay_schemes(["wd-conv"], 0.1)
    with pytest.raises(ValueError, match="weight_decay"):
        M.decay_schemes(["none"], -1.0)


def test_norm_grafting_keeps_the_function_and_copies_the_norms():
    model = _bn_net(runs=3, seed=[0, 1, 2])
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():                    # give the runs very different norms
        for lin in model.linears[:2]:
            lin.weight[1] *= 7.0
            lin.weight[2] *= 0.2
    before = model(x).detach()
    others = {n: p.detach().clone() for n, p in model.named_parameters() if not model.scale_invariant[n]}
    M.graft_norms_(model, receivers=[1, 2], donors=[0, 0])
    torch.testing.assert_close(model(x).detach(), before, rtol=1e-10, atol=1e-10)
    for name, p in model.named_parameters():
        norms = p.detach().flatten(1).norm(dim=1)
        if model.scale_invariant[name]:
            torch.testing.assert_close(norms[1:], norms[0].expand(2), rtol=1e-14, atol=0)
        else:
            torch.testing.assert_close(p.detach(), others[name], rtol=0, atol=0)
    with pytest.raises(ValueError, match="pair up"):
        M.graft_norms_(model, [1], [0, 2])


def test_norm_grafting_at_every_step_of_training():
    """In the experiment the grafted runs carry the donor's norms after every step, with no decay of their own."""
    res = E.effective_lr_experiment("sgd", steps=12, width=16, eval_every=6, record_every=1)
    rec, s = res.record, res.schemes
    donor, graft, none = s.index("wd-all"), s.index("graft"), s.index("none")
    for layer in res.layers:
        norms = rec.param_norm[layer]
        np.testing.assert_allclose(norms[1:, graft], norms[1:, donor], rtol=1e-5)
        assert norms[-1, donor] < norms[-1, none]              # the decay did shrink the donor
    # effective learning rate alpha / ||w||^2 is what grafting transfers
    np.testing.assert_allclose(rec.effective_lr[res.layers[0]][1:, graft], rec.effective_lr[res.layers[0]][1:, donor],
                               rtol=1e-4)
    assert rec.test_accuracy.shape == (3, len(s))


def test_effective_lr_experiment_validates():
    with pytest.raises(ValueError, match="optimizer"):
        E.effective_lr_experiment("kfac-f", steps=2)
    with pytest.raises(ValueError, match="graft_from"):
        E.effective_lr_experiment("sgd", steps=2, schemes=("none", "graft"))


def test_regularized_chain_l2_equals_decay_for_plain_gradient_descent():
    """Without a preconditioner (C = I) L2 and decoupled decay are the same step; with Adam they differ."""
    from lecture_lib.optim import identity, scale_by_adam

    params = {"w": torch.randn(2, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)}
    grads = {"w": torch.randn(2, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)}
    l2, wd = torch.tensor([0.3, 0.0]), torch.tensor([0.0, 0.3])
    for pre, same in ((identity(), True), (scale_by_adam(), False)):
        t = M.regularized(pre, 0.1, l2=l2, wd=wd)
        u, _ = t.update(grads, t.init(params), params)
        both = {"w": params["w"][[0, 0]]}, {"w": grads["w"][[0, 0]]}
        u2, _ = t.update(both[1], t.init(both[0]), both[0])
        assert torch.allclose(u2["w"][0], u2["w"][1]) is same


# ----------------------------------------------------------------------------- mechanism 3: effective damping
@pytest.mark.parametrize("layer", ["linears.0", "linears.1"])
def test_undamped_kfac_direction_update_is_scale_invariant(layer):
    model = _bn_net()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(256, 64, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (256,), generator=g)
    u1 = M.direction_update(model, x, y, layer, damping=0.0, scale=1.0)
    u3 = M.direction_update(model, x, y, layer, damping=0.0, scale=3.0)
    assert float((u1 - u3).norm() / u1.norm()) < 1e-8


@pytest.mark.parametrize("curvature,loss", [("ggn", "cross_entropy"), ("ggn", "mse"), ("empirical", "cross_entropy")])
def test_damped_kfac_direction_update_sees_damping_times_squared_norm(curvature, loss):
    """At 3w with damping γ the step on ŵ equals the step at w with damping 9γ, not γ (eq. 14)."""
    model = _bn_net(seed=3)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(256, 64, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (256,), generator=g)
    if loss == "mse":
        y = torch.nn.functional.one_hot(y, 10).to(torch.float64)
    gamma = 1e-2
    at_3w = M.direction_update(model, x, y, "linears.0", gamma, scale=3.0, curvature=curvature, loss=loss)
    at_w_9 = M.direction_update(model, x, y, "linears.0", 9 * gamma, scale=1.0, curvature=curvature, loss=loss)
    at_w_1 = M.direction_update(model, x, y, "linears.0", gamma, scale=1.0, curvature=curvature, loss=loss)
    assert float((at_3w - at_w_9).norm() / at_w_9.norm()) < 1e-8
    assert float((at_3w - at_w_1).norm() / at_w_1.norm()) > 0.05
    assert float(at_3w.norm()) < float(at_w_1.norm())     # more damping, shorter step on the direction


def test_direction_update_rejects_a_layer_that_is_not_scale_invariant():
    model = _bn_net()
    x = torch.randn(16, 64, dtype=torch.float64)
    with pytest.raises(ValueError, match="scale-invariant"):
        M.direction_update(model, x, torch.zeros(16, dtype=torch.long), "linears.2", 1e-3)


def test_damping_experiment_records_the_mechanism():
    res = E.damping_experiment("kfac-f", steps=20, width=16, record_every=5, eval_every=10, probe_size=64)
    K, R, L = res.relative_damping.shape
    assert (K, R, L) == (4, 3, 2)
    assert res.cosine.shape == (K, R, L) and np.all(np.abs(res.cosine) <= 1 + 1e-6)
    assert np.all(res.relative_damping > 0) and np.all(res.fisher_trace > 0) and np.all(res.gn_trace > 0)
    # the Fisher's output Hessian diag(p) - pp^T is below the identity: tr F <= tr G
    assert np.all(res.fisher_trace <= res.gn_trace * (1 + 1e-6))


def test_jacobian_experiment_rows():
    res = E.jacobian_experiment(steps=8, width=8, depth=1, seeds=(0,), weight_decays=(0.0, 0.1))
    assert list(res.optimizer) == ["sgd", "sgd", "kfac-g", "kfac-g"]
    assert res.jacobian_norm.shape == (4,) and np.all(res.jacobian_norm > 0) and np.all(res.kfac_norm > 0)
    assert np.isfinite(res.ratio("sgd", 0.1))


# ----------------------------------------------------------------------------- the headline table
def test_saved_table_is_complete_and_made_by_the_current_config():
    table = E.load_table()
    assert table["config"] == E.TableConfig().to_dict()
    assert table["version"]["lecture_lib"] == E.__version__
    for name in M.OPTIMIZERS:
        for reg in M.REGULARIZERS:
            acc = table["accuracy"][name][reg]
            assert len(acc) == len(table["config"]["seeds"])
            assert table["mean"][name][reg] == pytest.approx(np.mean(acc), abs=1e-3)
            assert table["std"][name][reg] == pytest.approx(np.std(acc), abs=1e-3)
            assert 50.0 < table["mean"][name][reg] <= 100.0
    assert table["reduced"]["config"] == E.reduced_config().to_dict()


def test_saved_reduced_table_is_reproduced(one_thread):
    """The code regenerates the saved reduced table: same accuracies, same training losses (float32, CPU)."""
    saved = E.load_table()["reduced"]
    again = E.headline_table(E.TableConfig.from_dict(saved["config"]))
    assert again["accuracy"] == saved["accuracy"]
    for name in saved["train_loss"]:
        for reg in M.REGULARIZERS:
            np.testing.assert_allclose(again["train_loss"][name][reg], saved["train_loss"][name][reg], rtol=1e-4)


def test_table_config_round_trip_and_validation_split():
    cfg = E.TableConfig()
    assert E.TableConfig.from_dict(cfg.to_dict()) == cfg
    data = E.digits(test_fraction=0.5, seed=0)
    val = E.validation_split(data, 0.25, seed=0)
    assert val.n_train + val.n_test == data.n_train
    assert val.n_test == round(0.25 * data.n_train)
    with pytest.raises(ValueError, match="fraction"):
        E.validation_split(data, 1.5)


def test_format_table_lists_every_optimizer():
    text = E.format_table(E.load_table())
    for name in M.OPTIMIZERS:
        assert M.LABELS[name] in text
