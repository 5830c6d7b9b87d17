"""Export parity, calibration and "unsure" coverage, and onnxruntime vs catdog predict speed, on real data.

    python benchmarks/export_calibration.py --data /tmp/data/catdog /tmp/data/hymenoptera \
        --weights ../shared/weights/tf_efficientnet_lite0_imagenet.pth --image-size 160 --epochs 2 \
        --strategies freeze,finetune --seeds 0,1,2 --out /tmp/bench13 [--reuse]

For every dataset x strategy x seed, `catdog_cli.training.loop.fit` trains timm:tf_efficientnet_lite0 from the given
ImageNet weights (the temperature is fitted on val at the end, as `catdog train` does). Then, from best.pt:

- calibration on the val split, two ways: in-sample (T fitted and measured on all of val, what train reports)
  and 2-fold cross-fitted (val halved with a fixed permutation; each half measured with the T fitted on the
  other half): ECE (15 bins) and NLL before and after, and accuracy/coverage at the --thresholds;
- seed 0 only: `export_model` in both formats (parity on 32 images, as `catdog export`), then the parity of
  each file against catdog predict on the whole val split, and of the README's onnxruntime snippet (its own
  PIL preprocessing, run per image) against catdog predict;
- once (the same architecture throughout): images per second on the first dataset's val split, end to end
  (catdog `predict` vs catdog's decode + onnxruntime) and model only (pre-decoded uint8 crops, batch 32:
  catdog's eager model with its normalization, the ONNX file in onnxruntime, the TorchScript file).

With --reuse, a run folder that already holds best.pt and run.json (an earlier invocation's) is measured
again without training it again (its train_seconds is then the sum of its metrics.csv epochs).

Prints one JSON document and writes it to OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from catdog_cli.core.config import TrainConfig
from catdog_cli.core.events import Events
from catdog_cli.data.dataset import Split, load_dataset
from catdog_cli.data.decode import decode_split, default_workers
from catdog_cli.data.sources import Loader, batches, memory_budget
from catdog_cli.inference import calibration
from catdog_cli.inference.evaluate import evaluate
from catdog_cli.inference.export import export_model
from catdog_cli.inference.parity import RUNNERS, check_parity, probabilities
from catdog_cli.inference.predict import predict
from catdog_cli.inference.trained import TrainedModel
from catdog_cli.training.loop import fit

BACKBONE = "timm:tf_efficientnet_lite0"
README = Path(__file__).resolve().parents[1] / "README.md"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def val_logits(checkpoint: Path) -> tuple[torch.Tensor, torch.Tensor, list[Path]]:
    """best.pt's logits on its own val split (re-derived as evaluate does), with labels and paths in order."""
    trained = TrainedModel.load(checkpoint, "cpu", precision="fp32")
    config = trained.checkpoint["config"]
    split = load_dataset(
        trained.checkpoint["data"], config["val_split"], config["seed"], classes=trained.classes
    ).splits["val"]
    source = batches(
        split, trained.preset.eval_spec(), Loader(trained.device, 64, budget=memory_budget(trained.device))
    )
    out = evaluate(trained.model, source, trained.preset, trained.precision, len(trained.classes))
    order = out.index.argsort()
    return out.logits[order], out.labels[order], [split.paths[i] for i in out.index[order].tolist()]


def cross_fitted(logits: torch.Tensor, labels: torch.Tensor, thresholds: list[float]) -> dict[str, Any]:
    """2-fold: each half's calibrated confidence uses the T fitted on the other half; figures over all of val."""
    halves = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).chunk(2)
    confidence = torch.empty(len(labels), dtype=torch.float64)
    temperatures = []
    for fit_on, measure_on in ((halves[0], halves[1]), (halves[1], halves[0])):
        t, _ = calibration.fit_temperature(logits[fit_on], labels[fit_on])
        temperatures.append(t)
        confidence[measure_on] = calibration.confidence(logits[measure_on].double(), t)
    correct = logits.argmax(1) == labels
    plain = calibration.confidence(logits.double(), 1.0)
    nll_after = sum(
        calibration.nll(logits[m], labels[m], t) * len(m)
        for m, t in ((halves[1], temperatures[0]), (halves[0], temperatures[1]))
    ) / len(labels)
    return {
        "temperatures": temperatures,
        "ece_before": calibration.expected_calibration_error(calibration.reliability(plain, correct)),
        "ece_after": calibration.expected_calibration_error(calibration.reliability(confidence, correct)),
        "nll_before": calibration.nll(logits, labels),
        "nll_after": nll_after,
        "coverage_before": [calibration.selective(plain, correct, t) for t in thresholds],
        "coverage_after": [calibration.selective(confidence, correct, t) for t in thresholds],
    }


