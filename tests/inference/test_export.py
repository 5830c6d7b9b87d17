"""`catdog export`: round trip and parity of both formats on a small model, metadata, dynamic batch, the
calibrated temperature inside the graph, and never a file left behind or replaced."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CLASS_COLORS, catdog, error_line, make_image, ok_json, snapshot
from PIL import Image

from catdog_cli.core.validate import ONNX_PACKAGES
from catdog_cli.data import decode
from catdog_cli.data.dataset import Split
from catdog_cli.data.decode import ImageSpec
from catdog_cli.errors import CatdogError
from catdog_cli.inference import contract, parity
from catdog_cli.inference.export import export_model, read_metadata
from catdog_cli.inference.predict import predict
from catdog_cli.models import checkpoints

HAVE_ONNX = all(importlib.util.find_spec(m) for m in ONNX_PACKAGES)
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="pip install -e '.[export]' for the ONNX tests")


def run_file(path: Path, images: torch.Tensor) -> torch.Tensor:
    """The file's probabilities (its first output; the second, with a detector, is the unknown score)."""
    fmt = "onnx" if path.suffix == ".onnx" else "torchscript"
    return parity.probabilities(parity.RUNNERS[fmt](path), images)


@pytest.fixture(scope="module")
def calibrated(frozen_run, tmp_path_factory) -> Path:
    """frozen_run's best.pt with a temperature far from 1, so the graph shows whether it applies it."""
    path = tmp_path_factory.mktemp("calibrated") / "best.pt"
    shutil.copy(frozen_run["out"] / "best.pt", path)
    checkpoints.update(path, calibration={"temperature": 3.0, "fitted_on": "val"})
    return path


@pytest.fixture(scope="module")
def exported(calibrated, tmp_path_factory) -> Callable[[str], dict]:
    """Each format exported once for the module (in a folder of its own), on first use."""
    done: dict[str, dict] = {}

    def get(fmt: str) -> dict:
        if fmt not in done:
            done[fmt] = export_model(calibrated, fmt, tmp_path_factory.mktemp(fmt) / f"model.{fmt}")
        return done[fmt]

    return get


@pytest.mark.parametrize("fmt", [pytest.param("onnx", marks=needs_onnx), "torchscript"])
def test_export_round_trip_agrees_with_predict(calibrated, frozen_run, exported, tmp_path, fmt):
    result = exported(fmt)
    out = Path(result["out"])
    parity = result["parity"]
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-4 and parity["label_agreement"] == 1.0
    assert parity["images"] == 4 and str(frozen_run["root"]) in parity["source"]  # the model's own val split
    assert out.name == f"model.{fmt}" and out.stat().st_size == result["bytes"]
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left beside it

    meta = read_metadata(out)
    assert meta == result["metadata"]
    assert meta["classes"] == ["cat", "dog"] and meta["temperature"] == 3.0
    assert meta["input"]["layout"] == "NHWC" and meta["input"]["shape"] == ["batch", 32, 32, 3]
    assert (meta["preprocessing"]["resize"], meta["preprocessing"]["crop"]) == (37, 32)

    # any batch size; calibrated probabilities equal to predict's, which are not the plain softmax's
    image = make_image(tmp_path / "extra" / "x.png", CLASS_COLORS[1], (40, 40))
    rows = predict(calibrated, [image], top_k=2, device="cpu", workers=1, precision="fp32")
    plain = predict(frozen_run["out"] / "best.pt", [image], top_k=2, device="cpu", workers=1, precision="fp32")
    crop = ImageSpec(train=False, resize=37, crop=32).decode(Split([image], [0]), 0).image
    for n in (1, 3):
        probs = run_file(out, crop.permute(1, 2, 0).unsqueeze(0).expand(n, -1, -1, -1).contiguous())
        assert probs.shape == (n, 2) and torch.allclose(probs.sum(1), torch.ones(n), atol=1e-5)
        dog = probs[0, 1].item()
        assert dog == pytest.approx({t["label"]: t["confidence"] for t in rows[0]["top"]}["dog"], abs=1e-5)
    assert abs(dog - {t["label"]: t["confidence"] for t in plain[0]["top"]}["dog"]) > 1e-3


