"""TransferModel: features then head, whatever the backbone returns, and its parameter counts."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from catdog_cli.models.transfer import TransferModel, count_params

SIZE = 64


def test_transfer_model_takes_the_main_output_of_auxiliary_models():
    """torchvision's GoogLeNet with aux heads returns GoogLeNetOutputs in train mode; the head gets logits[0]."""
    net = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
    net.fc = nn.Identity()
    model = TransferModel(net, nn.Linear(1024, 2)).train()
    out = model(torch.randn(2, 3, SIZE, SIZE))
    assert out.shape == (2, 2)
    nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()


def test_count_params_reports_total_and_trainable():
    model = TransferModel(nn.Linear(4, 3), nn.Linear(3, 2))
    assert count_params(model) == (15 + 8, 23)
    model.freeze_features()
    assert count_params(model) == (23, 8)
