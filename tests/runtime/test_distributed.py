"""torchrun on the CPU (gloo): train and compare split over two processes, and a failing rank ends the job."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from catdog_cli.data.dataset import Split, shard
from catdog_cli.errors import CatdogError
from catdog_cli.inference.evaluate import evaluate_checkpoint
from catdog_cli.models import checkpoints
from catdog_cli.runtime import distributed

TINY = ["--weights", "none", "--image-size", "32", "--batch-size", "4", "--device", "cpu", "--workers", "1"]


def torchrun(
    args: list[str], cwd: Path, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    repo = str(Path(__file__).parents[2])  # this checkout's catdog_cli, not the installed one
    path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, **(env or {})}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def colors(image_folder):
    return image_folder(train=6, val=3)


def test_shards_are_disjoint_cover_everything_and_train_shards_are_equal():
    split = Split([Path(f"{i}.png") for i in range(11)], [i % 2 for i in range(11)])
    val = [shard(split, r, 3, seed=0, equal=False) for r in range(3)]
    assert sorted(p for s in val for p in s.paths) == sorted(split.paths)  # every val image once
    train = [shard(split, r, 3, seed=0, equal=True) for r in range(3)]
    assert {len(s) for s in train} == {3} and len({p for s in train for p in s.paths}) == 9


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf"])
def test_a_bad_rank_timeout_is_one_line_before_joining(monkeypatch, value):
    monkeypatch.setenv("CATDOG_DIST_TIMEOUT_MIN", value)
    with pytest.raises(CatdogError, match="CATDOG_DIST_TIMEOUT_MIN"):
        distributed._timeout_minutes()


def test_the_rank_timeout_defaults_to_30_minutes(monkeypatch):
    monkeypatch.delenv("CATDOG_DIST_TIMEOUT_MIN", raising=False)
    assert distributed._timeout_minutes() == 30


# freeze-unfreeze: DDP must be set up again when the backbone joins, or the ranks' backbones drift apart
RECIPES = {
    "finetune": {"strategy": "finetune"},
    "freeze-unfreeze": {"strategy": "freeze-unfreeze", "freeze_epochs": 1, "ema": True},
}


def test_train_under_torchrun_one_checkpoint_same_weights_honest_accuracy(colors, tmp_path):
    """Each recipe trained in turn by one torchrun job (starting a job costs more than training there)."""
    script = tmp_path / "train_ddp.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, os, torch
        from catdog_cli import TrainConfig
        from catdog_cli.training import finish
        from catdog_cli.training import loop as engine
        captured = {{}}
        real = engine.train_loop
        def spy(run, *args, **kwargs):
            captured["run"] = run
            return real(run, *args, **kwargs)
        engine.train_loop = spy
        real_summarize = finish.summarize
        def last_weights(run, *args, **kwargs):  # before the best weights are loaded back
            captured["last"] = {{k: v.clone() for k, v in run.model.state_dict().items()}}
            return real_summarize(run, *args, **kwargs)
        finish.summarize = last_weights
        rank = os.environ["RANK"]
        for name, recipe in {RECIPES!r}.items():
            folder = {str(tmp_path)!r} + "/" + name
            config = TrainConfig({str(colors)!r}, backbone="resnet18", **recipe, epochs=2, batch_size=4,
                                 image_size=32, weights="none", device="cpu", workers=1)
            result = engine.fit(config, folder + "/run")
            torch.save(captured["run"].model.state_dict(), folder + f"/rank{{rank}}.pt")
            torch.save(captured["last"], folder + f"/last{{rank}}.pt")
            if rank == "0":
                print("RESULT " + json.dumps({{"recipe": name, **result}}))
    """)
    )
    done = torchrun([str(script)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert [r["recipe"] for r in results] == list(RECIPES)  # rank 0 alone reports, once per run
    for result in results:
        folder = tmp_path / result["recipe"]
        run = folder / "run"
        assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt", "last.pt"], result["recipe"]
        for name in ("rank", "last"):  # the best weights, and the last epoch's
            states = [torch.load(folder / f"{name}{r}.pt", weights_only=True) for r in (0, 1)]
            assert states[0].keys() == states[1].keys()
            for key in states[0]:
                assert torch.equal(states[0][key], states[1][key]), (result["recipe"], key)
        # the val accuracy rank 0 reports is over the whole val set: a single process agrees
        single = evaluate_checkpoint(run / "best.pt", str(colors), "val", device="cpu", workers=1)
        assert result["evaluation"]["num_images"] == single["num_images"] == 6
        assert result["evaluation"]["accuracy"] == pytest.approx(single["accuracy"])
        assert result["best_val_acc"] == pytest.approx(single["accuracy"])
        # the unknown-image detector: every rank's shard gathered, fitted once on all of them
        assert checkpoints.load(run / "best.pt")["ood"]["fitted_on"] == {"train": 12, "val": 6}
    assert not list(tmp_path.glob("runs*"))  # no second folder from another rank


def test_compare_under_torchrun_runs_each_cell_once(colors, tmp_path):
    out = tmp_path / "cmp"
    done = torchrun(
        [
            "-m",
            "catdog_cli",
            "compare",
            "--data",
            str(colors),
            "--backbones",
            "resnet18,squeezenet1_1",
            "--strategies",
            "freeze,finetune",
            "--epochs",
            "1",
            *TINY,
            "--out",
            str(out),
            "--json",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # rank 0 alone prints
    cells = [(r["backbone"], r["strategy"]) for r in result["rows"]]
    assert len(cells) == 4 and len(set(cells)) == 4 and result["world_size"] == 2
    assert all(r["status"] == "ok" for r in result["rows"])
    assert len(list(out.glob("cells/*/cell.json"))) == 4
    assert json.loads((out / "compare.json").read_text())["rows"] == result["rows"]


def test_a_failing_rank_ends_the_job_nonzero_in_bounded_time(colors, tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(
        textwrap.dedent(f"""
        import os
        from catdog_cli import TrainConfig, fit
        if os.environ["RANK"] == "1":
            raise RuntimeError("rank 1 breaks")
        config = TrainConfig({str(colors)!r}, backbone="resnet18", epochs=50, batch_size=4, image_size=32,
                                    weights="none", device="cpu", workers=1)
        fit(config, {str(tmp_path / "run")!r})
    """)
    )
    start = time.monotonic()
    done = torchrun([str(script)], tmp_path, timeout=180)
    assert done.returncode != 0
    assert "rank 1 breaks" in done.stderr
    assert time.monotonic() - start < 180


def test_a_rank_without_val_images_ends_every_rank_with_its_error_in_bounded_time(image_folder, tmp_path):
    """One image in val: rank 1's shard of it is empty. Every rank raises that one-line error at once, rather
    than rank 0 waiting for rank 1 in its next collective (30 minutes by default; 6 s here, so a wait fails)."""
    data = image_folder(train=6, val=0)
    val = data / "val" / "cat"
    val.mkdir(parents=True)
    shutil.copy(next((data / "train" / "cat").iterdir()), val / "only.png")
    script = tmp_path / "no_val.py"
    script.write_text(
        textwrap.dedent(f"""
        import os
        from catdog_cli import TrainConfig, fit
        from catdog_cli.errors import CatdogError
        config = TrainConfig({str(data)!r}, backbone="resnet18", epochs=1, batch_size=4, image_size=32,
                             weights="none", device="cpu", workers=1)
        try:
            fit(config, {str(tmp_path / "run")!r})
        except CatdogError as exc:
            with open({str(tmp_path)!r} + f"/rank{{os.environ['RANK']}}.txt", "w") as out:
                out.write(f"rank {{os.environ['RANK']}} error: {{exc}}")
    """)
    )
    env_timeout = {"CATDOG_DIST_TIMEOUT_MIN": "0.1"}
    done = torchrun([str(script)], tmp_path, timeout=180, env=env_timeout)
    # Each rank writes its own file: two ranks printing to one pipe may interleave mid-line.
    lines = sorted(path.read_text() for path in tmp_path.glob("rank*.txt"))
    assert [line.split(" error: ")[0] for line in lines] == ["rank 0", "rank 1"], done.stdout + done.stderr
    assert all("val" in line for line in lines)


def test_compare_ranks_meet_over_a_patient_group_not_the_default_timeout(tmp_path):
    """compare's ranks meet once, after uneven work: rank 1 arrives well after the default group's timeout
    (3 s here; it comes 5 s late), and the gather over the patient group still succeeds (the slow rank is simulated
    by a wait)."""
    script = tmp_path / "late.py"
    script.write_text(
        textwrap.dedent(f"""
        import time
        from pathlib import Path
        from catdog_cli.runtime import distributed
        world = distributed.init()
        group = distributed.patient_group(world)
        if world.rank == 1:
            time.sleep(5)
        gathered = distributed.gather(world.rank, world, group)
        Path({str(tmp_path)!r}, f"rank{{world.rank}}.txt").write_text(str(gathered))
        distributed.shutdown()
    """)
    )
    done = torchrun([str(script)], tmp_path, timeout=180, env={"CATDOG_DIST_TIMEOUT_MIN": "0.05"})
    assert done.returncode == 0, done.stderr
    # Each rank writes its own file: two ranks printing to one pipe may interleave mid-line.
    assert [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)] == ["[0, 1]", "[0, 1]"]
