"""The README's quick start, setup.cfg's console scripts and .ci/run agree."""
import configparser
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands():
    """The lines of the first ``bash`` block under README.md's "Quick start" heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"^```bash\n(.*?)^```", section, re.M | re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def console_scripts():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    entries = cfg.get("options.entry_points", "console_scripts", fallback="")
    return dict(tuple(part.strip() for part in line.split("="))
                for line in entries.splitlines() if line.strip())


def test_quick_start_has_exactly_two_commands_install_and_run_then_test():
    run, test = quick_start_commands()
    assert run.startswith('pip install ".[train]" && ')
    assert test == 'pip install ".[test]" && python -m pytest -q'


def test_the_quick_start_main_job_is_a_console_script_of_the_package():
    scripts = console_scripts()
    main_job = quick_start_commands()[0].split("&&")[1].split()[0]
    assert main_job in scripts, f"{main_job!r} is not in setup.cfg's console_scripts"


def test_every_console_script_resolves_to_a_callable_in_the_installed_package():
    # Run outside the checkout: there the top-level verify/ is not tallskinny_np.verify
    # (setup.cfg's package_dir maps it only in the installed package).
    scripts = console_scripts()
    assert set(scripts) >= {"tallskinny-train", "tallskinny-demo", "tallskinny-verify"}
    check = ("import importlib, sys\n"
             "for target in sys.argv[1:]:\n"
             "    module, func = target.split(':')\n"
             "    assert callable(getattr(importlib.import_module(module), func)), target\n")
    with tempfile.TemporaryDirectory() as cwd:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run([sys.executable, "-c", check, *scripts.values()], cwd=cwd,
                              env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_wheel_adds_no_top_level_package_but_tallskinny_np():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    packages = cfg.get("options", "packages").split()
    assert {name.split(".")[0] for name in packages} == {"tallskinny_np"}


def test_ci_runs_the_readme_test_command_in_a_fresh_venv():
    ci = (ROOT / ".ci" / "run").read_text()
    install, pytest_cmd = (part.strip() for part in quick_start_commands()[1].split("&&"))
    assert "python3 -m venv" in ci
    assert install in ci and pytest_cmd in ci
