r"""Checkers for the notebooks' exercises: a helpful sentence instead of a bare ``assert``.

An exercise in a notebook is three cells (see CONTRIBUTING.md):

1. a markdown prompt;
2. a solution cell (nbgrader markup) defining a *function*, with the answer between
   ``### BEGIN SOLUTION`` and ``### END SOLUTION``; the student version replaces that
   region by ``raise NotImplementedError()``;
3. a check cell: ``check("05.equilibrium_ratio", equilibrium_ratio)``.

:func:`check` runs the student's function on fresh cases against the library's own
answer and either prints a one-line confirmation or raises :class:`ExerciseFailed`,
whose message says what went wrong and what to look at. An unfinished exercise
(``NotImplementedError``) gets its own message, so the student version of a notebook
fails its checks with sentences, not with errors elsewhere.

Every exercise is registered in :data:`EXERCISES` under ``"<notebook>.<name>"``; the
registry is what a TA extends. Science only: torch and numpy.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import equilibrium
from ._validate import Key, accepts
from .optim import chain, graft, scale_by_lr, scale_by_rms, sgd, adam
from .optim import kron_damped_solve, project_to_unit_norm
from .optim.transforms import ScaleByAdamState, scale_by_adam


class ExerciseFailed(AssertionError):
    """A check did not pass; the message says why and what to try."""


@dataclass(frozen=True)
class Exercise:
    key: str          # "<notebook>.<name>", e.g. "01.rmsprop_step"
    title: str        # what the student is asked to do
    checker: Callable[[Callable], str]  # runs the student's function; returns the success message
    hint: str         # shown when the answer is wrong


EXERCISES: dict[str, Exercise] = {}


@accepts(key=Key(EXERCISES, "exercise", new=True))
def exercise(key: str, title: str, hint: str):
    """Register a checker: ``@exercise("05.equilibrium_ratio", "...", hint="...")``."""
    def register(fn):
        EXERCISES[key] = Exercise(key, title, fn, hint)
        return fn
    return register


@accepts(key=Key(EXERCISES, "exercise"))
def check(key: str, answer: Callable) -> None:
    """Check a student's answer to exercise ``key``; print a confirmation or raise :class:`ExerciseFailed`."""
    ex = EXERCISES[key]
    if not callable(answer):
        raise ExerciseFailed(f"[{key}] expected a function, got {type(answer).__name__}: define it in the cell above.")
    try:
        message = ex.checker(answer)
    except _NotDone:
        raise ExerciseFailed(
            f"[{key}] not done yet: {ex.title}. Replace `raise NotImplementedError()` in the cell above "
            "with your code, run that cell, then run this one again.") from None
    except _Wrong as wrong:
        raise ExerciseFailed(f"[{key}] not quite: {wrong}. Hint: {ex.hint}") from None
    print(f"✓ [{key}] {message}")


class _NotDone(Exception):
    pass


class _Wrong(Exception):
    pass


