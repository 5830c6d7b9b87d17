"""`catdog predict` against a plain onnxruntime loop over the same images, side by side, alternating (issue 27).

Each measurement runs in a fresh process, in turn, `--reps` times (the order rotates every round, so a load spike
falls on each variant in turn):

- `plain`: the ten lines a user writes: catdog's own decode (`load_eval_image`: same crop, same JPEG draft) in one
  thread, then onnxruntime on batches of 32 of the exported file;
- `ckpt`: `catdog predict CHECKPOINT` with default options (`--runtime auto`: onnxruntime through the cached export);
- `ckpt-torch`: `--runtime torch` (PyTorch at --precision auto, the default before issue 27);
- `onnx`, `int8`: `catdog predict FILE` on the exported file and its int8 version (when given).

Per run: img/s of the pass (decode included, model load excluded, as predict reports it), the process's peak RSS,
and (first round only) p50/p95 latency of one image at batch 1 and of one batch at the default batch (32), decode
included, over `--latency-images` images. The first call's hidden cost (export + parity proof into .catdog-cache)
is measured once, apart, on a copy of the checkpoint.

    python benchmarks/deploy_predict.py --checkpoint runs/lite0/best.pt --onnx runs/lite0/best.onnx \
        [--int8 runs/lite0/best.int8.onnx] --images data/catdog/val --reps 3 --out results.json
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("plain", "ckpt", "ckpt-torch", "onnx", "int8")


def child(variant: str, model: str, images: str, latency_images: int) -> dict:
    """One measurement, in this (fresh) process."""
    from catdog_cli.core.events import Events
    from catdog_cli.data.dataset import Split
    from catdog_cli.data.folders import collect_images
    from catdog_cli.inference.fastpath import for_images, open_runner
    from catdog_cli.inference.predict import classify
    from catdog_cli.inference.runtimes import LOGITS

    files = collect_images([images])
    if variant == "plain":
        ips = plain_loop(model, files)
    else:
        result = classify(model, files, device="cpu", runtime="torch" if variant == "ckpt-torch" else "auto")
        ips = result["images_per_sec"]
    found = {"variant": variant, "images": len(files), "images_per_sec": ips}
    if variant != "plain" and latency_images:
        runner = for_images(
            open_runner(model, "cpu", runtime="torch" if variant == "ckpt-torch" else "auto"), files, Events()
        )
        found["runtime"] = runner.runtime
        for batch_size in (1, 32):
            source = runner.one_pass(Split(files[:latency_images], [0] * latency_images), batch_size, None)
            times, start = [], time.perf_counter()
            for batch in source:
                runner.outputs(batch)[LOGITS].softmax(1)
                now = time.perf_counter()
                times.append((now - start) * 1000)
                start = now
            times.sort()
            found[f"latency_ms_b{batch_size}"] = {
                "p50": statistics.median(times),
                "p95": times[min(len(times) - 1, int(0.95 * len(times)))],
            }
    found["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return found


def plain_loop(onnx_file: str, files: list[Path]) -> float:
    """The baseline: decode in one thread, then onnxruntime; img/s of the pass (the session is made before)."""
    import numpy as np
    import onnxruntime

    from catdog_cli.data.decode import load_eval_image
    from catdog_cli.inference.export import read_metadata

    pre = read_metadata(onnx_file)["preprocessing"]
    session = onnxruntime.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    start = time.perf_counter()
    for i in range(0, len(files), 32):
        crops = [load_eval_image(p, pre["resize"], pre["crop"]).permute(1, 2, 0).numpy() for p in files[i : i + 32]]
        session.run(None, {"images": np.stack(crops)})
    return len(files) / (time.perf_counter() - start)


def first_call(checkpoint: Path, images: str) -> dict:
    """The export + proof `--runtime auto` makes once per checkpoint: timed on a copy, in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / checkpoint.name
        shutil.copy(checkpoint, copy)
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "catdog_cli", "predict", str(copy), images, "--device", "cpu", "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        total = time.perf_counter() - start
        result = json.loads(out.stdout)
    return {"first_call_s": total, "pass_s": result["seconds"], "runtime": result["runtime"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--onnx", help="the checkpoint's export (catdog export)")
    parser.add_argument("--int8", help="its int8 export (catdog export --int8)")
    parser.add_argument("--images", required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--latency-images", type=int, default=64)
    parser.add_argument("--first-call", action="store_true", help="also time the first call's export, apart")
    parser.add_argument("--out")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.images, args.latency_images)))
        return
    if not (args.checkpoint and args.onnx):
        parser.error("--checkpoint and --onnx are required")
    models = {"plain": args.onnx, "ckpt": args.checkpoint, "ckpt-torch": args.checkpoint, "onnx": args.onnx}
    if args.int8:
        models["int8"] = args.int8
    names = list(models)
    # the cached export exists before the timed runs (its cost is the first call's, measured apart)
    subprocess.run(
        [sys.executable, "-m", "catdog_cli", "predict", args.checkpoint, args.images, "--device", "cpu", "--json"],
        capture_output=True,
        check=True,
    )
    runs = []
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            command = [sys.executable, __file__, "--child", name, "--model", models[name], "--images", args.images]
            command += ["--latency-images", str(args.latency_images if rep == 0 else 0)]  # latency: first round
            found = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
            found.update(rep=rep, at=time.strftime("%H:%M:%S"))
            runs.append(found)
            print(json.dumps(found), flush=True)
    summary = {}
    for name in names:
        mine = [r for r in runs if r["variant"] == name]
        ratios = [
            r["images_per_sec"]
            / next(p["images_per_sec"] for p in runs if p["variant"] == "plain" and p["rep"] == r["rep"])
            for r in mine
        ]
        summary[name] = {
            "images_per_sec": [round(r["images_per_sec"], 1) for r in mine],
            "x_plain": [round(x, 2) for x in ratios],
            "median_x_plain": round(statistics.median(ratios), 2),
            "peak_rss_mib": round(max(r["peak_rss_mib"] for r in mine)),
            **{k: mine[0][k] for k in ("latency_ms_b1", "latency_ms_b32") if k in mine[0]},
        }
    report = {"summary": summary, "runs": runs}
    if args.first_call:
        report["first_call"] = first_call(Path(args.checkpoint), args.images)
    print(json.dumps(report["summary"], indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
