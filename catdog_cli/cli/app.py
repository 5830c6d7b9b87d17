"""The `catdog` command line: parse options, call the engine, render the result. Nothing else lives here."""

from __future__ import annotations

import dataclasses
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from catdog_cli import __version__
from catdog_cli.cli import render
from catdog_cli.core.defaults import (
    BACKBONE_PRESETS,
    DEFAULT_BACKBONE,
    DEFAULT_TTA,
    GRID_STRATEGIES,
    GRID_TIME_HELP,
    LR_FIND_MIN_STEPS,
    PRECISIONS,
    expand_backbones,
)
from catdog_cli.core.formatting import printable
from catdog_cli.core.world import World
from catdog_cli.errors import OUT_OF_MEMORY, CatdogError, out_of_memory


@dataclass
class Session:
    """What the root options set for the whole invocation (click's ctx.obj)."""

    debug: bool = False


def _error_line(message: str) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)


def _user_message(exc: Exception) -> str:
    """One line for an error of the user's input or environment. An OSError that no check foresaw (a file that
    cannot be read, a full disk) is the environment's, not a bug: its reason and the file it concerns."""
    if out_of_memory(exc):
        return OUT_OF_MEMORY
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return str(exc)


# click's base error, as the click that typer runs on defines it (typer may vendor its own copy of click)
CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class CatdogGroup(TyperGroup):
    """Errors a user can cause (running out of GPU memory included) end as one red line and exit code 1;
    `--debug` shows the traceback instead. An option click refuses (a word where a number goes, a value out of
    range) is one line too, with exit code 2. Ctrl-C exits with 130, as shells do."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except CLICK_ERROR as exc:  # click's own usage errors, drawn as a one-line error, not a box
            hint = f" (see `{exc.ctx.command_path} --help`)" if getattr(exc, "ctx", None) else ""
            _error_line(" ".join(exc.format_message().split()) + hint)
            code = exc.exit_code
        except typer.Abort:
            _error_line("aborted")
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            debug = isinstance(ctx.obj, Session) and ctx.obj.debug
            if debug or not (isinstance(exc, (CatdogError, OSError)) or out_of_memory(exc)):
                raise
            if isinstance(exc, BrokenPipeError):  # `catdog ... | head`: typer leaves quietly
                raise
            _error_line(_user_message(exc))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            if isinstance(ctx.obj, Session) and ctx.obj.debug:
                raise
            Console(stderr=True).print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=CatdogGroup,
    help="Image classification by transfer learning: fetch a dataset, train a pretrained backbone on it, "
    "evaluate, predict, and compare backbones and strategies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"catdog {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    ctx.obj = Session(debug=debug)
    # Pillow warns about images over 89 M pixels; catdog applies its own limit and names each file it refuses
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")


def _speaks() -> bool:
    """Under torchrun every rank runs this CLI; only rank 0 speaks."""
    return World.from_env().main


def _console(json_output: bool) -> Console:
    """Human output goes to stderr when stdout carries JSON, so scripts can parse stdout."""
    return render.console(stderr=json_output, quiet=not _speaks())


def _progress_console() -> Console:
    """Progress bars, per-epoch lines and warnings go to stderr; stdout carries only the results."""
    return render.console(stderr=True, quiet=not _speaks())


def _emit_json(obj: Any) -> None:
    if _speaks():
        from catdog_cli.core.records import to_json

        sys.stdout.write(to_json(obj) + "\n")


# options that several commands share: one definition each
BatchSize = Annotated[int | None, typer.Option(min=1, help="Images per step (default 32 on CPU, 64 on CUDA).")]
LearningRate = Annotated[
    float | None,
    typer.Option(
        help="Learning rate of the new head (default: 1e-4 for finetune, 1e-3 for freeze and discriminative)."
    ),
]
LrRatio = Annotated[float, typer.Option(help="discriminative: how many times slower the backbone learns.")]
ImageSize = Annotated[int | None, typer.Option(min=16, help="Crop size fed to the model (default 224).")]
Weights = Annotated[
    str,
    typer.Option(
        help="default (ImageNet, downloaded once), none (random init), or PATH: a "
        "state dict, or a catdog checkpoint (runs/x/best.pt) to start a new run from."
    ),
]
Seed = Annotated[
    int, typer.Option(help="Seed for the val split, the head's init, shuffling and augmentation (0 to 4294967295).")
]
ValSplit = Annotated[float, typer.Option(min=0.0, max=0.9, help="Val fraction when the data has no val folder.")]
CacheGib = Annotated[
    float | None,
    typer.Option(
        help="Memory for decoded images (default: half the free GPU memory or a quarter of RAM); "
        "larger datasets are decoded per batch (0: always)."
    ),
]
Workers = Annotated[
    int | None, typer.Option(help="Decoding threads/processes (default: one per core; 0 decodes in the main process).")
]
Device = Annotated[str, typer.Option(help="auto (CUDA if available), cpu, or cuda[:N].")]
MinConfidence = Annotated[
    float | None,
    typer.Option(min=0.0, max=1.0, help=("A calibrated confidence (0-1) below which a prediction counts as unsure.")),
]
# the training recipe (benchmarks/README.md: what each did on real data)
FreezeEpochs = Annotated[int, typer.Option(min=1, help="freeze-unfreeze: epochs that train the head alone.")]
Patience = Annotated[
    int | None,
    typer.Option(
        min=1, help="Stop after N epochs without a better val accuracy (ties: lower val loss); default: never."
    ),
]
LabelSmoothing = Annotated[float, typer.Option(min=0.0, max=0.99, help="Label smoothing of the loss (e.g. 0.1).")]
Mixup = Annotated[
    float,
    typer.Option(min=0.0, help="MixUp: blend image pairs and their labels, weight ~ Beta(A, A) (e.g. 0.2); 0: off."),
]
Cutmix = Annotated[
    float,
    typer.Option(
        min=0.0,
        help="CutMix: paste a box of another image, labels by area, ~ Beta(A, A) (e.g. 1.0); 0: off. "
        "With --mixup too, each batch uses one of them.",
    ),
]
Ema = Annotated[
    bool,
    typer.Option(
        help="Also keep an exponential moving average of the weights; best.pt takes it when it scores better on val."
    ),
]
EmaDecay = Annotated[float, typer.Option(help="--ema: decay per step (warmed up: min(decay, (1+n)/(10+n))).")]
Balance = Annotated[
    bool,
    typer.Option(
        help="Imbalanced classes: draw training images with inverse-frequency class weights, so each class comes "
        "about equally often."
    ),
]
Tta = Annotated[
    bool,
    typer.Option(
        help=f"Test-time augmentation ({DEFAULT_TTA}): average the probabilities over the centre and four corner "
        "crops of the eval resize, each also mirrored (10 passes: slower)."
    ),
]
PrecisionOption = Annotated[
    str,
    typer.Option(
        "--precision",
        help=f"{', '.join(PRECISIONS)}. auto: bf16 autocast + channels_last on GPUs and on CPUs that "
        "do bf16 natively (AVX512-BF16, AMX), else fp32 (fp16 on GPUs without bf16).",
    ),
]

DATA_HELP = "A folder (DIR/train/<class>/*, DIR/val/<class>/*, or DIR/<class>/*) or the name of a fetched dataset."
JSON_HELP = "Print one JSON document on stdout and nothing else there."


def _fetch_weights(backbones: list[str]) -> dict[str, Path]:
    """Download torchvision's ImageNet weights into the torch hub cache, so training later works offline."""
    from catdog_cli.models.backbones import prefetch_weights  # imports torch: only pay for it when asked

    return {b: Path(prefetch_weights(b)) for b in backbones}


