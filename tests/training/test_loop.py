"""The training run from Python: fit -> checkpoints and run record; what start_run decides; the step loop."""

from __future__ import annotations

import csv
import json
import shutil
import types

import pytest
import torch
from helpers import TINY, Recorder, labeled_folder

from catdog_cli.core.config import TrainConfig
from catdog_cli.core.events import Events
from catdog_cli.core.world import World
from catdog_cli.data.dataset import load_dataset
from catdog_cli.errors import CatdogError
from catdog_cli.inference import evaluate as inference
from catdog_cli.models import checkpoints, warm_start
from catdog_cli.models.backbones import build_model, preset_for
from catdog_cli.training import loop as engine
from catdog_cli.training import schedule, setup
from catdog_cli.training.loop import fit
from catdog_cli.training.resume import resume
from catdog_cli.training.setup import Run, start_run


def started(config: TrainConfig, events: Events | None = None) -> Run:
    """start_run as `fit` calls it: on the config checked once and the dataset loaded from the folder it resolved."""
    checked = config.check()
    dataset = load_dataset(config.data, config.val_split, config.seed, root=checked.data)
    return start_run(config, dataset, events if events is not None else Events())


# helpers.TINY with squeezenet1_1 (0.7 M parameters) for resnet18's 11 M: the last.pt a run writes every epoch is
# 9 MB instead of 134 MB, and no test of the loop is about its backbone (frozen_run's resnet18 checks are)
QUICK = {**TINY, "backbone": "squeezenet1_1"}


def test_fit_writes_checkpoints_metrics_and_run_record(frozen_run):
    out, result = frozen_run["out"], frozen_run["result"]
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt", "metrics.csv", "report.html", "run.json"]
    assert result["report"] == str(out / "report.html")
    assert result["epochs"] == 2 and result["out"] == str(out)
    confusion = result["evaluation"]["confusion"]  # the best weights on the 4 val images: accuracy is k of 4
    assert result["best_val_acc"] * 4 == sum(confusion[i][i] for i in range(2)) and sum(map(sum, confusion)) == 4
    assert (result["config"]["lr"], result["config"]["image_size"]) == (3e-3, 32)  # what ran, not "default"
    assert json.loads((out / "run.json").read_text()) == json.loads(json.dumps(result))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"} <= set(rows[0])
    assert [e["epoch"] for e in frozen_run["events"].epochs] == [1, 2]
    assert result["best_val_acc"] == max(float(r["val_acc"]) for r in rows)


