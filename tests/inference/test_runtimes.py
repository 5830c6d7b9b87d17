"""Runners: exported ONNX and TorchScript files give predict's and evaluate's outputs as their checkpoint does (labels,
calibrated probabilities, CSV, JSON keys, --sort-into, top-k, unsure); files without catdog's metadata and options
a file cannot honour are refused in one line; --runtime auto runs a checkpoint through an export cached beside it."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
from helpers import CLASS_COLORS, catdog, error_line, make_image, ok_json, snapshot

from catdog_cli.core.events import Events
from catdog_cli.core.validate import ONNX_PACKAGES
from catdog_cli.errors import CatdogError
from catdog_cli.inference import fastpath
from catdog_cli.inference.contract import Exportable
from catdog_cli.inference.evaluate import evaluate_checkpoint
from catdog_cli.inference.export import export_model, read_metadata
from catdog_cli.inference.parity import own_dataset
from catdog_cli.inference.predict import classify, prediction_columns, sort_into_folders
from catdog_cli.inference.quantize import quantize_checked
from catdog_cli.inference.trained import TrainedModel
from catdog_cli.models import checkpoints

HAVE_ONNX = all(importlib.util.find_spec(m) for m in ONNX_PACKAGES)
FORMATS = [pytest.param("onnx", marks=pytest.mark.skipif(not HAVE_ONNX, reason="needs .[export]")), "torchscript"]
SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript"}


@pytest.fixture(scope="module")
def exported(frozen_run, tmp_path_factory):
    """Each format exported once for the module, beside a copy of frozen_run's best.pt."""
    folder = tmp_path_factory.mktemp("exported")
    checkpoint = folder / "best.pt"
    shutil.copy(frozen_run["out"] / "best.pt", checkpoint)
    done: dict[str, Path] = {}

    def get(fmt: str) -> tuple[Path, Path]:
        if fmt not in done:
            done[fmt] = Path(export_model(checkpoint, fmt, folder / f"model{SUFFIX[fmt]}")["out"])
        return checkpoint, done[fmt]

    return get


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i in range(6):
        make_image(folder / f"{i}.png", CLASS_COLORS[i % 2], (40 + 3 * i, 34), shade=10 * i)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def _without_speed(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("seconds", "images_per_sec")}


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_exported_file_predicts_what_its_checkpoint_predicts(exported, photos, tmp_path, fmt):
    checkpoint, path = exported(fmt)
    options = {"top_k": 2, "device": "cpu", "workers": 1, "min_confidence": 0.75}
    reference = classify(checkpoint, [photos], runtime="torch", precision="fp32", **options)
    got = classify(path, [photos], **options)
    assert got.keys() == reference.keys()
    assert (got["runtime"], got["precision"]) == ({"onnx": "onnxruntime", "torchscript": "torchscript"}[fmt], "fp32")
    assert reference["runtime"] == "torch" and got["backbone"] == reference["backbone"] == "resnet18"
    assert len(got["predictions"]) == 7 and got["predictions"][-1]["error"]  # broken.jpg, named, not fatal
    for row, want in zip(got["predictions"], reference["predictions"]):
        assert row.keys() == want.keys() and row["path"] == want["path"]
        if "label" in want:
            assert (row["label"], row["unsure"]) == (want["label"], want["unsure"])
            assert row["confidence"] == pytest.approx(want["confidence"], abs=1e-4)
            assert [t["label"] for t in row["top"]] == [t["label"] for t in want["top"]]
            confidences = [t["confidence"] for t in want["top"]]
            assert [t["confidence"] for t in row["top"]] == pytest.approx(confidences, abs=1e-4)
    assert [c for c, _ in prediction_columns(got["predictions"])] == [
        c for c, _ in prediction_columns(reference["predictions"])
    ]
    assert sort_into_folders(got["predictions"], tmp_path / "a") == sort_into_folders(
        reference["predictions"], tmp_path / "b"
    )
    assert {p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")} == {
        p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*")
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_exported_file_evaluates_like_its_checkpoint(exported, frozen_run, fmt):
    checkpoint, path = exported(fmt)
    data = str(frozen_run["root"])
    reference = evaluate_checkpoint(checkpoint, data, "all", device="cpu", workers=1, precision="fp32", runtime="torch")
    got = evaluate_checkpoint(path, data, "all", device="cpu", workers=1)
    assert got.keys() == reference.keys()
    assert (got["accuracy"], got["confusion"], got["per_class"]) == (
        reference["accuracy"],
        reference["confusion"],
        reference["per_class"],
    )
    assert got["loss"] == pytest.approx(reference["loss"], abs=1e-4)
    for key in ("ece_before", "ece_after", "nll_after"):  # T * log(p) is the logits up to a constant per row
        assert got["calibration"][key] == pytest.approx(reference["calibration"][key], abs=1e-4)
    assert got["params"] == reference["params"]  # the export's metadata carries them
    assert [t["path"] for t in got["top_losses"]] == [t["path"] for t in reference["top_losses"]]
    # the unknown-image section from the file's in-graph score and its metadata's threshold
    assert {k: v for k, v in got["unknown"].items() if k != "scores"} == pytest.approx(
        {k: v for k, v in reference["unknown"].items() if k != "scores"}
    )
    # the same images' scores (a checkpoint lists "all" in its recorded split's order, a file in the folder's)
    assert sorted(got["unknown"]["scores"]["all"]) == pytest.approx(
        sorted(reference["unknown"]["scores"]["all"]), rel=1e-4, abs=1e-4
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_exported_file_scores_unknown_data_as_its_checkpoint_does(exported, frozen_run, photos, fmt):
    checkpoint, path = exported(fmt)
    data = str(frozen_run["root"])
    options = {"device": "cpu", "workers": 1, "unknown_data": photos}
    reference = evaluate_checkpoint(checkpoint, data, "all", precision="fp32", runtime="torch", **options)["unknown"]
    got = evaluate_checkpoint(path, data, "all", **options)["unknown"]
    assert got["unknown_images"] == reference["unknown_images"] == 6  # broken.jpg is skipped, not scored
    for key in ("auroc", "fpr_at_95_kept", "caught", "kept", "threshold", "keep"):
        assert got[key] == pytest.approx(reference[key], abs=1e-6), key
    assert got["method"] == reference["method"] == "knn"
    assert [e["path"] for e in got["caught_examples"]] == [e["path"] for e in reference["caught_examples"]]
    assert got["scores"]["unknown data"] == pytest.approx(reference["scores"]["unknown data"], rel=1e-4, abs=1e-4)


def test_cli_json_keys_are_the_same_for_a_checkpoint_and_its_file(exported, photos, frozen_run):
    checkpoint, path = exported("torchscript")
    a = ok_json(catdog("predict", checkpoint, photos, "--device", "cpu", "--top-k", "2", "--json"))
    b = ok_json(catdog("predict", path, photos, "--top-k", "2", "--json"))
    assert a.keys() == b.keys() and [r.keys() for r in a["predictions"]] == [r.keys() for r in b["predictions"]]
    assert [r.get("label") for r in a["predictions"]] == [r.get("label") for r in b["predictions"]]
    root = frozen_run["root"]
    a = ok_json(catdog("evaluate", checkpoint, "--data", root, "--split", "all", "--device", "cpu", "--json"))
    b = ok_json(catdog("evaluate", path, "--data", root, "--split", "all", "--json"))
    assert a.keys() == b.keys() and a["accuracy"] == b["accuracy"]


@pytest.mark.skipif(not HAVE_ONNX, reason="needs .[export]")
def test_onnxruntime_runs_on_the_threads_that_predict_and_evaluate_record(exported, photos, frozen_run, monkeypatch):
    """`threads` and `threads_why` in evaluate's and predict's JSON, as run.json has them for train; an ONNX
    session computes on that count too, not on one thread per core whatever the load."""
    from catdog_cli.inference.runtimes import OnnxRunner
    from catdog_cli.runtime import device

    monkeypatch.setattr(device, "_THREADS", (1, "--threads"))  # as `catdog --threads 1` leaves it
    _, path = exported("onnx")
    assert OnnxRunner(path).session.get_session_options().intra_op_num_threads == 1
    predicted = classify(path, [photos])
    evaluated = evaluate_checkpoint(path, str(frozen_run["root"]), split="all")
    for result in (predicted, evaluated):
        assert (result["runtime"], result["threads"], result["threads_why"]) == ("onnxruntime", 1, "--threads")


def test_an_exported_file_needs_data_to_evaluate(exported):
    _, path = exported("torchscript")
    assert error_line(catdog("evaluate", path)) == (
        "error: this checkpoint does not say what data it was trained on: pass --data"
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")  # the exporters' own
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_without_catdog_metadata_is_refused_in_one_line(frozen_run, photos, tmp_path, fmt):
    trained = TrainedModel.load(frozen_run["out"] / "best.pt", "cpu", "fp32")
    module = Exportable(trained.model, trained.preset, 1.0).eval()
    images = torch.zeros(2, 32, 32, 3, dtype=torch.uint8)
    path = tmp_path / f"plain{SUFFIX[fmt]}"
    if fmt == "onnx":
        torch.onnx.export(module, (images,), str(path), dynamo=False, input_names=["images"])
    else:
        torch.jit.trace(module, images).save(str(path))
    line = error_line(catdog("predict", path, photos))
    assert line == (
        f"error: {path} carries no catdog metadata (classes, preprocessing, temperature: its classes, input "
        "contract and temperature); run files written by `catdog export`, or the checkpoint itself"
    )


def test_what_an_exported_file_cannot_do_is_refused_before_any_work(exported, photos, tmp_path):
    _, path = exported("torchscript")
    assert error_line(catdog("predict", path, photos, "--runtime", "torch")) == (
        f"error: {path} is an exported torchscript file: it runs in torchscript, not --runtime torch"
    )
    for option in (("--tta",), ("--explain", tmp_path / "heat")):
        assert error_line(catdog("predict", path, photos, *option)) == (
            f"error: {option[0]} needs the PyTorch model: give the checkpoint, not an exported file"
        )
    assert error_line(catdog("predict", path, photos, "--precision", "bf16")) == (
        "error: torchscript runs this model in fp32: --precision bf16 needs a checkpoint in PyTorch"
    )
    assert error_line(catdog("predict", path, photos, "--runtime", "tensorrt")) == (
        "error: unknown runtime 'tensorrt'; choose one of auto, torch, onnxruntime"
    )
    checkpoint, _ = exported("torchscript")
    assert error_line(catdog("evaluate", checkpoint, "--runtime", "onnxruntime", "--tta")) == (
        "error: --tta needs the PyTorch model: use --runtime torch or auto"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not HAVE_ONNX, reason="needs .[export]")
def test_auto_runs_a_checkpoint_through_one_cached_proven_export(frozen_run, photos, tmp_path, monkeypatch):
    checkpoint = tmp_path / "run" / "best.pt"
    checkpoint.parent.mkdir()
    shutil.copy(frozen_run["out"] / "best.pt", checkpoint)
    options = {"device": "cpu", "workers": 1, "top_k": 2}
    small = classify(checkpoint, [photos], **options)  # 7 images: not worth an export yet
    assert small["runtime"] == "torch" and snapshot(checkpoint.parent).keys() == {"best.pt"}

    monkeypatch.setattr(fastpath, "AUTO_MIN_IMAGES", 5)
    fast = classify(checkpoint, [photos], **options)
    (cached,) = (checkpoint.parent / ".catdog-cache").iterdir()
    assert fast["runtime"] == "onnxruntime" and cached == fastpath.cache_path(checkpoint)
    reference = classify(checkpoint, [photos], runtime="torch", precision="fp32", **options)
    assert [r.get("label") for r in fast["predictions"]] == [r.get("label") for r in reference["predictions"]]
    assert _without_speed(fast).keys() == _without_speed(reference).keys()

    monkeypatch.setattr(fastpath, "AUTO_MIN_IMAGES", 10**6)  # once made, the export is used for any pass
    before = snapshot(checkpoint.parent / ".catdog-cache")
    one = classify(checkpoint, [photos / "1.png"], **options)
    assert one["runtime"] == "onnxruntime" and snapshot(checkpoint.parent / ".catdog-cache") == before
    assert classify(checkpoint, [photos], runtime="torch", **options)["runtime"] == "torch"

    copy = tmp_path / "other" / "best.pt"  # keyed by content: a copy elsewhere has the same key, a change another
    copy.parent.mkdir()
    shutil.copy(checkpoint, copy)
    assert fastpath.cache_path(copy).name == cached.name
    checkpoints.update(copy, calibration={"temperature": 2.0, "fitted_on": "val"})
    assert fastpath.cache_path(copy).name != cached.name


def test_auto_falls_back_to_pytorch_when_the_export_cannot_be_cached(frozen_run, photos, tmp_path, monkeypatch):
    checkpoint = tmp_path / "best.pt"
    shutil.copy(frozen_run["out"] / "best.pt", checkpoint)
    (tmp_path / fastpath.CACHE_DIR).write_text("a user's file, in the way")
    monkeypatch.setattr(fastpath, "AUTO_MIN_IMAGES", 1)
    result = ok_json(catdog("predict", checkpoint, photos, "--device", "cpu", "--json"))
    assert result["runtime"] == "torch"
    assert (tmp_path / fastpath.CACHE_DIR).read_text() == "a user's file, in the way"
    line = error_line(catdog("predict", checkpoint, photos, "--device", "cpu", "--runtime", "onnxruntime"))
    assert line.startswith(f"error: cannot cache an export beside {checkpoint}")


@pytest.mark.skipif(not HAVE_ONNX, reason="needs .[export]")
def test_int8_is_checked_on_the_runs_val_split_and_carries_its_figures(frozen_run, photos, tmp_path):
    checkpoint = tmp_path / "best.pt"
    shutil.copy(frozen_run["out"] / "best.pt", checkpoint)
    result = ok_json(catdog("export", checkpoint, "--int8", "--int8-tolerance", "100", "--json"))
    out = Path(result["out"])
    assert out == tmp_path / "best.int8.onnx" and sorted(p.name for p in tmp_path.iterdir()) == [out.name, "best.pt"]
    check = result["int8"]
    assert check["passed"] and check["images"] == 4 and check["calibration_images"] == 12  # frozen_run: 12 / 4
    assert check["points_lost"] == pytest.approx(100 * (check["accuracy_fp32"] - check["accuracy_int8"]))
    assert read_metadata(out)["quantized"] == check == result["metadata"]["quantized"]
    got = classify(out, [photos], device="cpu", workers=1)
    assert got["precision"] == "int8" and got["runtime"] == "onnxruntime"
    reference = classify(checkpoint, [photos], device="cpu", workers=1, runtime="torch")
    assert got.keys() == reference.keys()


@pytest.mark.skipif(not HAVE_ONNX, reason="needs .[export]")
def test_int8_that_loses_more_than_the_tolerance_is_refused(exported, frozen_run, tmp_path):
    checkpoint, fp32 = exported("onnx")
    trained = TrainedModel.load(checkpoint, "cpu", "fp32")
    dataset = own_dataset(trained, "")
    out = tmp_path / "int8.onnx"
    spec, meta = trained.preset.eval_spec(), read_metadata(fp32)
    with pytest.raises(CatdogError, match=r"^int8 does not hold on 4 val images: .*; tolerance -1.0 points; nothing"):
        quantize_checked(fp32, out, spec, dataset.split("train"), dataset.split("val"), meta, Events(), tolerance=-1.0)
    assert error_line(catdog("export", checkpoint, "--format", "torchscript", "--int8")) == (
        "error: --int8 quantizes an ONNX file: use it with --format onnx"
    )


ONCE = {  # a command over a checkpoint that needs its PyTorch model twice over: it still reads the file once
    "predict --explain": ("predict", "{best}", "{photos}", "--explain", "{tmp}/maps"),
    "evaluate --report": ("evaluate", "{best}", "--report", "{tmp}/report.html"),
    "export (parity)": ("export", "{best}", "--format", "torchscript", "--out", "{tmp}/model.torchscript"),
}
ONNX_ONCE = {  # predictions through an export cached beside the checkpoint, heat maps by its PyTorch model
    f"{name} in onnxruntime": (*args, "--runtime", "onnxruntime") for name, args in ONCE.items() if args[0] != "export"
}


@pytest.mark.parametrize(
    "command",
    [
        *ONCE.values(),
        *(
            pytest.param(a, marks=pytest.mark.skipif(not HAVE_ONNX, reason="needs .[export]"))
            for a in ONNX_ONCE.values()
        ),
    ],
    ids=[*ONCE, *ONNX_ONCE],
)
def test_a_command_reads_its_checkpoint_once(frozen_run, photos, tmp_path, monkeypatch, command):
    best = tmp_path / "best.pt"
    shutil.copy(frozen_run["out"] / "best.pt", best)
    loads, real = [], checkpoints.load
    monkeypatch.setattr(checkpoints, "load", lambda path: loads.append(Path(path)) or real(path))
    args = [a.format(best=best, photos=photos, tmp=tmp_path) for a in command]
    result = ok_json(catdog(*args, "--device", "cpu", "--json") if args[0] != "export" else catdog(*args, "--json"))
    assert loads == [best]
    if "--explain" in args:
        assert all("explanation" in r for r in result["predictions"] if "label" in r)
        assert len(list((tmp_path / "maps").iterdir())) == 6  # the readable photos
    if "--report" in args:
        assert (tmp_path / "report.html").is_file()


def test_predict_explains_with_the_model_that_predicted(frozen_run, photos, tmp_path, monkeypatch):
    """--explain reuses the predicting model: its precision, and under TTA the model behind the views (its centre
    crop), rather than a second model loaded at defaults."""
    from catdog_cli.inference import predict as predict_module
    from catdog_cli.inference.tta import TTAModel

    seen, real = [], predict_module.explain_predictions
    monkeypatch.setattr(predict_module, "explain_predictions", lambda t, *a, **k: seen.append(t) or real(t, *a, **k))
    result = classify(
        frozen_run["out"] / "best.pt", [photos], device="cpu", precision="bf16", tta="flip", explain=tmp_path / "maps"
    )
    (trained,) = seen
    assert trained.precision.name == "bf16" and isinstance(trained.model, TTAModel)
    assert trained.base_preset.image_size == 32 and trained.preset.image_size == 37  # the crop, not TTA's square
    assert sum("explanation" in r for r in result["predictions"]) == 6
