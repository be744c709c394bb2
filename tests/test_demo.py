"""The main job (``tallskinny-demo``) and the README's worked example run as documented."""
import re
from pathlib import Path

import pytest

from tallskinny_np import curvature
from tallskinny_np.training import demo

README = Path(__file__).resolve().parents[1] / "README.md"


def code_blocks(language):
    """The fenced code blocks of README.md in ``language``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), re.M | re.S)


def residuals(output):
    return [float(r) for r in re.findall(r"\|\| / \|\|g\|\| = (\S+)", output)]


@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_demo_runs_and_every_solver_has_a_small_residual(capsys, activation):
    status = demo.main(["--depth", "4", "--width", "3", "--batch", "5", "--repeats", "1",
                        "--activation", activation])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "all checks passed" in out
    found = residuals(out)
    assert len(found) == len(curvature.METHODS), out
    assert all(r < 1e-10 for r in found), out
    assert re.search(r"grad check .* relative error \S+  ok", out), out


def test_demo_reports_a_failed_solve_with_a_nonzero_status(capsys):
    # A batch of 2 leaves H singular in most directions; damping 1e-14 cannot fix that.
    status = demo.main(["--depth", "3", "--width", "2", "--batch", "2", "--repeats", "1",
                        "--damping", "1e-14"])
    out = capsys.readouterr().out
    assert status == 1
    assert "failed: " in out and "layer" in out
    assert "SOME CHECKS FAILED" in out


@pytest.mark.parametrize("argv, message", [
    (["--depth", "1"], "--depth: must be an integer >= 2"),
    (["--width", "0"], "--width: must be an integer >= 1"),
    (["--batch", "100000"], "--batch: must be an integer between 1 and 1797"),
    (["--damping", "-0.1"], "--damping: must be a finite number > 0"),
    (["--damping", "inf"], "--damping: must be a finite number > 0"),
    (["--seed", "x"], "--seed: expected an integer"),
    (["--activation", "swish"], "--activation: invalid choice"),
])
def test_demo_rejects_bad_options_with_a_clear_message(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        demo.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_readme_python_example_runs(capsys):
    blocks = code_blocks("python")
    assert blocks, "README.md has no python code block"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    n_params, loss = lines[0].split()
    assert int(n_params) > 0 and float(loss) > 0
    assert float(lines[1]) < 1e-10                      # the solve's relative residual
    assert lines[2] == "(1618, 3) [ True  True  True]"     # each column certified
    assert sum(eval(lines[3])) == 1618                     # the inertia counts every eigenvalue
    assert lines[4].startswith("True (1618, 1618)")        # curv @ g is the hvp
    assert "singular" in lines[5]
