"""The commands that train: `train` (and `train --resume`), `compare` (a grid of runs) and `lr-find`.

The run's config is built from the parsed options by name (`TrainConfig.from_dict`), never from a hand-written
keyword list; every check that needs no torch runs before torch is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from catdog_cli.cli import progress, render
from catdog_cli.cli.compare_table import compare_table
from catdog_cli.cli.fetch import fetch_first
from catdog_cli.cli.options import (
    DEFAULT,
    Augment,
    Backbone,
    Balance,
    BatchSize,
    CacheGib,
    Compile,
    Cutmix,
    Data,
    Device,
    Ema,
    EmaDecay,
    Epochs,
    FreezeEpochs,
    ImageSize,
    Json,
    LabelSmoothing,
    LearningRate,
    Log,
    LogModel,
    LogUri,
    LrRatio,
    Mixup,
    Name,
    Ood,
    OodKeep,
    OptionalData,
    Patience,
    Precision,
    Seed,
    Strategies,
    Strategy,
    ValSplit,
    Weights,
    Workers,
    csv_list,
)
from catdog_cli.cli.output import Output
from catdog_cli.core.defaults import (
    BACKBONE_PRESETS,
    COMPARE_EPOCHS,
    GRID_STRATEGIES,
    GRID_TIME_HELP,
    LR_FIND_MIN_STEPS,
    expand_backbones,
)
from catdog_cli.core.formatting import printable
from catdog_cli.errors import CatdogError
from catdog_cli.tracking.base import check_options as check_tracking

RESUME_HELP = (
    "Continue the run in this folder from its last.pt; options typed again must match (only --device, "
    "--precision, --workers, --cache-gib, --compile may change), except --epochs: more epochs extend the run, "
    "finished or not, with the learning-rate schedule restarted for the added epochs."
)


def config_values(params: dict[str, Any]) -> dict[str, Any]:
    """The parsed options under the config's field names (`--compile` is `compile_model` in Python)."""
    return {"compile" if name == "compile_model" else name: value for name, value in params.items()}


def check_name(name: str | None, out: Path | None, resume: Path | None = None) -> None:
    """--name says where a new run goes, as --out does: one of them; a resumed run keeps its folder."""
    from catdog_cli.core.paths import check_run_name

    if name is None:
        return
    check_run_name(name)
    if out is not None or resume is not None:
        raise CatdogError(f"--name names a new run's folder; {'--resume' if resume else '--out'} already says where")


def train(
    ctx: typer.Context,
    data: OptionalData = None,
    backbone: Backbone = DEFAULT["backbone"],
    strategy: Strategy = DEFAULT["strategy"],
    epochs: Epochs = DEFAULT["epochs"],
    batch_size: BatchSize = DEFAULT["batch_size"],
    lr: LearningRate = DEFAULT["lr"],
    lr_ratio: LrRatio = DEFAULT["lr_ratio"],
    image_size: ImageSize = DEFAULT["image_size"],
    weights: Weights = DEFAULT["weights"],
    device: Device = DEFAULT["device"],
    precision: Precision = DEFAULT["precision"],
    seed: Seed = DEFAULT["seed"],
    val_split: ValSplit = DEFAULT["val_split"],
    augment: Augment = DEFAULT["augment"],
    compile_model: Compile = DEFAULT["compile"],
    cache_gib: CacheGib = DEFAULT["cache_gib"],
    workers: Workers = DEFAULT["workers"],
    freeze_epochs: FreezeEpochs = DEFAULT["freeze_epochs"],
    patience: Patience = DEFAULT["patience"],
    label_smoothing: LabelSmoothing = DEFAULT["label_smoothing"],
    mixup: Mixup = DEFAULT["mixup"],
    cutmix: Cutmix = DEFAULT["cutmix"],
    ema: Ema = DEFAULT["ema"],
    ema_decay: EmaDecay = DEFAULT["ema_decay"],
    balance: Balance = DEFAULT["balance"],
    ood: Ood = DEFAULT["ood"],
    ood_keep: OodKeep = DEFAULT["ood_keep"],
    out: Path | None = typer.Option(
        None, help="Output folder (must be new or empty; default runs/trainN).", rich_help_panel="Output"
    ),
    resume: Path | None = typer.Option(None, help=RESUME_HELP, rich_help_panel="Output"),
    name: Name = None,
    log: Log = None,
    log_uri: LogUri = None,
    log_model: LogModel = False,
    json_output: Json = False,
) -> None:
    """Fit an ImageNet-pretrained backbone to a folder of labeled images; writes best.pt, last.pt, metrics.csv.

    Ctrl-C or SIGTERM finishes the current step, saves last.pt and exits with 130; `--resume OUT` continues,
    `--resume OUT --epochs N` trains a run longer. `--weights runs/x/best.pt` starts a new run from a trained
    model (same backbone; with other classes its head is new).

    At the end a temperature is fitted on the val split, so that confidences are calibrated, and a detector of
    images of neither class (--ood); best.pt keeps both.
    """
    from catdog_cli.core.config import TrainConfig
    from catdog_cli.core.validate import check_options

    output = Output(json_output)
    check_name(name, out, resume)
    check_tracking(log, log_uri, log_model)
    if resume is not None:  # every check here is torch-free: a mistake is answered before torch loads
        if out is not None and out.resolve() != resume.resolve():
            raise CatdogError(f"--out {out}: a resumed run continues in its own folder, {resume}")
        typed = {n: v for n, v in ctx.params.items() if ctx.get_parameter_source(n).name == "COMMANDLINE"}  # by name:
        given = {k: v for k, v in config_values(typed).items() if k in TrainConfig.field_names()}  # typer may vendor
        check_options(given)  # its own click
    elif data is None:
        raise CatdogError("train needs --data DIR (or --resume OUT to continue an interrupted run)")
    else:
        config = TrainConfig.from_dict(config_values(ctx.params))
        fetch_first(config.data, output)
        checked = config.check()  # fit checks nothing again
        if out is not None:
            from catdog_cli.core.paths import check_out_dir

            check_out_dir(out)
    from catdog_cli.tracking.base import follow

    with output.events() as shown, follow(log, "train", shown, log_uri, log_model) as events:
        if resume is not None:
            from catdog_cli.training.resume import resume as resume_run

            result = resume_run(resume, given, events)
        else:
            from catdog_cli.training.loop import fit

            result = fit(checked, out, events, name=name)
        events.finish(result)
    if output.json:
        output.emit(result)
    else:
        output.console.print(render.train_summary(result))
        if "report" in result:
            output.console.print(f"report: {printable(result['report'])}", markup=False)
    if result["interrupted"]:
        raise typer.Exit(130)


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


