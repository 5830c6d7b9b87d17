"""The import direction holds on the package, and the check fails on an import against it or a circle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from catdog_cli import layers

PACKAGE = Path(layers.__file__).parent


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    root = tmp_path / "catdog_cli"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_the_package_keeps_the_direction():
    assert layers.violations() == []


def test_every_subpackage_has_a_floor_and_says_its_rule():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(layers.FLOOR) - {"errors"}
    for name in packages:
        assert (PACKAGE / name / "__init__.py").read_text().startswith('"""'), name


def test_an_import_up_the_floors_is_named_with_its_file_and_line(copy: Path):
    world = copy / "core" / "world.py"
    world.write_text(world.read_text() + "\n\ndef later():\n    from catdog_cli.training.loop import fit\n")
    against = [v for v in layers.violations(copy) if not v.startswith("import circle")]
    assert len(against) == 1
    assert against[0].startswith("catdog_cli/core/world.py:") and "core may not import training" in against[0]


def test_a_type_checking_import_between_peers_counts(copy: Path):
    html = copy / "reporting" / "html.py"
    typed = "\nif TYPE_CHECKING:\n    from catdog_cli.models.transfer import TransferModel\n"
    html.write_text(html.read_text() + typed)
    assert any("reporting may not import models" in v for v in layers.violations(copy))


def test_a_circle_inside_a_package_is_found(copy: Path):
    setup = copy / "training" / "setup.py"
    setup.write_text(setup.read_text() + "\nfrom catdog_cli.training import loop\n")
    circles = [v for v in layers.violations(copy) if v.startswith("import circle")]
    assert circles and "catdog_cli.training.loop" in circles[0] and "catdog_cli.training.setup" in circles[0]


def test_the_command_exits_nonzero_on_a_violation(copy: Path):
    config = copy / "core" / "config.py"
    config.write_text(config.read_text() + "\nfrom catdog_cli.models import strategies\n")
    done = subprocess.run([sys.executable, str(copy / "layers.py")], capture_output=True, text=True)
    assert done.returncode == 1 and "core may not import models" in done.stdout
    clean = subprocess.run([sys.executable, "-m", "catdog_cli.layers"], capture_output=True, text=True)
    assert clean.returncode == 0 and clean.stdout == ""