def _odd_images(folder: Path) -> list[Path]:
    """Every kind of file catdog accepts that a plain `Image.open(...).convert("RGB")` would read differently,
    plus shapes past the point where catdog once resized only the part it keeps."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (250, 3000, 3), dtype=np.uint8)
    made = {}
    rgba = np.dstack([np.full((60, 80, 3), CLASS_COLORS[1], np.uint8), np.full((60, 80), 128, np.uint8)])
    rgba[:20, :, 3] = 30  # a band almost transparent: white shows through
    Image.fromarray(rgba, "RGBA").save(made.setdefault("rgba", folder / "rgba.png"))
    Image.fromarray(rgba, "RGBA").convert("LA").save(made.setdefault("la", folder / "la.png"))
    palette = Image.fromarray(rgba[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.save(made.setdefault("palette", folder / "palette.png"), transparency=0)
    Image.fromarray(rgba, "RGBA").convert("PA").save(made.setdefault("pa", folder / "pa.tiff"))
    deep = (np.linspace(1000, 3000, 60 * 80).reshape(60, 80)).astype(np.uint16)  # 16-bit, a narrow range
    Image.fromarray(deep).save(made.setdefault("16-bit", folder / "deep.png"))
    Image.fromarray(deep.astype(np.float32) / 7).save(made.setdefault("float", folder / "float.tiff"))
    Image.fromarray(np.full((60, 80, 3), CLASS_COLORS[0], np.uint8)).convert("CMYK").save(folder / "cmyk.jpg")
    made["cmyk"] = folder / "cmyk.jpg"
    rotated = Image.fromarray(noise[:150, :200])
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rotated.save(made.setdefault("exif", folder / "exif.jpg"), exif=exif)
    for w, h in ((30, 200), (40, 250), (250, 31), (3000, 40), (37, 2900), (7, 5)):  # strips, panoramas, tiny
        Image.fromarray(noise[:h, :w]).save(made.setdefault(f"{w}x{h}", folder / f"strip{w}x{h}.png"))
    return list(made.values())


@needs_onnx
def test_the_readme_snippet_gives_predicts_answer_on_every_kind_of_image(calibrated, exported, tmp_path, capsys):
    """The lines the README tells a user to paste, run as written on the original files, agree with predict to the
    promised tolerance: transparency, 16-bit and float grayscale, CMYK, EXIF rotation, strips and panoramas."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippet = readme.split("Using the file without catdog")[1].split("```python\n")[1].split("```")[0]
    photos = [make_image(tmp_path / "photo.jpg", CLASS_COLORS[1], (200, 150))]  # large enough for JPEG draft
    photos += _odd_images(tmp_path / "odd")
    rows = predict(calibrated, photos, device="cpu", workers=1, precision="fp32")
    for photo, row in zip(photos, rows, strict=True):
        code = snippet.replace("runs/train/best.onnx", exported("onnx")["out"]).replace("photo.jpg", str(photo))
        exec(compile(code, "README.md", "exec"), {})
        label, probability = capsys.readouterr().out.split()
        assert "label" in row, (photo.name, row)
        assert label == row["label"], photo.name
        assert float(probability) == pytest.approx(row["confidence"], abs=parity.TOLERANCE), photo.name


def test_parity_holds_on_odd_files_and_is_proven_from_the_original_files(calibrated, tmp_path, monkeypatch):
    """The parity check feeds the file crops made by the documented steps from the original files: on odd files
    it passes, and a catdog whose decoder strayed from the contract (alpha dropped) fails it instead of agreeing
    with itself."""
    odd = tmp_path / "odd"
    _odd_images(odd)
    result = export_model(calibrated, "torchscript", tmp_path / "ok.torchscript", parity_folder=odd)
    assert result["parity"]["passed"] and result["parity"]["images"] == len(list(odd.iterdir()))
    assert any("alpha-composite on opaque white" in step for step in result["metadata"]["preprocessing"]["steps"])

    monkeypatch.setattr(decode, "to_rgb", lambda im: im.convert("RGB"))
    with pytest.raises(CatdogError, match="disagrees with catdog predict"):
        export_model(calibrated, "torchscript", tmp_path / "strayed.torchscript", parity_folder=odd)
    assert not (tmp_path / "strayed.torchscript").exists()