def test_checkpoint_holds_what_is_needed_to_use_the_model(frozen_run):
    best = checkpoints.load(frozen_run["out"] / "best.pt")
    assert best["backbone"] == "resnet18" and best["classes"] == ["cat", "dog"] and best["strategy"] == "freeze"
    assert (best["image_size"], best["resize"]) == (32, 37)
    assert best["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert "optimizer" not in best
    last = checkpoints.load(frozen_run["out"] / "last.pt")
    assert "optimizer" in last and last["state"]["epoch"] == 2


def test_freeze_run_leaves_the_given_backbone_untouched(frozen_run):
    """End to end: the frozen backbone in last.pt is exactly the user's state dict, BN statistics included."""
    saved = checkpoints.load(frozen_run["out"] / "last.pt")["state_dict"]
    given = frozen_run["state"]
    features = {k.removeprefix("features."): v for k, v in saved.items() if k.startswith("features.")}
    assert set(features) == {k for k in given if not k.startswith("fc.")}
    assert all(torch.equal(features[k], given[k]) for k in features)
    untrained_head = build_model("resnet18", 2, weights="none", seed=0).head
    assert not torch.equal(saved["head.weight"], untrained_head.weight)
    assert frozen_run["result"]["params"]["trainable"] == 512 * 2 + 2


@pytest.mark.parametrize("augment", [False, True])
def test_freeze_runs_the_backbone_once_over_val_and_over_unaugmented_train(
    image_folder, tmp_path, monkeypatch, augment
):
    seen: list[int] = []
    real_build = warm_start.build_model

    def counting_build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.features.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
        return model

    monkeypatch.setattr(warm_start, "build_model", counting_build)
    root = image_folder(train=8, val=2)  # 16 training images (4 full batches), 4 val images
    result = fit(
        TrainConfig(str(root), strategy="freeze", epochs=3, weights="none", augment=augment, **QUICK), tmp_path / "run"
    )
    # new crops every epoch and one eval pass for the unknown-image detector, or the same pixels: features once,
    # and the detector reuses them
    train_images = 3 * 16 + 16 if augment else 16
    mistakes = len(result["top_losses"])  # their heat maps: one image to find the map, then all of them
    heatmaps = 1 + mistakes if mistakes else 0
    assert sum(seen) == train_images + 4 + heatmaps  # val's features once: every epoch and the best weights use them
    assert len(result["history"]) == 3 and all(h["images_per_sec"] > 0 for h in result["history"])


def test_unreadable_training_image_is_skipped_and_named(image_folder, tmp_path):
    root = image_folder(train=4, val=2)
    broken = root / "train" / "cat" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 garbage")
    events = Recorder()
    result = fit(TrainConfig(str(root), epochs=1, weights="none", **QUICK), tmp_path / "run", events)
    assert [s["path"] for s in result["skipped"]] == [str(broken)]
    assert any(str(broken) in n and n.startswith("skipped") for n in events.notes)
    assert result["epochs"] == 1


def test_discriminative_lr_and_ratio_reach_the_optimizer(image_folder):
    config = TrainConfig(
        str(image_folder(train=2, val=1)),
        strategy="discriminative",
        lr=0.01,
        lr_ratio=5,
        epochs=1,
        weights="none",
        **QUICK,
    )
    run = started(config)
    lrs = {g["name"]: g["initial_lr"] for g in run.optimizer.param_groups}
    assert lrs == {"backbone": pytest.approx(0.002), "head": pytest.approx(0.01)}


def test_the_preset_follows_the_backbone_and_image_size():
    preset = preset_for("resnet18", 64)
    assert (preset.image_size, preset.resize) == (64, 73)
    assert preset_for("resnet18", None).image_size == 224
    assert preset.eval_spec().crop == 64 and preset.train_spec(True).train and not preset.train_spec(False).train


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("epochs", 0, "epochs"),
        ("batch_size", -1, "batch-size"),
        ("device", "tpu", "device"),
        ("strategy", "thaw", "strategy"),
    ],
)
def test_bad_config_is_refused_by_fit_before_its_folder_is_claimed(image_folder, tmp_path, field, value, match):
    config = TrainConfig(str(image_folder(train=2, val=1)), weights="none", **{**QUICK, field: value})
    with pytest.raises(CatdogError, match=match):
        fit(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_one_train_checks_its_options_and_resolves_its_data_once(image_folder, tmp_path, monkeypatch):
    """The CLI checks before torch loads and hands the checked config on: neither fit nor start_run checks again,
    and the data folder is looked up once (it was three checks and four look-ups)."""
    from helpers import catdog

    from catdog_cli.core import config as config_module
    from catdog_cli.data import dataset as dataset_module

    checks, resolved, real_check, real_resolve = [], [], TrainConfig.check_settings, config_module.resolve_data
    monkeypatch.setattr(
        TrainConfig, "check_settings", lambda c, weights=True: checks.append(c) or real_check(c, weights)
    )
    for module in (config_module, dataset_module):
        monkeypatch.setattr(module, "resolve_data", lambda data: resolved.append(data) or real_resolve(data))
    root = image_folder(train=2, val=1)
    fit(TrainConfig(str(root), epochs=1, weights="none", ood="none", **TINY), tmp_path / "api")
    assert (len(checks), resolved) == (1, [str(root)])
    checks.clear(), resolved.clear()
    args = ("--backbone", "resnet18", "--image-size", "32", "--batch-size", "4", "--device", "cpu", "--workers", "1")
    done = catdog(
        "train", "--data", root, "--epochs", "1", "--weights", "none", "--ood", "none", *args, "--out", tmp_path / "cli"
    )
    assert done.exit_code == 0, done.output
    assert (len(checks), resolved) == (1, [str(root)])


# --- a run whose loss stops being a number stops, and is never saved as best ----------------------------------


@pytest.mark.parametrize(
    ("epoch", "call", "where"),
    [(1, 1, "training"), (1, 3, "training"), (2, 2, "training"), (2, None, "val"), (1, None, "val")],
)
def test_a_run_whose_loss_is_not_finite_stops_and_keeps_only_finite_checkpoints(
    image_folder, tmp_path, monkeypatch, epoch, call, where
):
    """The loss goes NaN at a given step (or the weights break on an epoch's last step, seen at validation)."""
    state = {"epoch": 0, "calls": 0}
    real_train_loss, real_eval_loss = torch.nn.functional.cross_entropy, inference.F.cross_entropy

    def train_loss(logits, labels, *args, **kwargs):
        state["calls"] += 1
        loss = real_train_loss(logits, labels, *args, **kwargs)
        hit = where == "training" and state["epoch"] == epoch and state["calls"] == call
        return loss * float("nan") if hit else loss

    def eval_loss(logits, labels, *args, **kwargs):
        loss = real_eval_loss(logits, labels, *args, **kwargs)
        return loss * float("nan") if where == "val" and state["epoch"] == epoch else loss

    class Epochs(Events):
        def task(self, description, total, batch=1):
            if description.startswith("epoch "):
                state["epoch"], state["calls"] = int(description.split()[1].split("/")[0]), 0

    # the step's loss only (run.criterion, an nn.CrossEntropyLoss)
    monkeypatch.setattr(torch.nn.modules.loss, "F", types.SimpleNamespace(cross_entropy=train_loss))
    monkeypatch.setattr(inference, "F", types.SimpleNamespace(cross_entropy=eval_loss))  # the eval loop's only
    config = TrainConfig(
        str(image_folder(train=6, val=2)),
        weights="none",
        epochs=2,
        **{**QUICK, "batch_size": 2},
    )
    with pytest.raises(CatdogError, match=rf"training diverged: the {where} loss became nan in epoch {epoch}"):
        fit(config, tmp_path / "run", Epochs())
    saved = sorted(p.name for p in (tmp_path / "run").iterdir()) if (tmp_path / "run").exists() else []
    assert "run.json" not in saved
    for name in ("best.pt", "last.pt"):  # from the epochs before, if any: finite, and never the diverged epoch
        if name in saved:
            ckpt = checkpoints.load(tmp_path / "run" / name)
            assert ckpt["state"]["epoch"] < epoch
            assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert bool(saved) == (epoch > 1)  # a run that diverged in its first epoch leaves no folder at all


def test_the_temperature_is_fitted_on_val_and_kept_in_best_pt(image_folder, tmp_path):
    """Enough val images with mistakes among them: T is fitted, lowers the val NLL, and best.pt carries it."""
    root = image_folder(train=3, val=10)  # 20 val images
    result = fit(TrainConfig(str(root), epochs=1, weights="none", lr=1e-5, **QUICK), tmp_path / "run")
    cal = result["calibration"]
    assert "not_fitted" not in cal and cal["images"] == 20 and cal["split"] == "val"
    assert cal["nll_after"] < cal["nll_before"] and cal["temperature"] != 1.0
    saved = checkpoints.load(tmp_path / "run" / "best.pt")["calibration"]
    assert saved == {
        k: cal[k] for k in ("temperature", "fitted_on", "images", "ece_before", "ece_after", "nll_before", "nll_after")
    }
    assert "calibration" not in checkpoints.load(tmp_path / "run" / "last.pt")  # last.pt's weights are not best's


# --- the training recipe ----------------------------------------------------------------------------------------


def _scripted(monkeypatch, scores: list[tuple[float, float]]) -> None:
    """run_epoch replaced by a history: (val acc, val loss) per epoch, no training."""

    def scripted_epoch(run, events, stop, generator):
        acc, loss = scores[run.state.epoch]
        run.state.epoch += 1
        record = {
            "epoch": run.state.epoch,
            "train_loss": 1.0,
            "train_acc": 0.5,
            "val_loss": loss,
            "val_acc": acc,
            "lr": 0.1,
            "seconds": 0.0,
            "images_per_sec": 0.0,
            "val_seconds": 0.0,
        }
        run.state.history.append(record)
        return record

    monkeypatch.setattr(engine, "run_epoch", scripted_epoch)


@pytest.mark.parametrize(("patience", "epochs", "best"), [(2, 5, 3), (3, 6, 3), (None, 7, 3)])
def test_early_stopping_stops_at_the_right_epoch_of_a_scripted_history(
    image_folder, tmp_path, monkeypatch, patience, epochs, best
):
    # epoch 3 ties epoch 2's accuracy with a lower loss: it is the best, and the patience counts from it
    _scripted(monkeypatch, [(0.5, 0.9), (0.7, 0.6), (0.7, 0.5), (0.6, 0.4), (0.7, 0.7), (0.65, 0.3), (0.7, 0.8)])
    config = TrainConfig(str(image_folder(train=2, val=1)), weights="none", epochs=7, patience=patience, **QUICK)
    run = started(config)
    result = engine.train_loop(run, tmp_path / "run", Events())
    assert (result["epochs"], result["best_epoch"], result["best_val_acc"]) == (epochs, best, 0.7)
    assert not result["interrupted"]
    if patience:
        assert result["ended"].startswith("early stopping") and f"{patience} epoch(s) after epoch 3" in result["ended"]
        assert checkpoints.load(tmp_path / "run" / "last.pt")["state"]["ended"] == result["ended"]
    else:
        assert result["ended"] == "completed all 7 epochs"


def test_an_early_stopped_run_is_not_resumed(image_folder, tmp_path, monkeypatch):
    from catdog_cli.training.resume import resume

    _scripted(monkeypatch, [(0.5, 0.9), (0.4, 0.9), (0.4, 0.9)])
    config = TrainConfig(str(image_folder(train=2, val=1)), weights="none", epochs=3, patience=1, **QUICK)
    engine.train_loop(started(config), tmp_path / "run", Events())
    with pytest.raises(CatdogError, match="already finished"):
        resume(tmp_path / "run")


def test_freeze_unfreeze_trains_only_the_head_for_its_frozen_epochs_then_everything(
    image_folder, tmp_path, monkeypatch
):
    built = {}
    real_build = warm_start.build_model

    def keep(*args, **kwargs):
        built["model"] = real_build(*args, **kwargs)
        built["start"] = {k: v.clone() for k, v in built["model"].state_dict().items()}
        return built["model"]

    class Watch(Recorder):
        def __init__(self):
            super().__init__()
            self.moved: list[tuple[bool, bool]] = []

        def epoch(self, record):
            now = built["model"].state_dict()
            changed = {k for k, v in built["start"].items() if not torch.equal(v, now[k])}
            self.moved.append(
                (any(k.startswith("head.") for k in changed), any(k.startswith("features.") for k in changed))
            )  # weights or BN statistics

    monkeypatch.setattr(warm_start, "build_model", keep)
    events = Watch()
    config = TrainConfig(
        str(image_folder(train=4, val=2)),
        strategy="freeze-unfreeze",
        epochs=3,
        freeze_epochs=2,
        weights="none",
        **QUICK,
    )
    result = fit(config, tmp_path / "run", events)
    assert events.moved == [(True, False), (True, False), (True, True)]
    assert any("epoch 3: backbone unfrozen" in n for n in events.notes)
    assert result["params"]["trainable"] == result["params"]["total"]


def test_freeze_unfreeze_schedule_restarts_when_the_backbone_joins():
    config = TrainConfig("data", strategy="freeze-unfreeze", epochs=4, freeze_epochs=1)
    factor = schedule.lr_factor(config, steps=100)
    assert factor(99) < 0.01 and factor(100) < factor(150) and factor(150) == pytest.approx(1.0, abs=0.05)
    plain = schedule.lr_factor(TrainConfig("data", epochs=4), steps=100)
    assert plain(100) > plain(150) and plain(399) < 0.01  # one warm-up and one decay


def test_start_run_decides_the_loss_and_the_mixing_once(tmp_path):
    from helpers import labeled_folder

    root = tmp_path / "data"
    labeled_folder(root / "train", per_class=2)
    labeled_folder(root / "val", per_class=2)
    for i in range(6):  # cat: 8 training images, dog: 2 -> imbalanced (4x)
        (root / "train" / "cat" / f"extra{i}.png").write_bytes((root / "train" / "cat" / "img0.png").read_bytes())
    events = Recorder()
    run = started(TrainConfig(str(root), weights="none", label_smoothing=0.1, mixup=0.2, **QUICK), events)
    assert run.criterion.label_smoothing == 0.1 and run.criterion.weight is None
    assert run.mixing is not None and run.mixing.mixup == 0.2 and run.mixing.cutmix == 0.0
    assert any("imbalanced training classes: cat has 8 images, dog 2 (4.0x)" in n for n in events.notes)
    balanced = started(TrainConfig(str(root), weights="none", balance=True, **QUICK), Recorder())
    assert balanced.sources.train.sample_weights.tolist() == pytest.approx([10 / 16] * 8 + [10 / 4] * 2)
    assert balanced.mixing is None and balanced.criterion.weight is None


def test_ema_run_evaluates_both_weights_and_says_which_are_best(image_folder, tmp_path):
    root = image_folder(train=4, val=2)
    result = fit(
        TrainConfig(str(root), strategy="freeze", epochs=2, ema=True, weights="none", augment=False, **QUICK),
        tmp_path / "run",
    )
    assert all("ema_val_acc" in h and "ema_val_loss" in h for h in result["history"])
    best = result["history"][result["best_epoch"] - 1]
    chosen = (
        (best["ema_val_acc"], best["ema_val_loss"])
        if result["best_weights"] == "ema"
        else (best["val_acc"], best["val_loss"])
    )
    assert result["best_val_acc"] == chosen[0] == result["evaluation"]["accuracy"]
    assert "ema" in checkpoints.load(tmp_path / "run" / "last.pt")


def test_epoch_record_times_training_and_validation_apart(frozen_run):
    for h in frozen_run["result"]["history"]:
        assert h["seconds"] > 0 and h["val_seconds"] > 0
        assert h["images_per_sec"] == pytest.approx(12 / h["seconds"])  # 12 training images over training time


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("patience", 0, "--patience"),
        ("label_smoothing", 1.0, "--label-smoothing"),
        ("mixup", -1.0, "--mixup"),
        ("ema_decay", 1.0, "--ema-decay"),
        ("freeze_epochs", 0, "--freeze-epochs"),
        ("strategy", "freeze-unfreeze", "fewer than --epochs"),
    ],
)
def test_bad_recipe_option_is_refused_before_any_work(field, value, match):
    with pytest.raises(CatdogError, match=match):
        TrainConfig("data", epochs=1, **{field: value}).check()


