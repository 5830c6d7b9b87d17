"""`nox -s tests` is the one test command (README and .ci/run use it); `nox -s lint` runs ruff, the format
check and the import-direction check (catdog_cli/layers.py)."""

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

# torch from PyPI resolves to a large CUDA build; on machines with a local pip cache/cap it is served from disk.
TORCH = ["torch>=2.2", "torchvision>=0.17"]


@nox.session
def tests(session: nox.Session) -> None:
    session.install(*TORCH)
    # export: the ONNX tests run in CI (they skip without it); tensorboard: --log tensorboard's tests (light)
    session.install("-e", ".[test,timm,export,tensorboard]")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def tracking(session: nox.Session) -> None:
    """The tracking tests with real MLflow too (a local store and a real `mlflow server`). Not in the default
    sessions: MLflow is a large install and its server starts slowly (benchmarks/README.md, 2026-12-04)."""
    session.install(*TORCH)
    session.install("-e", ".[test,mlflow,tensorboard]")
    session.run("pytest", "-q", "tests/tracking", "tests/cli/test_runs.py", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "catdog_cli", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "catdog_cli", "tests", "benchmarks", "noxfile.py")
    session.run("python", "-m", "catdog_cli.layers", env={"PYTHONPATH": "."})  # stdlib only: no install needed