def compare(
    ctx: typer.Context,
    data: Data = ...,
    backbones: str = typer.Option(
        "seed",
        help="Comma-separated backbones (any of train's) and/or presets: "
        f"{', '.join(BACKBONE_PRESETS)} (listed above).",
        rich_help_panel="Model",
    ),
    strategies: Strategies = ",".join(GRID_STRATEGIES),
    epochs: Epochs = COMPARE_EPOCHS,
    batch_size: BatchSize = DEFAULT["batch_size"],
    lr: LearningRate = DEFAULT["lr"],
    lr_ratio: LrRatio = DEFAULT["lr_ratio"],
    image_size: ImageSize = DEFAULT["image_size"],
    weights: str = typer.Option(DEFAULT["weights"], help=COMPARE_WEIGHTS_HELP, rich_help_panel="Model"),
    device: Device = DEFAULT["device"],
    precision: Precision = DEFAULT["precision"],
    seed: Seed = DEFAULT["seed"],
    val_split: ValSplit = DEFAULT["val_split"],
    cache_gib: CacheGib = DEFAULT["cache_gib"],
    workers: Workers = DEFAULT["workers"],
    freeze_epochs: FreezeEpochs = DEFAULT["freeze_epochs"],
    patience: Patience = DEFAULT["patience"],
    label_smoothing: LabelSmoothing = DEFAULT["label_smoothing"],
    mixup: Mixup = DEFAULT["mixup"],
    cutmix: Cutmix = DEFAULT["cutmix"],
    ema: Ema = DEFAULT["ema"],
    ema_decay: EmaDecay = DEFAULT["ema_decay"],
    balance: Balance = DEFAULT["balance"],
    out: Path | None = typer.Option(
        None, help="Output folder: new, or an earlier compare's to finish it.", rich_help_panel="Output"
    ),
    keep_best: bool = typer.Option(
        False, help="Save the winning cell's model as OUT/best.pt.", rich_help_panel="Output"
    ),
    name: Name = None,
    log: Log = None,
    log_uri: LogUri = None,
    log_model: LogModel = False,
    json_output: Json = False,
) -> None:
    """The grid; its --help (COMPARE_HELP) lists the presets and what a grid costs."""
    from catdog_cli.core.config import CompareConfig, TrainConfig

    train = TrainConfig.from_dict(ctx.params)  # each cell's backbone and strategy: from --backbones, --strategies
    config = CompareConfig(train, backbones=expand_backbones(csv_list(backbones)), strategies=csv_list(strategies))
    output = Output(json_output)
    fetch_first(data, output)
    checked = config.check()  # compare checks nothing again
    check_name(name, out)
    check_tracking(log, log_uri, log_model)
    if out is not None and out.exists() and not out.is_dir():
        raise CatdogError(f"{out} is a file, not a folder; pick a new --out")
    from catdog_cli.core.compare_rows import interrupted_note
    from catdog_cli.tracking.base import follow
    from catdog_cli.training.compare import compare as run_compare
    from catdog_cli.training.compare import failures

    with output.events() as shown, follow(log, "compare", shown, log_uri, log_model) as events:
        result = run_compare(checked, out, events, keep_best, name=name)
        events.finish(result)
    failed = failures(result)
    if failed and len(failed) == len(result["rows"]) and not result["interrupted"]:
        raise CatdogError(
            f"every cell of the grid failed ({len(failed)}); {failed[0]}; see {result['out']}/compare.json"
        )
    if output.json:
        output.emit(result)
    else:
        output.console.print(compare_table(result))
        saved = f"saved in {result['out']} (compare.json, compare.csv, compare.md, report.html)"
        output.console.print(printable(saved), markup=False)
        output.console.print(f"report: {printable(Path(result['out']) / 'report.html')}", markup=False)
    for line in failed if output.json else ():  # the table lists them under it; with --json, stderr does
        output.progress.print(f"[red]failed:[/] {progress.safe(line)}", highlight=False)
    if result["interrupted"]:
        output.progress.print(f"[bold red]{progress.safe(interrupted_note(result))}[/]", highlight=False)
        raise typer.Exit(130)