# --- a full disk ------------------------------------------------------------------------------------------------

ZIP_WRITER_SHORT = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"  # torch's, verbatim


@pytest.mark.parametrize("fails_at", [1, 2], ids=["first epoch", "second epoch"])
def test_a_full_disk_is_one_line_and_the_run_stays_resumable(tmp_path, monkeypatch, fails_at):
    """torch's zip writer reports a short write as a RuntimeError: one line naming the file, and the folder either
    resumes from its last complete epoch or, before the first, holds nothing (not a best.pt that blocks a restart)."""
    real, saves = torch.save, []

    def disk_fills(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "optimizer" in obj:  # last.pt (best.pt keeps no optimizer state)
            saves.append(1)
            if len(saves) == fails_at:
                f.write(b"PK\x03\x04 the first bytes")
                raise RuntimeError(ZIP_WRITER_SHORT)
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills)
    root, out = labeled_folder(tmp_path / "data"), tmp_path / "run"
    config = TrainConfig(str(root), epochs=3, weights="none", **QUICK)
    with pytest.raises(CatdogError) as caught:
        fit(config, out)
    message = str(caught.value)
    assert message.startswith(f"cannot write {out / 'last.pt'}: ") and "\n" not in message
    if fails_at == 1:
        assert message.endswith("nothing to resume yet: free some space and start the run again")
        assert not out.exists()  # made by the run, left empty: removed; a new run may start there
        return
    assert message.endswith(f"the last complete epoch is saved: free some space, then `catdog train --resume {out}`")
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt", "metrics.csv"]  # no temp file
    monkeypatch.setattr(torch, "save", real)
    result = resume(out)
    assert result["epochs"] == 3 and len(result["history"]) == 3


