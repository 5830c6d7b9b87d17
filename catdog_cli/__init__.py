"""catdog: image classification by transfer learning.

The public Python API, loaded on first use so that `import catdog_cli` (and `catdog --help`) stays torch-free:

    from catdog_cli import TrainConfig, fit, evaluate_checkpoint, predict, export_model, resume, compare, find_lr

The package, by concern (each sub-package's `__init__` says its rule; `catdog_cli/layers.py` enforces the
import direction cli -> training -> inference -> models | reporting -> data | runtime -> core -> errors).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
API = {
    "TrainConfig": "catdog_cli.core.config",
    "CompareConfig": "catdog_cli.core.config",
    "Events": "catdog_cli.core.events",
    "CatdogError": "catdog_cli.errors",
    "fit": "catdog_cli.training.loop",
    "resume": "catdog_cli.training.resume",
    "compare": "catdog_cli.training.compare",
    "find_lr": "catdog_cli.training.lr_find",
    "evaluate_checkpoint": "catdog_cli.inference.evaluate",
    "predict": "catdog_cli.inference.predict",
    "TrainedModel": "catdog_cli.inference.trained",
    "export_model": "catdog_cli.inference.export",
}
__all__ = [
    "API",
    "CatdogError",
    "CompareConfig",
    "Events",
    "TrainConfig",
    "TrainedModel",
    "__version__",
    "compare",
    "evaluate_checkpoint",
    "export_model",
    "find_lr",
    "fit",
    "predict",
    "resume",
]

if TYPE_CHECKING:
    from catdog_cli.core.config import CompareConfig, TrainConfig
    from catdog_cli.core.events import Events
    from catdog_cli.errors import CatdogError
    from catdog_cli.inference.evaluate import evaluate_checkpoint
    from catdog_cli.inference.export import export_model
    from catdog_cli.inference.predict import predict
    from catdog_cli.inference.trained import TrainedModel
    from catdog_cli.training.compare import compare
    from catdog_cli.training.loop import fit
    from catdog_cli.training.lr_find import find_lr
    from catdog_cli.training.resume import resume


def __getattr__(name: str) -> Any:  # PEP 562: the API's modules import torch, so only when a name is asked for
    if name not in API:
        raise AttributeError(f"module 'catdog_cli' has no attribute {name!r}")
    return getattr(importlib.import_module(API[name]), name)