def readme_snippet_parity(onnx_file: str, paths: list[Path], checkpoint: Path) -> dict[str, Any]:
    """The README's five lines, run per image as a user would, against catdog predict (top label and prob)."""
    snippet = README.read_text().split("Using the file without catdog")[1].split("```python\n")[1].split("```")[0]
    rows = {r["path"]: r for r in predict(checkpoint, paths, device="cpu", precision="fp32", runtime="torch")}
    code = compile(snippet.replace("runs/train/best.onnx", onnx_file).replace('"photo.jpg"', "PHOTO"), "README", "exec")
    diffs, agree = [], 0
    for path in paths:
        scope: dict[str, Any] = {"PHOTO": str(path), "print": lambda *a: None}
        exec(code, scope)
        probs, classes = scope["probs"], scope["meta"]["classes"]
        row = rows[str(path)]
        agree += classes[int(probs.argmax())] == row["label"]
        diffs.append(abs(float(probs.max()) - row["confidence"]))
    return {"images": len(paths), "max_abs_diff_top_prob": max(diffs), "label_agreement": agree / len(paths)}


def free_name(folder: Path, stem: str, suffix: str) -> Path:
    """stem+suffix, or stem-1+suffix, ...: export never replaces a file, and a reused run folder has one."""
    path, n = folder / f"{stem}{suffix}", 0
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}{suffix}"
    return path


def parity(checkpoint: Path, paths: list[Path], out: Path) -> dict[str, Any]:
    """Both formats: the export's own check (32 images), then every val image; and the README snippet."""
    trained = TrainedModel.load(checkpoint, "cpu", precision="fp32")
    found: dict[str, Any] = {}
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".torchscript")):
        result = export_model(checkpoint, fmt, free_name(out, "model", suffix))
        whole = check_parity(fmt, Path(result["out"]), trained, checkpoint, paths, "val", Events())
        found[fmt] = {"export_check": result["parity"], "whole_val": whole, "file": result["out"]}
    found["readme_snippet"] = readme_snippet_parity(found["onnx"]["file"], paths, checkpoint)
    return found


def timed(fn, repeats: int = 3) -> float:
    """Median seconds of `repeats` runs, after one warm-up run."""
    fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def speed(checkpoint: Path, files: dict[str, str], paths: list[Path], batch: int = 32) -> dict[str, Any]:
    """Images per second on the same images: end to end (decode included) and model only (batch `batch`)."""
    trained = TrainedModel.load(checkpoint, "cpu", precision="fp32")
    preset, n = trained.preset, len(paths)
    split = Split(paths, [0] * n)
    decoded, _ = decode_split(split, preset.eval_spec(), default_workers())
    nchw = decoded.images
    nhwc = nchw.permute(0, 2, 3, 1).contiguous()
    ort, script = (partial(probabilities, RUNNERS[fmt](Path(files[fmt]))) for fmt in ("onnx", "torchscript"))

    def eager() -> None:
        with torch.inference_mode():
            for i in range(0, n, batch):
                trained.model(preset.model_input(decoded.select(torch.arange(i, min(n, i + batch))))).softmax(1)

    def chunks(run) -> None:
        for i in range(0, n, batch):
            run(nhwc[i : i + batch])

    def ort_end_to_end() -> None:  # as predict does: load the model, decode, run
        session = partial(probabilities, RUNNERS["onnx"](Path(files["onnx"])))
        images, _ = decode_split(split, preset.eval_spec(), default_workers())
        crops = images.images.permute(0, 2, 3, 1).contiguous()
        for i in range(0, n, batch):
            session(crops[i : i + batch])

    figures = {
        "end_to_end": {
            "catdog_predict": timed(
                lambda: predict(checkpoint, paths, batch_size=batch, device="cpu", precision="fp32", runtime="torch")
            ),
            "catdog_decode_then_onnxruntime": timed(ort_end_to_end),
        },
        "model_only": {
            "catdog_eager": timed(eager),
            "onnxruntime": timed(lambda: chunks(ort)),
            "torchscript": timed(lambda: chunks(script)),
        },
    }
    return {
        "images": n,
        "batch": batch,
        "torch_threads": torch.get_num_threads(),
        **{k: {name: n / s for name, s in v.items()} for k, v in figures.items()},
        "load_average": load(),
    }