def test_parity_failure_leaves_no_file(calibrated, tmp_path, monkeypatch):
    """A graph that computes something else than catdog is refused and removed, not published."""
    real = contract.Exportable.forward

    def flipped(self, x):
        found = real(self, x)
        return (found[0].flip(1), *found[1:]) if isinstance(found, tuple) else found.flip(1)

    monkeypatch.setattr(contract.Exportable, "forward", flipped)
    with pytest.raises(CatdogError, match=r"disagrees with catdog predict on 4 images .*nothing was written"):
        export_model(calibrated, "torchscript", tmp_path / "m.torchscript")
    assert list(tmp_path.iterdir()) == []


def test_export_never_replaces_a_file_and_says_so_in_one_line(calibrated, tmp_path):
    taken = tmp_path / "m.torchscript"
    taken.write_text("the user's")
    before = snapshot(tmp_path)
    line = error_line(catdog("export", calibrated, "--format", "torchscript", "--out", taken))
    assert line == f"error: {taken} already exists; choose a new --out file"
    assert snapshot(tmp_path) == before


def test_parity_on_the_users_images_and_json(calibrated, tmp_path):
    photos = tmp_path / "photos"
    for i in range(5):
        make_image(photos / f"{i}.png", CLASS_COLORS[i % 2], (50, 30 + i))
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    result = ok_json(
        catdog(
            "export",
            calibrated,
            "--format",
            "torchscript",
            "--out",
            tmp_path / "m.torchscript",
            "--parity-images",
            photos,
            "--json",
        )
    )
    assert result["parity"]["images"] == 5 and result["parity"]["source"] == str(photos)
    assert result["format"] == "torchscript" and Path(result["out"]).is_file()


def test_missing_onnx_packages_name_the_extra(calibrated, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name))
    line = error_line(catdog("export", calibrated, "--out", tmp_path / "m.onnx"))
    assert line == (
        "error: ONNX export needs onnxruntime: pip install onnx onnxscript onnxruntime (in a clone of "
        "catdog: pip install -e '.[export]')"
    )
    assert list(tmp_path.iterdir()) == []


def test_parity_needs_images_when_the_training_data_is_gone(frozen_run, tmp_path):
    moved = tmp_path / "best.pt"
    shutil.copy(frozen_run["out"] / "best.pt", moved)
    checkpoints.update(moved, data=str(tmp_path / "gone"))
    line = error_line(catdog("export", moved, "--format", "torchscript"))
    assert line.endswith("is not there to prove parity on: pass --parity-images DIR")
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


@pytest.mark.parametrize("fmt", [pytest.param("onnx", marks=needs_onnx), "torchscript"])
def test_an_out_name_that_is_not_utf8_is_written_like_every_other_output(calibrated, tmp_path, fmt):
    """torch.jit takes only UTF-8 names (a traceback); the file is written and read back by Python instead."""
    out = tmp_path / os.fsdecode(f"mod\xff.{fmt}".encode("latin-1"))
    result = export_model(calibrated, fmt, out)
    assert result["parity"]["passed"] and Path(result["out"]) == out and out.is_file()
    assert read_metadata(out)["classes"] == ["cat", "dog"]
    assert os.listdir(tmp_path) == [out.name]


def test_export_with_an_out_name_that_is_not_utf8_prints_it_escaped_and_exits_0(calibrated, tmp_path):
    out = tmp_path / os.fsdecode(b"mod\xff.torchscript")
    done = catdog("export", calibrated, "--format", "torchscript", "--out", out)
    assert done.exit_code == 0, done.output
    assert str(tmp_path / "mod\\xff.torchscript") in " ".join(done.stdout.split()) and out.is_file()
    result = ok_json(catdog("export", calibrated, "--format", "torchscript", "--out", f"{out}2", "--json"))
    assert result["out"] == str(tmp_path / "mod\\xff.torchscript2")  # strict JSON: escaped, as every output is


@pytest.mark.parametrize(
    ("given", "says"),
    [("", "--out is empty (or .): give the name of a file to write"), ("folder", "is a folder; give the name")],
)
def test_export_out_empty_or_a_folder_names_no_file(calibrated, tmp_path, monkeypatch, given, says):
    """`--out ""` said ". already exists": true of the folder it read as, and no help."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    before = snapshot(tmp_path)
    line = error_line(catdog("export", calibrated, "--format", "torchscript", "--out", given))
    assert says in line and "already exists" not in line
    assert snapshot(tmp_path) == before
