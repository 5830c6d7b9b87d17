"""Defaults that --help shows, importable without torch (so `catdog --help` and `catdog fetch` start fast)."""

DEFAULT_BACKBONE = "resnet34"
SEED_BACKBONES = ("alexnet", "vgg16_bn", "resnet34", "densenet121", "squeezenet1_1", "googlenet")

# every torchvision backbone catdog knows (backbones.TORCHVISION builds them), named here so that a typo in
# --backbone is answered before torch is imported
TORCHVISION_BACKBONES = (
    "alexnet", "vgg11_bn", "vgg16", "vgg16_bn", "vgg19_bn", "resnet18", "resnet34", "resnet50", "resnet101",
    "resnext50_32x4d", "wide_resnet50_2", "densenet121", "densenet169", "squeezenet1_0", "squeezenet1_1",
    "googlenet", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b1",
    "efficientnet_b2", "efficientnet_v2_s", "regnet_y_400mf", "shufflenet_v2_x1_0", "convnext_tiny",
    "convnext_small", "vit_b_16", "swin_t",
)
DEFAULT_TTA = "flip+crops"  # what --tta averages over (tta.TTA_VIEWS): benchmarks/README.md, it beat "flip"
LR_FIND_MIN_STEPS = 11  # lr_find's smoothing window (2 * 4 + 1 steps) and a step either side
