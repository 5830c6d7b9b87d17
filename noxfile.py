"""`nox -s tests` is the one test command (README and .ci/run use it): pytest in the environment that set-up
made; `nox -s lint` runs ruff, the format check and the import-direction check (catdog_cli/layers.py)."""

import sys

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """In the Python that runs nox: after the README's set-up, the project's .venv with catdog and its extras. A
    nox virtualenv of its own would download a second multi-GB torch beside the one just installed.

    One pytest-xdist worker per core, at most four (each may hold ~4 GB), a test file per worker: the suite waits on
    subprocesses (torchrun, the CLI) much of the time, so on 2 cores it takes 3 min instead of 5.7."""
    workers = ["-n", "auto", "--maxprocesses", "4", "--dist", "loadfile"]
    session.run(sys.executable, "-m", "pytest", "-q", *workers, *session.posargs, external=True)


@nox.session(venv_backend="none")
def tracking(session: nox.Session) -> None:
    """The tracking tests with real MLflow too (a local store and a real `mlflow server`). Not in the default
    sessions: MLflow is a large install and its server starts slowly (benchmarks/README.md, 2026-12-04)."""
    session.run(sys.executable, "-m", "pip", "install", "-q", "-e", ".[test,mlflow,tensorboard]", external=True)
    session.run(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "tests/tracking",
        "tests/cli/test_runs.py",
        *session.posargs,
        external=True,
    )


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "catdog_cli", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "catdog_cli", "tests", "benchmarks", "noxfile.py")
    session.run("python", "-m", "catdog_cli.layers", env={"PYTHONPATH": "."})  # stdlib only: no install needed
