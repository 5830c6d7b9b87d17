"""`catdog doctor`: one screen on whether this machine can run catdog, and what each command would pick here.

The probes live where their subject does (runtime.environment, models.backbones, data.fetch, core.paths); this
module asks them in order and draws the answer. A probe that needs torch is skipped, and says so, when torch
does not load.
"""

from __future__ import annotations

import typer
from rich.text import Text

from catdog_cli.cli.options import Json
from catdog_cli.cli.output import Output
from catdog_cli.errors import CatdogError
from catdog_cli.runtime.environment import Finding

Report = dict[str, list[Finding]]


def _data() -> list[Finding]:
    from catdog_cli.core.paths import data_root
    from catdog_cli.data.fetch import REGISTRY, fetched

    try:
        root = data_root()
    except CatdogError as exc:
        return [Finding("data root", str(exc), "set CATDOG_HOME to a folder you can write", blocking=True)]
    found = [Finding("data root", f"{root} ($CATDOG_HOME sets it; --data NAME reads NAME there)")]
    present = fetched(root)
    for name, summary in present.items():
        if isinstance(summary, str):
            text = f"{root / name}: a folder catdog fetch did not make ({summary}); --data {name} reads it as it is"
            found.append(Finding(name, text))
        else:
            splits = ", ".join(f"{split} {n}" for split, n in summary.splits.items())
            found.append(Finding(name, f"{', '.join(summary.classes)}: {splits}"))
    missing = [name for name in REGISTRY if name not in present]
    if missing:
        found.append(Finding("not fetched", f"{', '.join(missing)} (catdog fetch NAME, or --from ARCHIVE offline)"))
    return found


def _weights() -> list[Finding]:
    from catdog_cli.core.defaults import DEFAULT_BACKBONE
    from catdog_cli.models.backbones import cached_weights
    from catdog_cli.models.weights import hub_checkpoints

    cached = cached_weights()
    found = [
        Finding("hub cache", f"{hub_checkpoints()} (TORCH_HOME moves it)"),
        Finding("offline", ", ".join(cached) if cached else "no ImageNet weights cached yet"),
    ]
    if DEFAULT_BACKBONE not in cached:
        fix = (
            f"while online, `catdog fetch --weights {DEFAULT_BACKBONE}` caches them; offline, "
            "--weights PATH or --weights none"
        )
        found.append(Finding(DEFAULT_BACKBONE, "the default backbone's weights are not cached", fix))
    return found


def diagnose() -> Report:
    """Every section of the report, in order; the sections that need torch are skipped when it does not load."""
    from catdog_cli.runtime import environment

    report: Report = {"versions": environment.versions(), "torch": environment.torch_pair()}
    if any(f.blocking for f in report["torch"]):
        report["machine"] = [Finding("skipped", "GPU, CPU, precision and weights need a working torch")]
    else:
        report["GPU"] = environment.gpus()
        report["CPU"] = environment.cpu()
        load = environment.load()
        if load:
            report["CPU"].append(Finding("load", f"{load} (1, 5, 15 min)"))
        report["precision"] = environment.precisions()
        report["weights"] = _weights()
    report["data"] = _data()
    return report


def render_report(report: Report) -> Text:
    """One line per finding; a problem in red (blocking) or yellow, with its fix on the next line."""
    width = max(len(f.topic) for findings in report.values() for f in findings)
    text = Text()
    for section, findings in report.items():
        text.append(f"{section}\n", style="bold")
        for f in findings:
            mark, style = ("x", "red") if f.blocking else ("!", "yellow") if f.fix else (" ", "")
            text.append(f" {mark} {f.topic:<{width}}  ", style=style)
            text.append(f"{f.text}\n")
            if f.fix:
                text.append(f"   {'':<{width}}  fix: {f.fix}\n", style=style)
    blocking = [f.topic for findings in report.values() for f in findings if f.blocking]
    problems = sum(bool(f.fix) for findings in report.values() for f in findings)
    if blocking:
        text.append(f"catdog cannot run here: fix {', '.join(blocking)} (above)\n", style="bold red")
    else:
        text.append(f"catdog can run here ({problems} note(s) above)\n" if problems else "all good\n", style="bold")
    return text


def doctor(json_output: Json = False) -> None:
    """Check this machine for catdog; each problem says its fix (exit code 1: a command would stop).

    Versions, whether torch and torchvision work together, GPUs, CPU cores and threads, the precision each command
    would pick, the data root and its datasets, which backbones' weights work offline.
    """
    report = diagnose()
    blocking = any(f.blocking for findings in report.values() for f in findings)
    out = Output(json_output)
    if json_output:
        out.emit({"sections": {k: [f.to_json() for f in v] for k, v in report.items()}, "ok": not blocking})
    else:
        out.console.print(render_report(report), highlight=False, soft_wrap=True, end="")
    if blocking:
        raise typer.Exit(1)