def lr_find(
    ctx: typer.Context,
    data: Data = ...,
    backbone: Backbone = DEFAULT["backbone"],
    strategies: str = typer.Option(
        ",".join(GRID_STRATEGIES), help="Comma-separated strategies to test.", rich_help_panel="Model"
    ),
    batch_size: BatchSize = DEFAULT["batch_size"],
    lr_ratio: LrRatio = DEFAULT["lr_ratio"],
    image_size: ImageSize = DEFAULT["image_size"],
    weights: Weights = DEFAULT["weights"],
    device: Device = DEFAULT["device"],
    seed: Seed = DEFAULT["seed"],
    val_split: ValSplit = DEFAULT["val_split"],
    augment: Augment = DEFAULT["augment"],
    steps: int = typer.Option(
        100,
        min=LR_FIND_MIN_STEPS,
        help="Steps of the test (a small dataset is cycled through).",
        rich_help_panel="Recipe",
    ),
    start_lr: float = typer.Option(1e-7, help="The head's learning rate at the first step.", rich_help_panel="Recipe"),
    end_lr: float = typer.Option(
        10.0,
        help="...and at the last, at most 1e6 (the test stops sooner when the loss blows up).",
        rich_help_panel="Recipe",
    ),
    cache_gib: CacheGib = DEFAULT["cache_gib"],
    workers: Workers = DEFAULT["workers"],
    out: Path | None = typer.Option(
        None,
        help="Output folder for lr_find.html and lr_find.json (new or empty; default runs/lr-findN).",
        rich_help_panel="Output",
    ),
    name: Name = None,
    log: Log = None,
    log_uri: LogUri = None,
    json_output: Json = False,
) -> None:
    """Learning-rate range test: train briefly while the lr grows exponentially, plot the loss against it, and
    suggest an --lr per strategy (halfway down the longest fall of the loss). Nothing is trained for keeps."""
    from catdog_cli.core.config import TrainConfig, check_lr_find
    from catdog_cli.core.paths import check_out_dir

    tested = csv_list(strategies)
    output = Output(json_output)
    fetch_first(data, output)
    checked = check_lr_find(TrainConfig.from_dict(ctx.params), tested, start_lr, end_lr, steps)  # before torch loads
    if out is not None:
        check_out_dir(out)
    check_name(name, out)
    check_tracking(log, log_uri)
    from catdog_cli.tracking.base import follow
    from catdog_cli.training.lr_find import find_lr

    with output.events() as shown, follow(log, "lr-find", shown, log_uri) as events:
        result = find_lr(checked, tested, out, events, start_lr, end_lr, steps, name=name)
        events.finish(result)
    if output.json:
        output.emit(result)
        return
    for curve in result["curves"]:
        output.console.print(f"[bold]{curve['strategy']}[/]: loss against the head's lr", highlight=False)
        output.console.print(render.lr_plot(curve), markup=False, highlight=False)
    output.console.print(render.lr_find_table(result))
    output.console.print(f"report: {result['report']}", markup=False)
