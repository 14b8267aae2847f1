"""Per-run losses against torch.nn.functional, run by run."""
import pytest
import torch
import torch.nn.functional as F

from lecture_lib import losses

f64 = torch.float64
R, B, C = 3, 11, 5


def test_mse_is_half_squared_error_per_run(gen):
    out = torch.randn(R, B, C, generator=gen, dtype=f64)
    y = torch.randn(B, C, generator=gen, dtype=f64)
    J = losses.mse(out, y)
    assert J.shape == (R,)
    for r in range(R):
        ref = 0.5 * F.mse_loss(out[r], y, reduction="none").sum(-1).mean()
        torch.testing.assert_close(J[r], ref, rtol=1e-14, atol=0)
    # per-run targets (R, B, K) and scalar targets (B,) for one output
    y_runs = torch.randn(R, B, C, generator=gen, dtype=f64)
    torch.testing.assert_close(losses.mse(out, y_runs)[1], 0.5 * (out[1] - y_runs[1]).pow(2).sum(-1).mean())
    out1 = out[..., :1]
    y1 = torch.randn(B, generator=gen, dtype=f64)
    torch.testing.assert_close(losses.mse(out1, y1), 0.5 * (out1.squeeze(-1) - y1).pow(2).mean(-1))


def test_mse_rejects_mismatched_targets(gen):
    with pytest.raises(ValueError, match="do not match"):
        losses.mse(torch.zeros(R, B, C), torch.zeros(B, C + 1))


def test_cross_entropy_matches_torch(gen):
    logits = torch.randn(R, B, C, generator=gen, dtype=f64) * 3
    y = torch.randint(0, C, (B,), generator=gen)
    J = losses.cross_entropy(logits, y)
    assert J.shape == (R,)
    for r in range(R):
        torch.testing.assert_close(J[r], F.cross_entropy(logits[r], y), rtol=1e-14, atol=0)
    y_runs = torch.randint(0, C, (R, B), generator=gen)
    J_runs = losses.cross_entropy(logits, y_runs)
    for r in range(R):
        torch.testing.assert_close(J_runs[r], F.cross_entropy(logits[r], y_runs[r]), rtol=1e-14, atol=0)


def test_logistic_matches_torch(gen):
    logits = torch.randn(R, B, 1, generator=gen, dtype=f64) * 4
    y = torch.randint(0, 2, (B,), generator=gen)
    J = losses.logistic(logits, y)
    assert J.shape == (R,)
    for r in range(R):
        ref = F.binary_cross_entropy_with_logits(logits[r, :, 0], y.to(f64))
        torch.testing.assert_close(J[r], ref, rtol=1e-14, atol=0)
    # logistic loss with logit z equals two-class cross-entropy with logits (0, z)
    two = torch.cat([torch.zeros_like(logits), logits], dim=-1)
    torch.testing.assert_close(J, losses.cross_entropy(two, y), rtol=1e-13, atol=0)


def test_gradients_are_per_run(gen):
    """Summing per-run losses gives each run the gradient of its own loss alone."""
    logits = torch.randn(R, B, C, generator=gen, dtype=f64, requires_grad=True)
    y = torch.randint(0, C, (B,), generator=gen)
    (g,) = torch.autograd.grad(losses.cross_entropy(logits, y).sum(), logits)
    for r in range(R):
        lr = logits[r].detach().clone().requires_grad_(True)
        (gr,) = torch.autograd.grad(F.cross_entropy(lr, y), lr)
        torch.testing.assert_close(g[r], gr, rtol=1e-14, atol=1e-16)


def test_accuracy_argmax_and_sign():
    out = torch.tensor([[[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]]])          # predictions 0, 1, 0
    torch.testing.assert_close(losses.accuracy(out, torch.tensor([0, 1, 1])), torch.tensor([2 / 3]))
    logit = torch.tensor([[[0.5], [-1.0], [2.0], [-0.1]]])                 # predictions 1, 0, 1, 0
    torch.testing.assert_close(losses.accuracy(logit, torch.tensor([1, 0, 0, 0])), torch.tensor([0.75]))


def test_get_by_name():
    assert losses.get("mse") is losses.mse
    assert losses.get("cross_entropy") is losses.cross_entropy
    with pytest.raises(ValueError, match="loss must be one of"):
        losses.get("hinge")


def test_the_losses_never_read_values_off_the_cpu():
    """A loss runs every training step: its checks look at shapes and dtypes only, so on a GPU they never wait
    for the device. The meta device holds no values at all; every loss still runs there."""
    out = torch.empty(R, B, C, device="meta")
    labels = torch.empty(B, dtype=torch.long, device="meta")
    assert losses.mse(out, torch.empty(B, C, device="meta")).shape == (R,)
    assert losses.cross_entropy(out, labels).shape == (R,)
    assert losses.logistic(out[..., :1], torch.empty(B, device="meta")).shape == (R,)
    assert losses.accuracy(out, labels).shape == (R,)


def test_labels_out_of_range_are_rejected_on_the_cpu():
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 4\]"):
        losses.cross_entropy(torch.zeros(R, B, C), torch.full((B,), C))
    with pytest.raises(ValueError, match="do not match"):
        losses.cross_entropy(torch.zeros(R, B, C), torch.zeros(B + 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"logits must have shape \(\*, \*, 1\)"):
        losses.logistic(torch.zeros(R, B, 2), torch.zeros(B))
