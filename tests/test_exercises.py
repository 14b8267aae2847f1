"""Exercises: checkers accept the instructor solutions, reject wrong ones with a sentence, and the
student versions carry no solution code and fail their checks with helpful messages only."""
import json
import re
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from lecture_lib import teaching
from lecture_lib.exercises import EXERCISES, ExerciseFailed, check, exercise

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CHECK_CALL = re.compile(r'check\("([\w.]+)",\s*(\w+)\)')


def _cells(path, kind):
    nb = json.loads(path.read_text())
    return [c for c in nb["cells"] if teaching.EXERCISE_TAG in c["metadata"].get("tags", [])
            and c["cell_type"] == "code" and c["metadata"].get("nbgrader", {}).get(kind)]


def _exercises(path):
    """(key, function name, instructor solution source) for each exercise of a notebook."""
    out = []
    for sol, chk in zip(_cells(path, "solution"), _cells(path, "grade")):
        key, fn = CHECK_CALL.search("".join(chk["source"])).groups()
        out.append((key, fn, "".join(sol["source"])))
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_has_two_registered_exercises(path):
    exercises = _exercises(path)
    assert len(exercises) >= 2, f"{path.name} needs at least two exercises"
    for key, _, source in exercises:
        assert key in EXERCISES and key.startswith(path.stem[:2] + "."), key
        assert teaching.BEGIN in source and teaching.END in source


ALL = [(p, *e) for p in NOTEBOOKS for e in _exercises(p)]


@pytest.mark.parametrize("path,key,fn,source", ALL, ids=[a[1] for a in ALL])
def test_instructor_solution_passes_and_a_wrong_answer_fails_with_a_hint(path, key, fn, source, capsys):
    namespace = {}
    exec(compile(source, f"{path.name}:{key}", "exec"), namespace)
    check(key, namespace[fn])
    assert f"✓ [{key}]" in capsys.readouterr().out

    def scaled(x):
        if isinstance(x, tuple):
            return tuple(scaled(v) for v in x)
        return x * 1.5 + (0.1 if not isinstance(x, torch.Tensor) else 0.0)

    with pytest.raises(ExerciseFailed, match=rf"\[{re.escape(key)}\] not quite: .*Hint: "):
        check(key, lambda *args: scaled(namespace[fn](*args)))


def test_clear_solutions_keeps_indentation_and_code_around_the_region():
    src = "def f(x):\n    '''doc'''\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n\ny = 2\n"
    assert teaching.clear_solutions(src) == "def f(x):\n    '''doc'''\n    raise NotImplementedError()\n\ny = 2\n"
    with pytest.raises(ValueError, match="unbalanced"):
        teaching.clear_solutions("### BEGIN SOLUTION\nx = 1\n")