def summary(runs: list[dict[str, Any]], thresholds: list[float]) -> list[dict[str, Any]]:
    """Mean and sd over seeds, per dataset and strategy."""

    def ms(values: list[float | None]) -> list[float] | None:
        """[mean, sd] over the seeds that have a value (accuracy is None where no image reaches a threshold)."""
        known = [v for v in values if v is not None]
        if not known:
            return None
        return [statistics.mean(known), statistics.stdev(known) if len(known) > 1 else 0.0]

    rows = []
    for key in sorted({(r["data"], r["strategy"]) for r in runs}):
        group = [r for r in runs if (r["data"], r["strategy"]) == key]
        cf = [r["cross_fitted"] for r in group]
        row = {
            "data": key[0],
            "strategy": key[1],
            "seeds": len(group),
            "val_acc": ms([r["best_val_acc"] for r in group]),
            "temperature": ms([r["in_sample"]["temperature"] for r in group]),
            "ece_in_sample": {k: ms([r["in_sample"][k] for r in group]) for k in ("ece_before", "ece_after")},
            "ece_cross_fitted": {k: ms([c[k] for c in cf]) for k in ("ece_before", "ece_after")},
            "nll_cross_fitted": {k: ms([c[k] for c in cf]) for k in ("nll_before", "nll_after")},
        }
        for when in ("before", "after"):
            row[f"coverage_{when}"] = [
                {
                    "threshold": t,
                    "coverage": ms([c[f"coverage_{when}"][i]["coverage"] for c in cf]),
                    "accuracy": ms([c[f"coverage_{when}"][i]["accuracy"] for c in cf]),
                }
                for i, t in enumerate(thresholds)
            ]
        rows.append(row)
    return rows


def train_and_measure(data: str, strategy: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out) / f"{Path(data).name}-{strategy}-{seed}"
    config = TrainConfig(
        data,
        backbone=BACKBONE,
        strategy=strategy,
        epochs=args.epochs,
        weights=args.weights,
        image_size=args.image_size,
        seed=seed,
        device="cpu",
    )
    start = time.perf_counter()
    reused = args.reuse and (out / "best.pt").is_file() and (out / "run.json").is_file()
    if reused:
        result = json.loads((out / "run.json").read_text())
        train_seconds = sum(h["seconds"] for h in result["history"])
    else:
        result = fit(config, out)
        train_seconds = time.perf_counter() - start
    logits, labels, paths = val_logits(out / "best.pt")
    record = {
        "data": Path(data).name,
        "strategy": strategy,
        "seed": seed,
        "best_val_acc": result["best_val_acc"],
        "train_seconds": train_seconds,
        "reused": reused,
        "val_images": len(labels),
        "in_sample": {
            k: result["calibration"].get(k)
            for k in ("temperature", "ece_before", "ece_after", "nll_before", "nll_after", "not_fitted")
        },
        "cross_fitted": cross_fitted(logits, labels, args.thresholds),
        "load_average": load(),
    }
    if seed == args.seeds[0]:
        record["parity"] = parity(out / "best.pt", paths, out)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--strategies", default="freeze,finetune")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--thresholds", default="0.9,0.99")
    parser.add_argument("--out", required=True)
    parser.add_argument("--reuse", action="store_true", help="measure run folders an earlier invocation trained")
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.thresholds = [float(t) for t in args.thresholds.split(",")]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    started = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpus": os.cpu_count(),
        "load_average": load(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    runs = [
        train_and_measure(d, s, seed, args)
        for d in args.data
        for s in args.strategies.split(",")
        for seed in args.seeds
    ]
    first = next(r for r in runs if "parity" in r)
    checkpoint = Path(args.out) / f"{first['data']}-{first['strategy']}-{first['seed']}" / "best.pt"
    _, _, paths = val_logits(checkpoint)
    files = {fmt: first["parity"][fmt]["file"] for fmt in ("onnx", "torchscript")}
    results = {
        "machine": started,
        "args": {k: v for k, v in vars(args).items()},
        "summary": summary(runs, args.thresholds),
        "runs": runs,
        "speed": {"checkpoint": str(checkpoint), **speed(checkpoint, files, paths)},
    }
    text = json.dumps(results, indent=2, default=str)
    (Path(args.out) / "results.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
