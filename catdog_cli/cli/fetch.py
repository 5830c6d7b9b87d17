"""`catdog fetch`: datasets (named, or a local archive or URL) and torchvision's weights, before any training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from catdog_cli.cli import progress, render
from catdog_cli.cli.options import Json
from catdog_cli.cli.output import Output
from catdog_cli.core.formatting import printable
from catdog_cli.errors import CatdogError


def fetch_weights(backbones: list[str]) -> dict[str, Path]:
    """Download torchvision's ImageNet weights into the torch hub cache, so training later works offline."""
    from catdog_cli.models.backbones import prefetch_weights  # imports torch: only pay for it when asked

    return {b: Path(prefetch_weights(b)) for b in backbones}


def fetch_first(data: str | None, output: Output) -> None:
    """`--data NAME` of a known dataset that is not there yet is fetched before the command goes on
    (data.fetch.fetch_named), its note and progress on stderr."""
    if data is None:
        return
    from catdog_cli.data import fetch as fetching

    bar = progress.FetchBar(output.progress)
    try:
        fetching.fetch_named(data, bar)
    finally:
        bar.done()


def check_fetch(
    names: list[str], root: Path | None, source: str | None, sha256: str | None, backbones: list[str], registry: Any
) -> None:
    """fetch's options, before any download."""
    from catdog_cli.core.paths import check_folder_target
    from catdog_cli.core.validate import check_backbone

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


def fetch(
    names: list[str] = typer.Argument(None, help="Datasets to fetch: hymenoptera, catdog, petimages."),
    root: Path | None = typer.Option(None, help="Where datasets go (default: the data root, or $CATDOG_HOME)."),
    source: str | None = typer.Option(None, "--from", help="A local archive, folder or URL to use instead."),
    sha256: str | None = typer.Option(None, help="Expected sha256 of the --from archive."),
    force: bool = typer.Option(False, help="Fetch again even if the dataset is already complete."),
    weights: list[str] = typer.Option(
        None,
        metavar="BACKBONE,...",
        help="Also download torchvision ImageNet weights for these backbones (comma-separated, or repeat the option).",
    ),
    max_size: float | None = typer.Option(
        None,
        "--max-size",
        metavar="GIB",
        help="The most a fetch may download, unpack or copy, in GiB (default 20, "
        "and an archive at most 100 times its own size: a zip bomb is refused); given, it is the only limit.",
    ),
    json_output: Json = False,
) -> None:
    """Download a named dataset (or take a local archive), verify it, and lay it out for training."""
    from catdog_cli.data import fetch as fetching

    fetching.check_options(root, sha256, max_size)
    names = list(names or [])
    backbones = [b for w in weights or [] for b in w.split(",") if b]
    check_fetch(names, root, source, sha256, backbones, fetching.REGISTRY)
    output = Output(json_output)
    summaries = []
    for name in names or ([None] if source is not None else []):
        bar = progress.FetchBar(output.progress)
        try:
            summaries.append(
                fetching.fetch(
                    name, root=root, source=source, sha256=sha256, force=force, max_size=max_size, progress=bar
                )
            )
        finally:
            bar.done()
    paths = fetch_weights(backbones) if backbones else {}

    if output.json:
        output.emit({"datasets": [d.to_json() for d in summaries], "weights": {b: str(p) for b, p in paths.items()}})
        return
    console = output.console
    if summaries:
        console.print(render.fetch_table(summaries))
    for d in summaries:
        for file, reason in d.skipped[:10]:
            console.print(f"[yellow]skipped[/] {progress.safe(f'{d.name}: {file} ({reason})')}", highlight=False)
        if len(d.skipped) > 10:
            console.print(f"[yellow]skipped[/] {progress.safe(d.name)}: {len(d.skipped) - 10} more (see --json)")
    for b, p in paths.items():
        console.print(f"weights {b}: {printable(p)}", highlight=False, markup=False)