def _check_fetch(
    names: list[str], root: Path | None, source: str | None, sha256: str | None, backbones: list[str], registry: Any
) -> None:
    """fetch's options, before any download."""
    from catdog_cli.core.config import check_backbone
    from catdog_cli.core.paths import check_folder_target

    if root is not None:  # a file, a path below a file, a read-only place
        check_folder_target(root, "--root")
    for backbone in backbones:
        check_backbone(backbone)
    if not names and source is None and not backbones:
        raise CatdogError(
            f"nothing to fetch: name a dataset ({', '.join(registry)}), give --from PATH_OR_URL, or --weights BACKBONE"
        )
    if len(names) > 1 and (source is not None or sha256 is not None):
        raise CatdogError("--from and --sha256 describe one archive: fetch one dataset at a time with them")


@app.command()
def fetch(
    names: list[str] = typer.Argument(None, help="Datasets to fetch: hymenoptera, catdog, petimages."),
    root: Path | None = typer.Option(None, help="Where datasets go (default: the data root, or $CATDOG_HOME)."),
    source: str | None = typer.Option(None, "--from", help="A local archive, folder or URL to use instead."),
    sha256: str | None = typer.Option(None, help="Expected sha256 of the --from archive."),
    force: bool = typer.Option(False, help="Fetch again even if the dataset is already complete."),
    weights: list[str] = typer.Option(None, help="Also download torchvision ImageNet weights for these backbones."),
    max_size: float | None = typer.Option(
        None,
        "--max-size",
        metavar="GIB",
        help="The most a fetch may download, unpack or copy, in GiB (default 20, "
        "and an archive at most 100 times its own size: a zip bomb is refused); given, it is the only limit.",
    ),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Download a named dataset (or take a local archive), verify it, and lay it out for training."""
    from catdog_cli.data import fetch as fetching

    fetching.check_options(root, sha256, max_size)
    names = list(names or [])
    backbones = [b for w in weights or [] for b in w.split(",") if b]
    _check_fetch(names, root, source, sha256, backbones, fetching.REGISTRY)
    console = _console(json_output)
    summaries = []
    for name in names or ([None] if source is not None else []):
        bar = render.FetchBar(_progress_console())
        try:
            summaries.append(
                fetching.fetch(
                    name, root=root, source=source, sha256=sha256, force=force, max_size=max_size, progress=bar
                )
            )
        finally:
            bar.done()
    paths = _fetch_weights(backbones) if backbones else {}

    if json_output:
        _emit_json({"datasets": [d.to_json() for d in summaries], "weights": {b: str(p) for b, p in paths.items()}})
        return
    if summaries:
        console.print(render.fetch_table(summaries))
    for d in summaries:
        for file, reason in d.skipped[:10]:
            console.print(f"[yellow]skipped[/] {render.safe(f'{d.name}: {file} ({reason})')}", highlight=False)
        if len(d.skipped) > 10:
            console.print(f"[yellow]skipped[/] {render.safe(d.name)}: {len(d.skipped) - 10} more (see --json)")
    for b, p in paths.items():
        console.print(f"weights {b}: {printable(p)}", highlight=False, markup=False)


@app.command()
def train(
    ctx: typer.Context,
    data: str | None = typer.Option(None, help=DATA_HELP),
    backbone: str = typer.Option(DEFAULT_BACKBONE, help="A torchvision model (resnet34, vgg16_bn, ...) or timm:NAME."),
    strategy: str = typer.Option(
        "finetune",
        help="finetune (all layers, one LR), freeze (only the new head), "
        "discriminative (backbone at --lr / --lr-ratio, head at --lr), freeze-unfreeze (--freeze-epochs head "
        "only, then as discriminative).",
    ),
    epochs: int = typer.Option(10, min=1, help="Passes over the training images."),
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    lr_ratio: LrRatio = 10.0,
    image_size: ImageSize = None,
    weights: Weights = "default",
    device: Device = "auto",
    precision: PrecisionOption = "auto",
    seed: Seed = 0,
    val_split: ValSplit = 0.2,
    augment: bool = typer.Option(True, help="RandomResizedCrop + flip on training images."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model (slow start, faster steps)."),
    cache_gib: CacheGib = None,
    workers: Workers = None,
    freeze_epochs: FreezeEpochs = 1,
    patience: Patience = None,
    label_smoothing: LabelSmoothing = 0.0,
    mixup: Mixup = 0.0,
    cutmix: Cutmix = 0.0,
    ema: Ema = False,
    ema_decay: EmaDecay = 0.999,
    balance: Balance = False,
    out: Path | None = typer.Option(None, help="Output folder (must be new or empty; default runs/trainN)."),
    resume: Path | None = typer.Option(
        None,
        help="Continue the run in this folder from its last.pt; options "
        "typed again must match (only --device, --precision, --workers, --cache-gib, "
        "--compile may change), except --epochs: more epochs extend the run, finished "
        "or not, with the learning-rate schedule restarted for the added epochs.",
    ),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Fit an ImageNet-pretrained backbone to a folder of labeled images; writes best.pt, last.pt, metrics.csv.

    Ctrl-C or SIGTERM finishes the current step, saves last.pt and exits with 130; `--resume OUT` continues,
    `--resume OUT --epochs N` trains a run longer. `--weights runs/x/best.pt` starts a new run from a trained
    model (same backbone; with other classes its head is new). At the end a temperature is fitted on the val
    split, so that confidences are calibrated; best.pt keeps it.
    """
    from catdog_cli.core.config import TrainConfig, check_options

    console = _console(json_output)
    if resume is not None:  # every check here is torch-free: a mistake is answered before torch loads
        if out is not None and out.resolve() != resume.resolve():
            raise CatdogError(f"--out {out}: a resumed run continues in its own folder, {resume}")
        typed = {
            "compile" if n == "compile_model" else n: v
            for n, v in ctx.params.items()  # by name: typer
            if ctx.get_parameter_source(n).name == "COMMANDLINE"
        }  # may vendor its own click
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        given = {k: v for k, v in typed.items() if k in fields}
        check_options(given)
    elif data is None:
        raise CatdogError("train needs --data DIR (or --resume OUT to continue an interrupted run)")
    else:
        config = TrainConfig(
            data,
            backbone=backbone,
            strategy=strategy,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            lr_ratio=lr_ratio,
            image_size=image_size,
            weights=weights,
            device=device,
            precision=precision,
            seed=seed,
            val_split=val_split,
            augment=augment,
            compile=compile_model,
            cache_gib=cache_gib,
            workers=workers,
            freeze_epochs=freeze_epochs,
            patience=patience,
            label_smoothing=label_smoothing,
            mixup=mixup,
            cutmix=cutmix,
            ema=ema,
            ema_decay=ema_decay,
            balance=balance,
        )
        config.check()
        if out is not None:
            from catdog_cli.core.paths import check_out_dir

            check_out_dir(out)
    with render.RichEvents(_progress_console()) as events:
        if resume is not None:
            from catdog_cli.training.resume import resume as resume_run

            result = resume_run(resume, given, events)
        else:
            from catdog_cli.training.loop import fit

            result = fit(config, out, events)
    if json_output:
        _emit_json(result)
    else:
        console.print(render.train_summary(result))
        if "report" in result:
            console.print(f"report: {printable(result['report'])}", markup=False)
    if result["interrupted"]:
        raise typer.Exit(130)


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="A checkpoint written by train (best.pt)."),
    data: str | None = typer.Option(None, help=DATA_HELP + " Default: the data the model was trained on."),
    split: str = typer.Option("val", help="val, test, train, or all."),
    batch_size: int | None = typer.Option(None, min=1, help="Images per batch."),
    device: Device = "auto",
    precision: PrecisionOption = "auto",
    report: Path | None = typer.Option(
        None, help="Also write an HTML report (curves, confusion, top losses, reliability diagram) here."
    ),
    min_confidence: MinConfidence = None,
    tta: Tta = False,
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix of a saved model on one split, and how
    well its confidence is calibrated (expected calibration error without and with its temperature).

    With --min-confidence P: the accuracy on the images it is at least P sure about, and what share they are.
    """
    from catdog_cli.core.config import check_use
    from catdog_cli.core.paths import check_new_file, resolve_data

    # before torch loads, before any work
    check_use(
        model, batch_size=batch_size, device=device, split=split, min_confidence=min_confidence, precision=precision
    )
    if data is not None:
        resolve_data(data)
    if report is not None:
        check_new_file(report, "--report")
    from catdog_cli.inference.evaluate import evaluate_checkpoint

    console = _console(json_output)
    with render.RichEvents(_progress_console()) as events:
        result = evaluate_checkpoint(
            model,
            data,
            split,
            batch_size,
            device,
            events,
            report=report,
            min_confidence=min_confidence,
            tta=DEFAULT_TTA if tta else None,
            precision=precision,
        )
    if json_output:
        _emit_json(result)
    else:
        for table in render.evaluation_tables(result):
            console.print(table)
        console.print(render.throughput_line(result), markup=False)
        if report is not None:
            console.print(f"report: {printable(report)}", markup=False)


@app.command()
def predict(
    model: Path = typer.Argument(..., help="A checkpoint written by train (best.pt)."),
    paths: list[Path] = typer.Argument(..., help="Images and/or folders (searched recursively)."),
    top_k: int = typer.Option(1, min=1, help="Also list the k most likely classes (table, CSV and JSON)."),
    batch_size: int | None = typer.Option(None, min=1, help="Images per batch."),
    device: Device = "auto",
    precision: PrecisionOption = "auto",
    csv_file: Path | None = typer.Option(None, "--csv", help="Write the predictions to this (new) CSV file."),
    overwrite: bool = typer.Option(
        False, help="Replace the --csv file if it exists (without it, an existing file is refused and left as it is)."
    ),
    sort_into: Path | None = typer.Option(
        None,
        help="Copy each image into DIR/<predicted class>/ (originals are "
        "untouched; a taken name gets -1, -2, ...); unsure ones into "
        "DIR/_unsure/<predicted class>/.",
    ),
    min_confidence: MinConfidence = None,
    tta: Tta = False,
    explain: Path | None = typer.Option(
        None,
        help="Write a heat-map picture per image into DIR: the crop the model "
        "saw, colored by where it looked for its prediction (Grad-CAM); a taken "
        "name gets -1, -2, ...",
    ),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Classify images; one row per image with the predicted class and its calibrated confidence.

    With --min-confidence P, rows below P are marked unsure (the label is kept), in the table, CSV and JSON.
    """
    from catdog_cli.core.config import check_use

    # before torch loads, before any work
    check_use(
        model, batch_size=batch_size, device=device, top_k=top_k, min_confidence=min_confidence, precision=precision
    )
    for path in paths:
        if not path.exists():
            raise CatdogError(f"no such file or folder: {path}")
    _check_predict_outputs(csv_file, overwrite, {"--sort-into": sort_into, "--explain": explain})
    from catdog_cli.inference.predict import classify

    console = _console(json_output)
    with render.RichEvents(_progress_console()) as events:
        result = classify(
            model,
            list(paths),
            top_k,
            batch_size,
            device,
            events,
            min_confidence=min_confidence,
            tta=DEFAULT_TTA if tta else None,
            precision=precision,
        )
        rows = result["predictions"]
        if explain is not None:
            _explain(model, rows, explain, batch_size, device, events)
    if csv_file is not None:
        from catdog_cli.inference.predict import write_predictions_csv

        write_predictions_csv(csv_file, rows, overwrite=overwrite)
        console.print(f"wrote {printable(csv_file)}", markup=False)
    if explain is not None:
        console.print(
            f"heat maps of {sum('explanation' in r for r in rows)} image(s) in {printable(explain)}", markup=False
        )
    if sort_into is not None:
        from catdog_cli.inference.predict import sort_into_folders

        copied = sort_into_folders(rows, sort_into)
        unsure = sum(bool(r.get("unsure")) for r in rows if "copied_to" in r)
        also = f" ({unsure} unsure ones into {printable(sort_into)}/_unsure/<class>/)" if unsure else ""
        console.print(f"copied {copied} image(s) into {printable(sort_into)}/<class>/{also}", markup=False)
    if json_output:
        _emit_json(result)
    else:
        console.print(render.predictions_table(rows))
        console.print(render.throughput_line(result), markup=False)
    if rows and not any("label" in r for r in rows):  # like a compare whose every cell failed: a failure
        raise CatdogError(
            f"none of the {len(rows)} file(s) could be classified; the reasons are listed "
            + ("in the JSON" if json_output else "above")
        )


