"""Defaults that --help shows, importable without torch (so `catdog --help` and `catdog fetch` start fast)."""

DEFAULT_BACKBONE = "resnet34"
SEED_BACKBONES = ("alexnet", "vgg16_bn", "resnet34", "densenet121", "squeezenet1_1", "googlenet")
