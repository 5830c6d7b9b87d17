"""The commands that use a trained model: `evaluate`, `predict` and `export`.

Each checks its arguments and output paths before torch loads, then calls inference/ and renders the record.
"""

from __future__ import annotations

from pathlib import Path

import typer

from catdog_cli.cli import render
from catdog_cli.cli.fetch import fetch_first
from catdog_cli.cli.options import (
    DATA_HELP,
    DEFAULT,
    Device,
    Json,
    MinConfidence,
    ModelArg,
    Precision,
    Runtime,
    Tta,
    Unknown,
    UseModelArg,
)
from catdog_cli.cli.options import UseBatchSize as BatchSize
from catdog_cli.cli.output import Output
from catdog_cli.core.defaults import DEFAULT_TTA, INT8_TOLERANCE
from catdog_cli.core.formatting import printable
from catdog_cli.errors import CatdogError


def evaluate(
    model: UseModelArg,
    data: str | None = typer.Option(None, help=DATA_HELP + " Default: the data the model was trained on."),
    split: str = typer.Option("val", help="val, test, train, or all."),
    batch_size: BatchSize = None,
    device: Device = DEFAULT["device"],
    precision: Precision = DEFAULT["precision"],
    runtime: Runtime = "auto",
    report: Path | None = typer.Option(
        None,
        help="Also write an HTML report (curves, confusion, top losses, reliability diagram) here.",
        rich_help_panel="Output",
    ),
    min_confidence: MinConfidence = None,
    tta: Tta = False,
    unknown_data: Path | None = typer.Option(
        None,
        help="A folder of images of neither class: how well the checkpoint's detector tells them apart (AUROC, FPR "
        "at 95% kept, the share caught).",
    ),
    json_output: Json = False,
) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix of a saved model on one split, and how
    well its confidence is calibrated (expected calibration error without and with its temperature).

    With --min-confidence P: the accuracy on the images it is at least P sure about, and what share they are.
    With the checkpoint's unknown-image detector: the share of the split it keeps and the accuracy on those.
    """
    from catdog_cli.core.validate import check_use

    output = Output(json_output)
    fetch_first(data, output)  # a known dataset's name, not there yet: fetched before the check looks for it
    # before torch loads, before any work; evaluate_checkpoint checks nothing again
    checked = check_use(
        model,
        batch_size=batch_size,
        device=device,
        split=split,
        min_confidence=min_confidence,
        precision=precision,
        runtime=runtime,
        tta=tta,
        data=data,
        report=report,
    )
    if unknown_data is not None and not unknown_data.is_dir():
        raise CatdogError(f"--unknown-data {unknown_data} is not a folder of images")
    from catdog_cli.inference.evaluate import evaluate_checkpoint

    with output.events() as events:
        result = evaluate_checkpoint(
            checked,
            data,
            split,
            batch_size,
            device,
            events,
            report=report,
            min_confidence=min_confidence,
            tta=DEFAULT_TTA if tta else None,
            precision=precision,
            unknown_data=unknown_data,
            runtime=runtime,
        )
    if output.json:
        output.emit(result)
        return
    for table in render.evaluation_tables(result):
        output.console.print(table)
    output.console.print(render.throughput_line(result), markup=False)
    if report is not None:
        output.console.print(f"report: {printable(report)}", markup=False)


def predict(
    model: UseModelArg,
    paths: list[Path] = typer.Argument(..., help="Images and/or folders (searched recursively)."),
    top_k: int = typer.Option(1, min=1, help="Also list the k most likely classes (table, CSV and JSON)."),
    batch_size: BatchSize = None,
    device: Device = DEFAULT["device"],
    precision: Precision = DEFAULT["precision"],
    runtime: Runtime = "auto",
    csv_file: Path | None = typer.Option(
        None, "--csv", help="Write the predictions to this (new) CSV file.", rich_help_panel="Output"
    ),
    overwrite: bool = typer.Option(
        False,
        help="Replace the --csv file if it exists (without it, an existing file is refused and left as it is).",
        rich_help_panel="Output",
    ),
    sort_into: Path | None = typer.Option(
        None,
        help="Copy each image into DIR/<predicted class>/ (originals are "
        "untouched; a taken name gets -1, -2, ...); unknown ones into DIR/_unknown/, unsure ones into "
        "DIR/_unsure/<predicted class>/.",
        rich_help_panel="Output",
    ),
    min_confidence: MinConfidence = None,
    unknown: Unknown = True,
    tta: Tta = False,
    explain: Path | None = typer.Option(
        None,
        help="Write a heat-map picture per image into DIR: the crop the model "
        "saw, colored by where it looked for its prediction (Grad-CAM); a taken "
        "name gets -1, -2, ...",
        rich_help_panel="Output",
    ),
    json_output: Json = False,
) -> None:
    """Classify images; one row per image with the predicted class and its calibrated confidence.

    With --min-confidence P, rows below P are marked unsure (the label is kept), in the table, CSV and JSON.
    Images of neither class (the checkpoint's detector) are marked unknown, with their score; --no-unknown: off.
    """
    from catdog_cli.core.validate import check_use

    # before torch loads, before any work; classify checks nothing again
    checked = check_use(
        model,
        batch_size=batch_size,
        device=device,
        top_k=top_k,
        min_confidence=min_confidence,
        precision=precision,
        runtime=runtime,
        tta=tta,
        explain=explain is not None,
    )
    for path in paths:
        if not path.exists():
            raise CatdogError(f"no such file or folder: {path}")
    check_predict_outputs(csv_file, overwrite, {"--sort-into": sort_into, "--explain": explain})
    if csv_file is not None:  # --overwrite replaces a file: never the model or an image it reads
        from catdog_cli.core.paths import check_not_an_input
        from catdog_cli.data.folders import is_image_name

        check_not_an_input(csv_file, [model, *paths], "--csv", is_image_name)
    from catdog_cli.inference.predict import classify

    output = Output(json_output)
    with output.events() as events:
        result = classify(
            checked,
            list(paths),
            top_k,
            batch_size,
            device,
            events,
            min_confidence=min_confidence,
            tta=DEFAULT_TTA if tta else None,
            precision=precision,
            unknown=unknown,
            runtime=runtime,
            explain=explain,
        )
    rows = result["predictions"]
    _write_outputs(output, rows, csv_file, overwrite, sort_into, explain)
    if output.json:
        output.emit(result)
    else:
        output.console.print(render.predictions_table(rows))
        output.console.print(render.throughput_line(result), markup=False)
    if rows and not any("label" in r for r in rows):  # like a compare whose every cell failed: a failure
        raise CatdogError(
            f"none of the {len(rows)} file(s) could be classified; the reasons are listed "
            + ("in the JSON" if output.json else "above")
        )


def check_predict_outputs(csv_file: Path | None, overwrite: bool, folders: dict[str, Path | None]) -> None:
    """predict's output files and folders, refused before any work: an existing CSV stays unless --overwrite."""
    from catdog_cli.core.paths import check_file_name, check_folder_target, check_new_file

    if overwrite and csv_file is None:
        raise CatdogError("--overwrite replaces a --csv file; give --csv FILE with it")
    if csv_file is not None:
        check_file_name(csv_file, "--csv")
    if csv_file is not None and csv_file.exists() and not overwrite:
        raise CatdogError(f"{csv_file} already exists; choose a new --csv file (or add --overwrite to replace it)")
    if csv_file is not None and not csv_file.exists():
        check_new_file(csv_file, "--csv")
    for option, folder in folders.items():
        if folder is not None:
            check_folder_target(folder, option)


def _write_outputs(
    output: Output,
    rows: list,
    csv_file: Path | None,
    overwrite: bool,
    sort_into: Path | None,
    explain: Path | None,
) -> None:
    """predict's files: the copies sorted into class folders (first: a folder that means something else there is
    refused before anything is written), the CSV, the heat maps' count."""
    console = output.console
    if sort_into is not None:
        from catdog_cli.inference.predict import sort_into_folders

        copied = sort_into_folders(rows, sort_into)
        unsure = sum(bool(r.get("unsure")) for r in rows if "copied_to" in r)
        also = f" ({unsure} unsure ones into {printable(sort_into)}/_unsure/<class>/)" if unsure else ""
        console.print(f"copied {copied} image(s) into {printable(sort_into)}/<class>/{also}", markup=False)
    if csv_file is not None:
        from catdog_cli.inference.predict import write_predictions_csv

        write_predictions_csv(csv_file, rows, overwrite=overwrite)
        console.print(f"wrote {printable(csv_file)}", markup=False)
    if explain is not None:
        console.print(
            f"heat maps of {sum('explanation' in r for r in rows)} image(s) in {printable(explain)}", markup=False
        )


def export(
    model: ModelArg,
    fmt: str = typer.Option(
        "onnx",
        "--format",
        help="onnx (runs anywhere onnxruntime does; needs pip install onnx onnxscript onnxruntime, or "
        "pip install -e '.\\[export]' in a clone) or torchscript (torch.jit, libtorch).",
    ),
    out: Path | None = typer.Option(
        None,
        help="The file to write; never replaced (default: beside MODEL, best.onnx or best.torchscript).",
        rich_help_panel="Output",
    ),
    parity_images: Path | None = typer.Option(
        None,
        help="Images or a folder of them to prove parity on (up to "
        "32, spread over it); default: the model's own val split.",
    ),
    int8: bool = typer.Option(
        False,
        help="Quantize the ONNX file to int8 (calibrated on the run's training images), kept only if it loses at most "
        "--int8-tolerance accuracy points on the run's val split (default file: MODEL.int8.onnx).",
    ),
    int8_tolerance: float = typer.Option(INT8_TOLERANCE, help="--int8: accuracy points it may lose (0 to 100)."),
    json_output: Json = False,
) -> None:
    """Write the model as one file that runs without catdog, and prove it agrees with catdog predict.

    The file takes uint8 RGB images, NHWC (N, C, C, 3), at the model's crop size C, any batch size N; it scales,
    normalizes and applies the calibrated temperature inside, and returns class probabilities (N, classes).
    Resize the shorter side and center-crop first: the sizes, the class names and the normalization are in the
    file's metadata.

    Parity: the file and catdog predict on the same real images, on the CPU in fp32; any probability more than
    1e-4 apart, or any label different, fails the export and leaves no file.
    """
    from catdog_cli.core.validate import check_export

    check_export(model, fmt, out, parity_images, int8, int8_tolerance)  # before torch loads, before any work
    from catdog_cli.inference.export import export_model

    output = Output(json_output)
    with output.events() as events:
        result = export_model(model, fmt, out, parity_images, events, int8=int8_tolerance if int8 else None)
    if output.json:
        output.emit(result)
    else:
        output.console.print(render.export_summary(result))