def _call(fn: Callable, *args):
    """Call the student's function, turning its failures into messages."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise _NotDone() from None
    except Exception as e:  # any error in student code becomes a sentence, not a traceback
        raise _Wrong(f"your function raised {type(e).__name__}: {e}") from None


def _as_tensor(value, what: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise _Wrong(f"{what} should be a number or a tensor, got {type(value).__name__}") from None
    if not torch.isfinite(t).all():
        raise _Wrong(f"{what} contains NaN or inf")
    return t


def _close(got, expected: torch.Tensor, what: str, rtol: float = 1e-6, atol: float = 1e-9) -> None:
    got = _as_tensor(got, what)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    if got.shape != expected.shape:
        raise _Wrong(f"{what} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
    if not torch.allclose(got, expected, rtol=rtol, atol=atol):
        err = (got - expected).abs().max().item()
        raise _Wrong(f"{what} is off by up to {err:.3g} (expected e.g. {expected.flatten()[0].item():.6g}, "
                     f"got {got.flatten()[0].item():.6g})")


def _within(got, expected: float, what: str, rel: float) -> None:
    got = _as_tensor(got, what)
    if got.numel() != 1:
        raise _Wrong(f"{what} should be a single number")
    if abs(got.item() - expected) > rel * abs(expected):
        raise _Wrong(f"{what} = {got.item():.4g} is not within {rel:.0%} of the answer")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- 01 adaptive methods

@exercise("01.rmsprop_step", "implement one RMSprop step (w, s) -> (w_new, s_new)",
          hint="s <- beta2 * s + (1 - beta2) * g**2 first, then w <- w - lr * g / sqrt(s + eps) with the NEW s; "
               "all operations are elementwise")
def _rmsprop_step(fn):
    g_ = _gen(1)
    for lr, beta2, eps in [(0.1, 0.9, 1e-8), (0.01, 0.99, 1e-3)]:
        w, g, s = (torch.randn(5, generator=g_, dtype=torch.float64) for _ in range(3))
        s = s.abs()
        out = _call(fn, w.clone(), g.clone(), s.clone(), lr, beta2, eps)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise _Wrong("return the pair (w_new, s_new)")
        rms = chain(scale_by_rms(beta2, eps, eps_in_sqrt=True), scale_by_lr(lr))
        state = rms.init({"w": w[None]})
        state = (state[0]._replace(s={"w": s[None]}), state[1])
        u, new_state = rms.update({"w": g[None]}, state, {"w": w[None]})
        _close(out[1], new_state[0].s["w"][0], "s_new")
        _close(out[0], (w[None] + u["w"])[0], "w_new")
    return "your RMSprop step matches lecture_lib.optim.scale_by_rms (eps inside the square root)."


@exercise("01.graft_step", "graft: the magnitude of step_m with the direction of step_d",
          hint="rescale step_d by ||step_m|| / ||step_d|| (one norm over the whole tensor)")
def _graft_step(fn):
    g_ = _gen(2)
    params = {"w": torch.randn(1, 4, 3, generator=g_, dtype=torch.float64)}
    grad = {"w": torch.randn(1, 4, 3, generator=g_, dtype=torch.float64)}
    m_t, d_t = sgd(lr=1.0), adam(lr=1.0)
    step_m = m_t.update(grad, m_t.init(params), params)[0]["w"]
    step_d = d_t.update(grad, d_t.init(params), params)[0]["w"]
    g_t = graft(sgd(lr=1.0), adam(lr=1.0))
    expected = g_t.update(grad, g_t.init(params), params)[0]["w"]
    _close(_call(fn, step_m[0].clone(), step_d[0].clone()), expected[0], "the grafted step", rtol=1e-6)
    return "norm of M's step, direction of D's step: your graft matches lecture_lib.optim.graft."


# ---------------------------------------------------------------- 02 ICS eigenvalues

@exercise("02.outlier_eigenvalue", "the outlier eigenvalue of A = E[a a^T] for a ~ N(m, I)",
          hint="A = I + m m^T; m is an eigenvector of it")
def _outlier(fn):
    for seed, scale in [(3, 3.0), (4, 0.5), (5, 10.0)]:
        m = torch.randn(7, generator=_gen(seed), dtype=torch.float64)
        m = m / m.norm() * scale
        expected = torch.linalg.eigvalsh(torch.eye(7, dtype=torch.float64) + torch.outer(m, m))[-1]
        _close(_call(fn, m.clone()), expected, f"your eigenvalue for ||m|| = {scale:g}")
    return "nu = ||m||^2 + 1, the top eigenvalue of I + m m^T."


@exercise("02.reparameterize", "reparameterize a layer for centered, whitened inputs: (W, b) -> (W~, b~)",
          hint="with x = Sigma^{1/2} z + m, W x + b = (W Sigma^{1/2}) z + (b + W m)")
def _reparam(fn):
    g_ = _gen(6)
    W, b, m = torch.randn(3, 4, generator=g_, dtype=torch.float64), torch.randn(3, generator=g_, dtype=torch.float64), \
        torch.randn(4, generator=g_, dtype=torch.float64)
    L = torch.randn(4, 4, generator=g_, dtype=torch.float64)
    sigma = L @ L.T + 0.5 * torch.eye(4, dtype=torch.float64)
    out = _call(fn, W.clone(), b.clone(), m.clone(), sigma.clone())
    if not (isinstance(out, tuple) and len(out) == 2):
        raise _Wrong("return the pair (W_tilde, b_tilde)")
    evals, evecs = torch.linalg.eigh(sigma)
    root = evecs @ torch.diag(evals.sqrt()) @ evecs.T
    z = torch.randn(10, 4, generator=g_, dtype=torch.float64)
    x = z @ root + m  # root is symmetric
    W_t, b_t = _as_tensor(out[0], "W_tilde"), _as_tensor(out[1], "b_tilde")
    if W_t.shape != W.shape or b_t.shape != b.shape:
        raise _Wrong(f"W_tilde should be {tuple(W.shape)} and b_tilde {tuple(b.shape)}")
    _close(z @ W_t.T + b_t, x @ W.T + b, "the reparameterized layer's output on whitened inputs")
    return "same function, centered and whitened inputs: the outlier is gone."


# ---------------------------------------------------------------- 03 Kronecker spectra

@exercise("03.kron_eigenvalues", "the eigenvalues of A ⊗ B from those of A and B (sorted ascending)",
          hint="every product lambda_i(A) * nu_j(B); use torch.linalg.eigvalsh on A and B, never on the big matrix")
def _kron_eigs(fn):
    g_ = _gen(7)
    for n, m in [(3, 4), (5, 2)]:
        A, B = (torch.randn(k, k, generator=g_, dtype=torch.float64) for k in (n, m))
        A, B = A @ A.T + 0.1 * torch.eye(n, dtype=torch.float64), B @ B.T + 0.1 * torch.eye(m, dtype=torch.float64)
        got = _as_tensor(_call(fn, A.clone(), B.clone()), "your eigenvalues").flatten().sort().values
        _close(got, torch.linalg.eigvalsh(torch.kron(A, B)), f"the spectrum for sizes ({n}, {m})", rtol=1e-8)
    return "eig(A ⊗ B) = {lambda_i nu_j}, at the cost of two small eigendecompositions."


@exercise("03.kron_damped_solve", "solve (A ⊗ S + gamma I) vec(X) = vec(G) through the eigenbases of A and S",
          hint="rotate G into the eigenbases (Q_S^T G Q_A), divide elementwise by d_S d_A^T + gamma, rotate back")
def _kron_solve(fn):
    g_ = _gen(8)
    A, S = torch.randn(4, 4, generator=g_, dtype=torch.float64), torch.randn(3, 3, generator=g_, dtype=torch.float64)
    A, S = A @ A.T, S @ S.T
    G = torch.randn(3, 4, generator=g_, dtype=torch.float64)
    dA, QA = torch.linalg.eigh(A)
    dS, QS = torch.linalg.eigh(S)
    expected = kron_damped_solve(QA, dA, QS, dS, G, 0.1)
    _close(_call(fn, A.clone(), S.clone(), G.clone(), 0.1), expected, "X", rtol=1e-8)
    return "your eigenbasis solve equals the explicit (A ⊗ S + gamma I)^{-1} without ever forming it."


# ---------------------------------------------------------------- 04 implicit LR decay

@exercise("04.next_sq_norm", "predict ||w_{k+1}||^2 after one SGD step on a scale-invariant weight",
          hint="the gradient is orthogonal to w, so Pythagoras applies: ||w - alpha g||^2 = ||w||^2 + alpha^2 ||g||^2")
def _next_sq(fn):
    for sq, lr, gn in [(1.0, 0.1, 2.0), (4.0, 1.0, 0.5), (0.3, 0.01, 10.0)]:
        _close(_call(fn, sq, lr, gn), torch.tensor(sq + lr ** 2 * gn ** 2), f"||w'||^2 for (||w||^2, alpha, ||g||) = ({sq}, {lr}, {gn})")
    return "Pythagorean growth: without weight decay the norm can only grow."


@exercise("04.effective_lr", "the effective learning rate of the direction w/||w||",
          hint="the gradient scales as 1/||w|| and the direction moves by that step divided by ||w||")
def _eff_lr(fn):
    for lr, norm in [(0.1, 2.0), (1.0, 0.5), (0.01, 10.0)]:
        _close(_call(fn, lr, norm), torch.tensor(lr / norm ** 2), f"the effective rate for alpha={lr}, ||w||={norm}")
    return "alpha / ||w||^2: a growing norm quietly decays the learning rate."


# ---------------------------------------------------------------- 05 weight-decay equilibrium

@exercise("05.equilibrium_ratio", "predict ||w|| / ||g|| at equilibrium for SGD with weight decay and momentum",
          hint="balance the decay's shrink 2 alpha lambda ||w||^2 against the gradient's growth alpha^2 ||g||^2; "
               "momentum multiplies the step by 1/(1 - rho)")
def _eq_ratio(fn):
    for lr, wd, mom in [(0.1, 5e-4, 0.0), (0.4, 5e-4, 0.0), (0.1, 5e-3, 0.0), (0.1, 5e-4, 0.9)]:
        _within(_call(fn, lr, wd, mom), math.sqrt(lr / (2 * wd * (1 - mom))),
                f"your ratio for (alpha, lambda, rho) = ({lr}, {wd}, {mom})", rel=0.10)
    return "sqrt(alpha / (2 lambda (1 - rho))), within 10% (simulated runs land within about 4% of it)."


@exercise("05.relaxation_steps", "how many steps the squared norm takes to relax to equilibrium (1/e time)",
          hint="linearize x_{k+1} = (1 - alpha lambda)^2 x_k + alpha^2 ||g||^2 with ||g||^2 proportional to 1/x")
def _relax(fn):
    for lr, wd in [(0.1, 5e-4), (0.4, 5e-3)]:
        _within(_call(fn, lr, wd), 1 / (4 * lr * wd), f"your time for (alpha, lambda) = ({lr}, {wd})", rel=0.10)
    return "about 1 / (4 alpha lambda) steps: the deviation shrinks by (1 - 4 alpha lambda) per step."


@exercise("05.sq_norm_map", "iterate the mean-field map of x = ||w||^2 for SGD with weight decay (no momentum)",
          hint="one step shrinks x by the decay, (1 - alpha lambda)^2 x, and adds the orthogonal gradient's "
               "alpha^2 ||g||^2 with ||g||^2 = G^2 / x (Pythagoras); return all steps + 1 values, starting with x0")
def _sq_norm_map(fn):
    for x0, lr, wd, G, steps in [(1.0, 0.1, 5e-3, 0.7, 400), (20.0, 0.4, 1e-3, 1.3, 50), (0.01, 0.1, 0.0, 1.0, 30)]:
        got = _as_tensor(_call(fn, x0, lr, wd, G, steps), "your trajectory").flatten()
        expected = torch.as_tensor(equilibrium.sq_norm_map(x0, lr, wd, G, steps))
        if got.numel() == steps:
            raise _Wrong(f"you returned {steps} values for {steps} steps: include x0 as the first value")
        _close(got, expected, f"the trajectory for (x0, alpha, lambda, G) = ({x0}, {lr}, {wd}, {G})", rtol=1e-9)
    x_star = float(equilibrium.equilibrium_sq_norm(0.1, 5e-3, 0.7))
    return (f"your map settles at x* = G sqrt(alpha / (2 lambda)) (= {x_star:.4g} for the first case) within "
            "a few 1/(4 alpha lambda) steps, and without decay it grows like sqrt(x0^2 + 2 alpha^2 G^2 k).")


# ---------------------------------------------------------------- 06 three mechanisms

@exercise("06.kfac_jacobian_norm", "compute sum_l vec(W_l)^T (A_{l-1} ⊗ S_l) vec(W_l) for a deep linear network",
          hint="with whitened inputs A_{l-1} = P P^T where P = W_{l-1}...W_1, and S_l = Q^T Q with Q = W_K...W_{l+1}; "
               "vec(W)^T (A ⊗ S) vec(W) = trace(S W A W^T)")
def _jac_norm(fn):
    g_ = _gen(9)
    sizes = [4, 5, 3, 2]
    Ws = [torch.randn(b, a, generator=g_, dtype=torch.float64) / math.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    J = Ws[0]
    for W in Ws[1:]:
        J = W @ J
    expected = len(Ws) * J.pow(2).sum()
    _close(_call(fn, [W.clone() for W in Ws]), expected, "the K-FAC norm", rtol=1e-8)
    return "it equals K ||J_x||_F^2: K-FAC-G weight decay is Jacobian regularization."


# ---------------------------------------------------------------- added for issue 15: one more per notebook 01-03

@exercise("01.adam_step", "implement one Adam step with bias correction (w, m, s, t) -> (w_new, m_new, s_new)",
          hint="update m <- beta1 m + (1 - beta1) g and s <- beta2 s + (1 - beta2) g**2 first; then divide the NEW m by "
               "(1 - beta1**t) and the NEW s by (1 - beta2**t), with t the index of this step (1 for the first); "
               "eps is added after the square root: w - lr * m_hat / (sqrt(s_hat) + eps)")
def _adam_step(fn):
    g_ = _gen(11)
    for t, lr, beta1, beta2, eps in [(1, 0.1, 0.9, 0.999, 1e-8), (3, 0.01, 0.8, 0.99, 1e-3), (50, 0.05, 0.9, 0.999, 1e-8)]:
        w, g, m, s = (torch.randn(6, generator=g_, dtype=torch.float64) for _ in range(4))
        m, s = (torch.zeros_like(m), torch.zeros_like(s)) if t == 1 else (m * 0.1, s.abs() * 0.1)
        out = _call(fn, w.clone(), g.clone(), m.clone(), s.clone(), t, lr, beta1, beta2, eps)
        if not (isinstance(out, tuple) and len(out) == 3):
            raise _Wrong("return the triple (w_new, m_new, s_new)")
        adam_ = chain(scale_by_adam(beta1, beta2, eps), scale_by_lr(lr))
        state = adam_.init({"w": w[None]})
        state = (ScaleByAdamState(t - 1, {"w": m[None]}, {"w": s[None]}), state[1])
        u, new_state = adam_.update({"w": g[None]}, state, {"w": w[None]})
        _close(out[1], new_state[0].m["w"][0], f"m_new at step t = {t}")
        _close(out[2], new_state[0].s["w"][0], f"s_new at step t = {t}")
        _close(out[0], (w[None] + u["w"])[0], f"w_new at step t = {t}")
    return ("your Adam step matches lecture_lib.optim.scale_by_adam (torch.optim.Adam), bias correction included: "
            "at t = 1 every coordinate moves by about lr, whatever the size of its gradient.")


@exercise("02.centering_backprop", "backprop through batch centering: (a, s_hat_bar) -> (s_bar, w_bar)",
          hint="s_hat_n = s_n - mean_k s_k, so every s_k also reaches every s_hat_n through the mean: "
               "s_bar = s_hat_bar - s_hat_bar.mean(0); then w_bar = s_bar^T a, which equals s_hat_bar^T (a - a.mean(0))")
def _centering_backprop(fn):
    g_ = _gen(12)
    for B, n_in, n_out, shift in [(8, 3, 2, 0.0), (16, 5, 4, 3.0)]:
        a = torch.randn(B, n_in, generator=g_, dtype=torch.float64) + shift
        s_hat_bar = torch.randn(B, n_out, generator=g_, dtype=torch.float64) + 1.0   # batch sum not zero
        W = torch.randn(n_out, n_in, generator=g_, dtype=torch.float64)
        s = (a @ W.T).requires_grad_(True)
        ((s - s.mean(0, keepdim=True)) * s_hat_bar).sum().backward()     # a loss whose derivative at s_hat is s_hat_bar
        out = _call(fn, a.clone(), s_hat_bar.clone())
        if not (isinstance(out, tuple) and len(out) == 2):
            raise _Wrong("return the pair (s_bar, w_bar)")
        _close(out[0], s.grad, f"s_bar (batch {B}, shift {shift:g})", rtol=1e-10)
        _close(out[1], s.grad.T @ a, f"w_bar (batch {B}, shift {shift:g})", rtol=1e-10)
    return ("through the statistics path the weight gradient is S_hat_bar^T A_tilde: the layer learns as if its "
            "inputs had been centered, whatever the shift.")


@exercise("03.kfac_step", "one K-FAC step for a bias-free linear layer, through the eigenbases of A and S",
          hint="A = a^T a / n (in x in), S = ds^T ds / n (out x out); rotate the gradient into the eigenbases, "
               "Q_S^T grad Q_A, divide by d_S d_A^T + damping, rotate back, and step W - lr * X")
def _kfac_step(fn):
    g_ = _gen(13)
    for n, n_in, n_out, lr, damping in [(32, 4, 3, 0.1, 1e-2), (64, 6, 2, 0.5, 1e-3)]:
        W = torch.randn(n_out, n_in, generator=g_, dtype=torch.float64)
        a = torch.randn(n, n_in, generator=g_, dtype=torch.float64) + 0.5
        ds = torch.randn(n, n_out, generator=g_, dtype=torch.float64)
        grad = torch.randn(n_out, n_in, generator=g_, dtype=torch.float64)
        A, S = a.T @ a / n, ds.T @ ds / n
        # the dense reference: (A ⊗ S + damping I) vec(X) = vec(grad), vec stacking columns
        M = torch.kron(A, S) + damping * torch.eye(n_in * n_out, dtype=torch.float64)
        X = torch.linalg.solve(M, grad.T.reshape(-1)).reshape(n_in, n_out).T
        got = _call(fn, W.clone(), a.clone(), ds.clone(), grad.clone(), lr, damping)
        _close(got, W - lr * X, f"W_new for a {n_out} x {n_in} layer", rtol=1e-8)
    return ("your step equals W - lr (A ⊗ S + damping I)^{-1} vec(grad) solved densely, at the cost of two small "
            "eigendecompositions.")


# ---------------------------------------------------------------- 04 implicit LR decay (continued)

def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


@exercise("04.projected_sgd_step", "one step of projected SGD on the unit sphere: (w, g, lr) -> (w_new, angle)",
          hint="take the SGD step v = w - lr * g, then divide v by its norm; the angle between w and w_new is "
               "atan2(||w_new - (w_new . w) w||, w_new . w) (for g orthogonal to w it is atan(lr ||g|| / ||w||))")
def _projected_sgd_step(fn):
    g_ = _gen(10)
    for dim, lr, radial in [(5, 0.1, 0.0), (8, 1.0, 0.0), (4, 0.3, 0.5)]:
        w = _unit(torch.randn(dim, generator=g_, dtype=torch.float64))
        g = torch.randn(dim, generator=g_, dtype=torch.float64)
        g = g - (g @ w) * w + radial * w                  # tangent to the sphere, plus a radial part in case 3
        out = _call(fn, w.clone(), g.clone(), lr)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise _Wrong("return the pair (w_new, angle)")
        step = chain(sgd(lr=lr), project_to_unit_norm())
        u, _ = step.update({"w": g[None]}, step.init({"w": w[None]}), {"w": w[None]})
        w_new = (w[None] + u["w"])[0]
        along = w_new @ w
        angle = torch.atan2((w_new - along * w).norm(), along)
        case = f"(dim, alpha, radial part of g) = ({dim}, {lr}, {radial})"
        _close(out[0], w_new, f"w_new for {case}", rtol=1e-8)
        _close(out[1], angle, f"the angle for {case}", rtol=1e-6)
        if radial == 0.0:
            _close(angle, torch.atan(lr * g.norm()), "the library's angle against atan(alpha ||g||)", rtol=1e-10)
    return ("back on the sphere after every step, and for g orthogonal to w the direction turns by "
            "atan(alpha ||g||): on the unit sphere the effective learning rate is alpha itself.")


@exercise("06.direction_cosine", "cos(K-FAC step on the direction, gradient) from the eigenvalues of G(w_hat)",
          hint="by eq. 14 the step on w_hat is -alpha (G(w_hat) + gamma ||w||^2 I)^{-1} grad J(w_hat); in the eigenbasis "
               "of G(w_hat) that is the vector g_i / (nu_i + gamma ||w||^2); then cos = <step, g> / (||step|| ||g||), "
               "and the sign of alpha does not matter")
def _direction_cosine(fn):
    from .mechanisms import direction_cosine
    g_ = _gen(10)
    nu = torch.logspace(-4, 0, 6, dtype=torch.float64)
    g = torch.randn(6, generator=g_, dtype=torch.float64)
    for damping, norm in [(1e-3, 1.0), (1e-3, 10.0), (1e-2, 100.0), (0.0, 3.0)]:
        got = _call(fn, nu.clone(), g.clone(), damping, norm)
        _close(got, torch.tensor(direction_cosine(nu, g, damping, norm)), f"the cosine for gamma={damping}, ||w||={norm}",
               rtol=1e-6)
    return "the cosine climbs to 1 as gamma ||w||^2 outgrows the curvature: undecayed K-FAC becomes gradient descent."


@exercise("06.kfac_linear_step", "one damped K-FAC step for a linear layer from a batch of inputs and output derivatives",
          hint="A = a^T a / B and S = ds^T ds / B; the gradient is G = ds^T a / B (shape out x in); solve "
               "(A ⊗ S + gamma I) vec(X) = vec(G) with (A ⊗ S) vec(X) = vec(S X A), e.g. through the eigenbases of A and S "
               "(divide by d_S d_A^T + gamma); the step is -lr X")
def _kfac_linear_step(fn):
    from .optim import eigh_factor
    g_ = _gen(11)
    for B, D, M_, lr, damping in [(32, 5, 3, 0.1, 1e-2), (8, 4, 6, 1.0, 1e-1)]:
        a = torch.randn(B, D, generator=g_, dtype=torch.float64) + 0.5
        ds = torch.randn(B, M_, generator=g_, dtype=torch.float64)
        A, S, G = a.T @ a / B, ds.T @ ds / B, ds.T @ a / B
        expected = -lr * kron_damped_solve(*eigh_factor(A), *eigh_factor(S), G, damping)
        _close(_call(fn, a.clone(), ds.clone(), lr, damping), expected, f"the step for a batch of {B}, layer {M_}x{D}",
               rtol=1e-7)
    return "your step is K-FAC's: two small eigendecompositions instead of inverting a (DM) x (DM) matrix."
