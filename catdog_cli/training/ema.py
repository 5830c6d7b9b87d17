"""An exponential moving average of a model's weights (--ema), evaluated beside the trained weights each epoch.

The average starts as the model and follows it after every optimizer step with a decay that warms up,
min(decay, (1 + n) / (10 + n)) after n updates (as TensorFlow's and timm's EMA do): on a small dataset's few
hundred steps the average spans about the last tenth of the run instead of staying near the initial weights.
Only what training changes is averaged: the trainable parameters, and the float buffers (BatchNorm statistics)
of the parts in training mode; a frozen backbone is shared in value, not averaged.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from catdog_cli.models.transfer import TransferModel
from catdog_cli.models.weights import conform


class EMA:
    def __init__(self, model: TransferModel, decay: float):
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.model.eval()
        self.decay = decay
        self.updates = 0
        self._tracked: set[str] = set()
        self.track(model)

    def track(self, model: TransferModel) -> None:
        """Choose what to average: call again when the model's trainable part changes (freeze-unfreeze)."""
        trained = {name for name, p in model.named_parameters() if p.requires_grad}
        moving = model.head if model.frozen else model
        prefix = "head." if model.frozen else ""
        trained |= {prefix + name for name, b in moving.named_buffers() if b.is_floating_point()}
        live, averaged = model.state_dict(keep_vars=True), self.model.state_dict(keep_vars=True)
        for n in set(live) - self._tracked:  # not averaged so far: it starts (again) from the model's values
            averaged[n].data.copy_(live[n].data)
        self._tracked = trained
        names = sorted(trained)
        self._live = [live[n] for n in names]
        self._averaged = [averaged[n] for n in names]

    def decay_at(self, updates: int) -> float:
        return min(self.decay, (1 + updates) / (10 + updates))

    @torch.no_grad()
    def update(self) -> None:
        """After an optimizer step: average <- average + (1 - decay) * (model - average), without a host sync."""
        weight = 1 - self.decay_at(self.updates)
        self.updates += 1
        torch._foreach_lerp_(self._averaged, [t.detach() for t in self._live], weight)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """As saved by a run's last.pt: checked like every weight catdog loads (dtype, finite), and a count."""
        if type(state["updates"]) is not int or state["updates"] < 0:
            raise ValueError(f"EMA update count {state['updates']!r}")
        self.model.load_state_dict(conform(state["weights"], self.model, "the checkpoint's EMA"))
        self.updates = state["updates"]