def test_under_torchrun_the_ranks_agree_on_stopping_only_at_the_periodic_sync(tmp_path, monkeypatch):
    """A collective and a host sync (`.item()`) every step stall a GPU: under DDP the stop flag is agreed on at
    the existing every-25-steps sync and at the epoch's end, not after each step."""
    run = started(TrainConfig(str(labeled_folder(tmp_path / "data", per_class=8)), weights="none", **QUICK))
    run.world = World(0, 2, 0)  # a rank of two, its collectives counted instead of run
    agreed = []
    monkeypatch.setattr(engine.distributed, "any_rank", lambda flag, device, world: agreed.append(flag) or flag)
    monkeypatch.setattr(engine.distributed, "all_sum", lambda t, world: t)
    assert run.steps >= 2
    assert engine.train_one_epoch(run, Events(), engine.StopRequest(), torch.Generator()) is not None
    assert len(agreed) == 1  # the epoch's end (is any rank's loss not finite?), no per-step agreement


def test_compile_without_a_compiler_is_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    config = TrainConfig(str(labeled_folder(tmp_path / "data", per_class=4)), weights="none", compile=True, **QUICK)
    with pytest.raises(CatdogError, match=r"--compile needs a C/C\+\+ compiler"):
        started(config)


def test_compile_time_is_not_counted_in_the_first_epochs_images_per_second(tmp_path, monkeypatch):
    """The first compiled step compiles (a minute on a GPU): timed apart, said in a note, out of epoch 1's img/s."""
    clock = [0.0]

    def perf_counter():
        clock[0] += 0.001
        return clock[0]

    def fake_compile(module):
        class Compiled(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner, self.calls = module, 0

            def forward(self, x):
                self.calls += 1
                clock[0] += 100.0 if self.calls == 1 else 0.0  # compiling
                return self.inner(x)

        return Compiled()

    monkeypatch.setattr(setup.torch, "compile", fake_compile)
    monkeypatch.setattr(engine.time, "perf_counter", perf_counter)
    monkeypatch.setattr(setup, "check_compile", lambda: None)
    events = Recorder()
    config = TrainConfig(str(labeled_folder(tmp_path / "data", per_class=8)), weights="none", compile=True, **QUICK)
    record = engine.run_epoch(started(config, events), events, engine.StopRequest(), torch.Generator())
    assert record["seconds"] > 100  # the epoch's wall time is what it was
    assert record["images_per_sec"] > 100  # but img/s counts the steps after the compiling one
    assert any("compiled in 100.0s" in note for note in events.notes)