@app.command()
def export(
    model: Path = typer.Argument(..., help="A checkpoint written by train (best.pt)."),
    fmt: str = typer.Option(
        "onnx",
        "--format",
        help="onnx (runs anywhere onnxruntime does; needs pip install "
        "'catdog-cli\\[export]') or torchscript (torch.jit, libtorch).",
    ),
    out: Path | None = typer.Option(
        None, help="The file to write; never replaced (default: beside MODEL, best.onnx or best.torchscript)."
    ),
    parity_images: Path | None = typer.Option(
        None,
        help="Images or a folder of them to prove parity on (up to "
        "32, spread over it); default: the model's own val split.",
    ),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Write the model as one file that runs without catdog, and prove it agrees with catdog predict.

    The file takes uint8 RGB images, NHWC (N, C, C, 3), at the model's crop size C, any batch size N; it scales,
    normalizes and applies the calibrated temperature inside, and returns class probabilities (N, classes).
    Resize the shorter side and center-crop first: the sizes, the class names and the normalization are in the
    file's metadata. Parity: the file and catdog predict on the same real images, on the CPU in fp32; any
    probability more than 1e-4 apart, or any label different, fails the export and leaves no file.
    """
    from catdog_cli.core.config import check_export

    check_export(model, fmt, out, parity_images)  # before torch loads, before any work
    from catdog_cli.inference.export import export_model

    console = _console(json_output)
    with render.RichEvents(_progress_console()) as events:
        result = export_model(model, fmt, out, parity_images, events)
    if json_output:
        _emit_json(result)
    else:
        console.print(render.export_summary(result))


def _check_predict_outputs(csv_file: Path | None, overwrite: bool, folders: dict[str, Path | None]) -> None:
    """predict's output files and folders, refused before any work: an existing CSV stays unless --overwrite."""
    from catdog_cli.core.paths import check_folder_target, check_new_file

    if overwrite and csv_file is None:
        raise CatdogError("--overwrite replaces a --csv file; give --csv FILE with it")
    if csv_file is not None and csv_file.exists() and not overwrite:
        raise CatdogError(f"{csv_file} already exists; choose a new --csv file (or add --overwrite to replace it)")
    if csv_file is not None and not csv_file.exists():
        check_new_file(csv_file, "--csv")
    for option, folder in folders.items():
        if folder is not None:
            check_folder_target(folder, option)


def _explain(
    checkpoint: Path, rows: list, folder: Path, batch_size: int | None, device: str, events: render.RichEvents
) -> None:
    from catdog_cli.inference.explain import explain_predictions
    from catdog_cli.inference.trained import TrainedModel

    explain_predictions(TrainedModel.load(checkpoint, device), rows, folder, batch_size, events)


def _csv_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


COMPARE_HELP = (
    "Train every strategy on several backbones back to back and print one table to choose from.\n\n"
    "Backbone presets (--backbones): "
    + "; ".join(f"{name}: {', '.join(names)}" for name, names in BACKBONE_PRESETS.items())
    + ".\n\n"
    + GRID_TIME_HELP
)
COMPARE_WEIGHTS_HELP = (
    "default (ImageNet, downloaded once), none (random init), one PATH (a grid of one backbone), "
    "NAME=PATH,NAME=PATH (one file per backbone; NAME=default or NAME=none also work), or a folder of files "
    "named after their backbones (resnet18.pth, or resnet18-f37072fd.pth as torchvision caches it): offline grids."
)


@app.command(help=COMPARE_HELP)
def compare(
    data: str = typer.Option(..., help=DATA_HELP),
    backbones: str = typer.Option(
        "seed",
        help="Comma-separated backbones (any of train's) and/or presets: "
        f"{', '.join(BACKBONE_PRESETS)} (listed above).",
    ),
    strategies: str = typer.Option(
        ",".join(GRID_STRATEGIES), help="Comma-separated strategies (freeze-unfreeze too, when named)."
    ),
    epochs: int = typer.Option(3, min=1, help="Epochs per cell (the same for every cell)."),
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    lr_ratio: LrRatio = 10.0,
    image_size: ImageSize = None,
    weights: str = typer.Option("default", help=COMPARE_WEIGHTS_HELP),
    device: Device = "auto",
    precision: PrecisionOption = "auto",
    seed: Seed = 0,
    val_split: ValSplit = 0.2,
    cache_gib: CacheGib = None,
    workers: Workers = None,
    freeze_epochs: FreezeEpochs = 1,
    patience: Patience = None,
    label_smoothing: LabelSmoothing = 0.0,
    mixup: Mixup = 0.0,
    cutmix: Cutmix = 0.0,
    ema: Ema = False,
    ema_decay: EmaDecay = 0.999,
    balance: Balance = False,
    out: Path | None = typer.Option(None, help="Output folder: new, or an earlier compare's to finish it."),
    keep_best: bool = typer.Option(False, help="Save the winning cell's model as OUT/best.pt."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """The grid; its --help (COMPARE_HELP) lists the presets and what a grid costs."""
    from catdog_cli.core.config import CompareConfig, TrainConfig

    train = TrainConfig(
        data,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lr_ratio=lr_ratio,
        image_size=image_size,
        weights=weights,
        device=device,
        precision=precision,
        seed=seed,
        val_split=val_split,
        cache_gib=cache_gib,
        workers=workers,
        freeze_epochs=freeze_epochs,
        patience=patience,
        label_smoothing=label_smoothing,
        mixup=mixup,
        cutmix=cutmix,
        ema=ema,
        ema_decay=ema_decay,
        balance=balance,
    )
    config = CompareConfig(train, backbones=expand_backbones(_csv_list(backbones)), strategies=_csv_list(strategies))
    config.check()
    if out is not None and out.exists() and not out.is_dir():
        raise CatdogError(f"{out} is a file, not a folder; pick a new --out")
    from catdog_cli.core.records import interrupted_note
    from catdog_cli.training.compare import compare as run_compare
    from catdog_cli.training.compare import failures

    console = _console(json_output)
    with render.RichEvents(_progress_console()) as events:
        result = run_compare(config, out, events, keep_best)
    failed = failures(result)
    if failed and len(failed) == len(result["rows"]) and not result["interrupted"]:
        raise CatdogError(
            f"every cell of the grid failed ({len(failed)}); {failed[0]}; see {result['out']}/compare.json"
        )
    if json_output:
        _emit_json(result)
    else:
        console.print(render.compare_table(result))
        saved = f"saved in {result['out']} (compare.json, compare.csv, compare.md, report.html)"
        console.print(printable(saved), markup=False)
        console.print(f"report: {printable(Path(result['out']) / 'report.html')}", markup=False)
    notes = _progress_console()
    for line in failed if json_output else ():  # the table lists them under it; with --json, stderr does
        notes.print(f"[red]failed:[/] {render.safe(line)}", highlight=False)
    if result["interrupted"]:
        notes.print(f"[bold red]{render.safe(interrupted_note(result))}[/]", highlight=False)
        raise typer.Exit(130)


@app.command("lr-find")
def lr_find(
    data: str = typer.Option(..., help=DATA_HELP),
    backbone: str = typer.Option(DEFAULT_BACKBONE, help="A torchvision model (resnet34, vgg16_bn, ...) or timm:NAME."),
    strategies: str = typer.Option(",".join(GRID_STRATEGIES), help="Comma-separated strategies to test."),
    batch_size: BatchSize = None,
    lr_ratio: LrRatio = 10.0,
    image_size: ImageSize = None,
    weights: Weights = "default",
    device: Device = "auto",
    seed: Seed = 0,
    val_split: ValSplit = 0.2,
    augment: bool = typer.Option(True, help="RandomResizedCrop + flip on training images, as train would."),
    steps: int = typer.Option(
        100, min=LR_FIND_MIN_STEPS, help="Steps of the test (a small dataset is cycled through)."
    ),
    start_lr: float = typer.Option(1e-7, help="The head's learning rate at the first step."),
    end_lr: float = typer.Option(
        10.0, help="...and at the last, at most 1e6 (the test stops sooner when the loss blows up)."
    ),
    cache_gib: CacheGib = None,
    workers: Workers = None,
    out: Path | None = typer.Option(
        None, help="Output folder for lr_find.html and lr_find.json (new or empty; default runs/lr-findN)."
    ),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Learning-rate range test: train briefly while the lr grows exponentially, plot the loss against it, and
    suggest an --lr per strategy (halfway down the longest fall of the loss). Nothing is trained for keeps."""
    from catdog_cli.core.config import TrainConfig, check_lr_find
    from catdog_cli.core.paths import check_out_dir

    config = TrainConfig(
        data,
        backbone=backbone,
        batch_size=batch_size,
        lr_ratio=lr_ratio,
        image_size=image_size,
        weights=weights,
        device=device,
        seed=seed,
        val_split=val_split,
        augment=augment,
        cache_gib=cache_gib,
        workers=workers,
    )
    check_lr_find(config, _csv_list(strategies), start_lr, end_lr, steps)  # before torch loads
    if out is not None:
        check_out_dir(out)
    from catdog_cli.training.lr_find import find_lr

    console = _console(json_output)
    with render.RichEvents(_progress_console()) as events:
        result = find_lr(config, _csv_list(strategies), out, events, start_lr, end_lr, steps)
    if json_output:
        _emit_json(result)
        return
    for curve in result["curves"]:
        console.print(f"[bold]{curve['strategy']}[/]: loss against the head's lr", highlight=False)
        console.print(render.lr_plot(curve), markup=False, highlight=False)
    console.print(render.lr_find_table(result))
    console.print(f"report: {result['report']}", markup=False)


def main() -> None:
    try:
        app()
    finally:
        # only a command that trained can have joined a process group
        if "catdog_cli.runtime.distributed" in sys.modules:
            sys.modules["catdog_cli.runtime.distributed"].shutdown()