def test_exercise_cells_validate_their_input():
    with pytest.raises(ValueError, match="BEGIN SOLUTION"):
        teaching.exercise_cells("01.rmsprop_step", "prompt", "def f(): pass")
    with pytest.raises(ValueError, match="unknown exercise"):
        check("99.nothing", lambda: None)
    with pytest.raises(ValueError, match="registered twice"):
        exercise("01.rmsprop_step", "the same key again", hint="")


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    written = teaching.make_student_versions(NOTEBOOKS[0].parent, out)
    assert [p.name for p in written] == [p.name for p in NOTEBOOKS]
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_version_has_no_solution_code(path, student_dir):
    student = (student_dir / path.name).read_text()
    assert teaching.BEGIN not in student and teaching.END not in student
    for _, _, source in _exercises(path):
        region = source.split(teaching.BEGIN)[1].split(teaching.END)[0]
        for line in region.strip().splitlines():
            if line.strip():
                assert line.strip() not in student, f"solution line leaked: {line.strip()!r}"
    nb = json.loads(student)
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_version_fails_its_checks_with_helpful_messages(path, student_dir):
    """Run the student version's exercise cells in a real kernel: every check says 'not done yet', nothing else errs."""
    nb = nbformat.read(student_dir / path.name, as_version=4)
    nb.cells = [c for c in nb.cells if teaching.EXERCISE_TAG in c.metadata.get("tags", [])]
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True).execute()
    errors = [(c.metadata.get("nbgrader", {}), o) for c in nb.cells if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert errors, "the student version's checks should fail"
    for meta, err in errors:
        assert meta.get("grade"), f"an error outside a check cell: {err['ename']}: {err['evalue']}"
        assert err["ename"] == "ExerciseFailed" and "not done yet" in err["evalue"], err["evalue"]
    assert len(errors) == len(_exercises(path))


# ---------------------------------------------------------------- the plausible mistakes of the added exercises

def _adam(bias_correction=True, eps_inside=False):
    def adam_step(w, g, m, s, t, lr, beta1, beta2, eps):
        m, s = beta1 * m + (1 - beta1) * g, beta2 * s + (1 - beta2) * g ** 2
        m_hat, s_hat = (m / (1 - beta1 ** t), s / (1 - beta2 ** t)) if bias_correction else (m, s)
        denom = torch.sqrt(s_hat + eps) if eps_inside else torch.sqrt(s_hat) + eps
        return w - lr * m_hat / denom, m, s
    return adam_step


def test_adam_step_checker_rejects_a_step_without_bias_correction(capsys):
    check("01.adam_step", _adam())
    assert "✓ [01.adam_step]" in capsys.readouterr().out
    with pytest.raises(ExerciseFailed, match=r"w_new at step t = 1 .*Hint: .*1 - beta1\*\*t"):
        check("01.adam_step", _adam(bias_correction=False))
    with pytest.raises(ExerciseFailed, match="w_new at step t = 3"):     # eps = 1e-3 there: inside or after sqrt matters
        check("01.adam_step", _adam(eps_inside=True))


def test_centering_backprop_checker_rejects_the_direct_path_only():
    def direct(a, s_hat_bar):                # forgets the derivative through the batch mean
        return s_hat_bar, s_hat_bar.T @ a
    with pytest.raises(ExerciseFailed, match=r"s_bar .*Hint: .*statistics|s_bar .*Hint: .*mean"):
        check("02.centering_backprop", direct)

    def only_weights(a, s_hat_bar):           # right W gradient, wrong derivative at s
        return s_hat_bar, s_hat_bar.T @ (a - a.mean(0))
    with pytest.raises(ExerciseFailed, match="s_bar"):
        check("02.centering_backprop", only_weights)


def test_kfac_step_checker_rejects_factored_or_missing_damping():
    def step(W, a, ds, grad, lr, damping, damp="exact"):
        A, S = a.T @ a / len(a), ds.T @ ds / len(ds)
        dA, QA = torch.linalg.eigh(A)
        dS, QS = torch.linalg.eigh(S)
        if damp == "factored":                # (A + sqrt(γ) I) ⊗ (S + sqrt(γ) I): Martens & Grosse's cheaper variant
            scale = torch.outer(dS + damping ** 0.5, dA + damping ** 0.5)
        else:
            scale = torch.outer(dS, dA) + (damping if damp == "exact" else 0.0)
        return W - lr * QS @ ((QS.T @ grad @ QA) / scale) @ QA.T
    check("03.kfac_step", step)
    for wrong in ("none", "factored"):
        with pytest.raises(ExerciseFailed, match="W_new"):
            check("03.kfac_step", lambda *args: step(*args, damp=wrong))


def test_projected_sgd_step_checker_rejects_the_usual_mistakes():
    """04.projected_sgd_step: forgetting the projection, or using atan(alpha ||g||) when g has a radial part, fails."""
    def solution(w, g, lr):
        v = w - lr * g
        w_new = v / v.norm()
        along = w_new @ w
        return w_new, torch.atan2((w_new - along * w).norm(), along)

    def unprojected(w, g, lr):
        return w - lr * g, solution(w, g, lr)[1]

    def tangent_shortcut(w, g, lr):
        return solution(w, g, lr)[0], torch.atan(lr * g.norm())

    check("04.projected_sgd_step", solution)
    for wrong, what in ((unprojected, "w_new"), (tangent_shortcut, "the angle")):
        with pytest.raises(ExerciseFailed, match=rf"not quite: {what} .*Hint: "):
            check("04.projected_sgd_step", wrong)
