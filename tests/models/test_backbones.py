"""The backbone registry: every seed backbone trains and predicts under every strategy; weights from a path."""

from __future__ import annotations

import copy
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from catdog_cli.core.defaults import GRID_STRATEGIES, SEED_BACKBONES
from catdog_cli.data.presets import IMAGENET_MEAN, IMAGENET_STD
from catdog_cli.errors import CatdogError
from catdog_cli.models import backbones
from catdog_cli.models.backbones import TORCHVISION, build_empty, build_model, preset_for, weights_preset
from catdog_cli.models.strategies import param_groups
from catdog_cli.models.transfer import TransferModel, count_params

NUM_CLASSES = 3
SIZE = 64  # AlexNet needs >= 63 px


@pytest.fixture(scope="module")
def seed_model():
    """Each seed backbone built once (random init) for the module; every test gets its own deep copy."""
    built: dict[str, TransferModel] = {}

    def get(name: str) -> TransferModel:
        if name not in built:
            built[name] = build_model(name, NUM_CLASSES, weights="none", seed=0)
        return copy.deepcopy(built[name])

    return get


def _bn_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.features.state_dict().items() if "running_" in k}


@pytest.mark.parametrize("strategy", GRID_STRATEGIES)  # freeze-unfreeze: test_strategies.py
@pytest.mark.parametrize("name", SEED_BACKBONES)
def test_seed_backbone_trains_one_step_and_predicts(seed_model, name, strategy):
    model = seed_model(name)
    total, _ = count_params(model)
    head_params = sum(p.numel() for p in model.head.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bn_before = _bn_stats(model)

    lr = 0.05
    groups = param_groups(strategy, model, lr=lr, lr_ratio=10)
    optimizer = torch.optim.SGD(groups, lr=lr)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, SIZE, SIZE, generator=gen)
    y = torch.tensor([0, 2])

    model.train()
    logits = model(x)  # GoogLeNet in train mode: a tensor, not GoogLeNetOutputs
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, NUM_CLASSES)
    loss = nn.functional.cross_entropy(logits, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("head.") for k in changed), "the head must train under every strategy"
    _, trainable = count_params(model)
    if strategy == "freeze":
        assert trainable == head_params
        assert not any(k.startswith("features.") for k in changed), "frozen backbone weights or BN stats moved"
        assert all(p.grad is None for p in model.features.parameters())
    else:
        assert trainable == total
        assert any(k.startswith("features.") and "running_" not in k for k in changed)
        if bn_before:  # the same check that freeze passes must be able to fail: here BN stats do move
            assert any(not torch.equal(v, after[f"features.{k}"]) for k, v in bn_before.items())
    if strategy == "discriminative":
        lrs = {g["name"]: g["lr"] for g in groups}
        assert lrs == {"backbone": pytest.approx(lr / 10), "head": lr}

    model.eval()
    with torch.inference_mode():
        probs = model(x).softmax(1)
    assert probs.shape == (2, NUM_CLASSES)
    assert torch.isfinite(probs).all()
    assert torch.allclose(probs.sum(1), torch.ones(2))


def test_heads_are_replaced_for_n_classes(seed_model):
    heads = {"alexnet": nn.Linear, "resnet34": nn.Linear, "densenet121": nn.Linear, "googlenet": nn.Linear}
    for name, kind in heads.items():
        model = seed_model(name)
        assert isinstance(model.head, kind) and model.head.out_features == NUM_CLASSES
        # no trace of the ImageNet classifier is left in the features
        assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in model.features.modules())
    squeeze = seed_model("squeezenet1_1")
    assert any(isinstance(m, nn.Conv2d) and m.out_channels == NUM_CLASSES for m in squeeze.head.modules())


@pytest.mark.parametrize("name", SEED_BACKBONES)
def test_seed_backbones_use_imagenet_preprocessing(name):
    pre = weights_preset(name)
    assert pre.mean == pytest.approx(IMAGENET_MEAN) and pre.std == pytest.approx(IMAGENET_STD)
    assert (pre.image_size, pre.resize) == (224, 256)
    assert preset_for(name, 224) == pre and preset_for(name, 64).resize == 73


def test_unknown_backbone_is_a_catdog_error():
    with pytest.raises(CatdogError, match=r"unknown backbone 'resnet9000'.*resnet34"):
        build_model("resnet9000", 2, weights="none")


def _penultimate(model: nn.Module, head_attr: str) -> nn.Module:
    """torchvision's own model with its classifier cut off: what catdog's features must compute."""
    parent_path, _, leaf = head_attr.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, leaf, nn.Identity())
    return model.eval()


def _assert_same_features(got: torch.Tensor, want: torch.Tensor) -> None:
    scale = want.abs().max().item()  # random-init activations can be tiny: compare relative to their size
    assert scale > 0, "all-zero features would make the comparison meaningless"
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3 * scale)


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "alexnet"])
def test_weights_path_loads_the_users_state_dict(tmp_path, name):
    spec = TORCHVISION[name]
    torch.manual_seed(1)
    full = spec.build_full()
    path = tmp_path / f"{name}.pth"
    torch.save(full.state_dict(), path)

    model = build_model(name, NUM_CLASSES, weights=str(path), seed=0).eval()
    assert model.head.out_features == NUM_CLASSES
    reference = _penultimate(full, spec.head.rstrip("."))
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.inference_mode():
        _assert_same_features(model.features(x), reference(x))


def test_weights_path_accepts_wrapped_and_data_parallel_state_dicts(tmp_path):
    full = TORCHVISION["resnet18"].build_full()
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in full.state_dict().items()}, "epoch": 3}, path)
    model = build_model("resnet18", 2, weights=str(path))
    assert torch.equal(model.features.conv1.weight, full.conv1.weight)


def test_googlenet_weights_path_matches_torchvisions_pretrained_model(tmp_path):
    """An ImageNet GoogLeNet file has aux heads (ignored) and expects torchvision's transform_input=True."""
    state = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False).state_dict()
    assert any(k.startswith("aux1.") for k in state)
    path = tmp_path / "googlenet.pth"
    torch.save(state, path)
    model = build_model("googlenet", 2, weights=str(path)).eval()
    # what torchvision.models.googlenet(weights=DEFAULT) builds around the same tensors
    reference = torchvision.models.GoogLeNet(transform_input=True, aux_logits=True, init_weights=False)
    reference.load_state_dict(state)
    reference = _penultimate(reference, "fc")
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.inference_mode():
        _assert_same_features(model.features(x), reference(x))


def test_mismatched_state_dicts_are_refused(tmp_path):
    small = tmp_path / "resnet18.pth"
    torch.save(TORCHVISION["resnet18"].build_full().state_dict(), small)
    with pytest.raises(CatdogError, match="do not fit this backbone"):
        build_model("resnet34", 2, weights=str(small))  # missing layers

    state = TORCHVISION["resnet18"].build_full().state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    wrong_shape = tmp_path / "wrong_shape.pth"
    torch.save(state, wrong_shape)
    with pytest.raises(CatdogError, match="do not fit this backbone"):
        build_model("resnet18", 2, weights=str(wrong_shape))

    not_tensors = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_tensors)
    with pytest.raises(CatdogError, match="does not hold a state dict"):
        build_model("resnet18", 2, weights=str(not_tensors))

    with pytest.raises(CatdogError, match="weights file not found"):
        build_model("resnet18", 2, weights=str(tmp_path / "absent.pth"))


def test_default_weights_download_failure_is_one_line_with_offline_hint(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)  # where torchvision calls it
    with pytest.raises(CatdogError) as info:
        build_model("resnet18", 2, weights="default")
    message = str(info.value)
    assert "\n" not in message and message.startswith("could not get ImageNet weights for resnet18 (")
    assert message.endswith(", or pass --weights PATH (or --weights none)")  # timm's line ends the same way
    assert TORCHVISION["resnet18"].weights_enum().url in message


def test_build_empty_is_on_meta_and_downloads_nothing(monkeypatch):
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", pytest.fail)
    model = build_empty("resnet34", 5)
    assert all(p.is_meta for p in model.parameters())
    assert model.head.out_features == 5


# --- timm ------------------------------------------------------------------------------------------------

LITE0 = "timm:tf_efficientnet_lite0"
LITE0_WEIGHTS = Path(__file__).resolve().parents[3] / "shared" / "weights" / "tf_efficientnet_lite0_imagenet.pth"


def test_timm_backbone_normalization_comes_from_timms_config():
    pytest.importorskip("timm")
    pre = weights_preset(LITE0)
    assert pre.mean == pytest.approx((0.5, 0.5, 0.5)) and pre.std == pytest.approx((0.5, 0.5, 0.5))
    model = build_model(LITE0, 2, weights="none", seed=0).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, SIZE, SIZE)).shape == (1, 2)


def test_timm_default_weights_offline_fail_at_once_with_torchvisions_line(monkeypatch, tmp_path):
    """No network, nothing cached: one line before timm's hub client is asked (it retried for ~53 s)."""
    timm = pytest.importorskip("timm")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for variable in backbones.PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(backbones, "_timm_cached", lambda cfg: False)
    probed = []

    def unreachable(address, timeout):
        probed.append((address, timeout))
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(backbones.socket, "create_connection", unreachable)
    monkeypatch.setattr(timm, "create_model", pytest.fail)  # never reached
    with pytest.raises(CatdogError) as info:
        build_model(LITE0, 2, weights="default")
    assert probed == [(("huggingface.co", 443), backbones.REACH_TIMEOUT)]
    assert str(info.value) == (
        "could not get ImageNet weights for timm:tf_efficientnet_lite0 (huggingface.co unreachable: [Errno -3] "
        f"Temporary failure in name resolution); offline, run it once where they download (timm keeps them in "
        f"{tmp_path / 'hf'}), or pass --weights PATH (or --weights none)"
    )


def test_timm_unknown_model_is_a_catdog_error():
    pytest.importorskip("timm")
    with pytest.raises(CatdogError):
        weights_preset("timm:no_such_model_xyz")


def test_timm_missing_is_a_catdog_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name == "timm":
            raise ImportError("no timm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(CatdogError) as refused:  # catdog is not on PyPI: the hint names what can be installed
        backbones.weights_preset(LITE0)
    assert str(refused.value) == (
        "timm backbones need timm: pip install timm (in a clone of catdog: pip install -e '.[timm]')"
    )


@pytest.mark.skipif(not LITE0_WEIGHTS.is_file(), reason="../shared/weights is absent")
def test_shared_efficientnet_lite0_weights_load():
    pytest.importorskip("timm")
    state = torch.load(LITE0_WEIGHTS, map_location="cpu", weights_only=True)
    model = build_model(LITE0, 2, weights=str(LITE0_WEIGHTS), seed=0).eval()
    features = model.features.state_dict()
    kept = [k for k in state if not k.startswith("classifier.")]
    assert kept and all(torch.equal(features[k], state[k]) for k in kept)
    assert model.head.out_features == 2 and model.head.in_features == state["classifier.weight"].shape[1]
    with torch.inference_mode():
        assert torch.isfinite(model(torch.randn(1, 3, SIZE, SIZE))).all()


def test_the_torch_free_list_of_backbone_names_is_the_registry():
    from catdog_cli.core.defaults import TORCHVISION_BACKBONES

    assert tuple(TORCHVISION) == TORCHVISION_BACKBONES


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("resnet9", "resnet18"),
        ("resnet_18", "resnet18"),
        ("vgg16bn", "vgg16_bn"),
        ("densenet", "densenet121"),
        ("mobilenetv2", "mobilenet_v2"),
        ("efficientnet-b0", "efficientnet_b0"),
        ("Resnet34", "resnet34"),
    ],
)
def test_an_unknown_backbone_suggests_the_closest_names(typo, meant):
    with pytest.raises(CatdogError, match=rf"unknown backbone '{typo}'; did you mean [^?]*\b{meant}\b"):
        build_model(typo, 2, weights="none")


@pytest.mark.parametrize("layout", ["fp16", "bf16", "fp64", "sparse"])
def test_a_weights_file_in_another_precision_or_layout_loads_as_fp32(tmp_path, layout):
    full = TORCHVISION["resnet18"].build_full()
    convert = {
        "fp16": lambda v: v.half(),
        "bf16": lambda v: v.bfloat16(),
        "fp64": lambda v: v.double(),
        "sparse": lambda v: v.to_sparse() if v.dim() == 2 else v,
    }[layout]
    path = tmp_path / "weights.pth"
    torch.save({k: convert(v) if v.is_floating_point() else v for k, v in full.state_dict().items()}, path)
    model = build_model("resnet18", 2, weights=str(path))
    assert all(p.dtype == torch.float32 and p.layout == torch.strided for p in model.parameters())
    torch.testing.assert_close(model.features.conv1.weight, full.conv1.weight, rtol=1e-2, atol=1e-2)


def test_a_weights_file_that_is_not_finite_is_refused(tmp_path):
    state = TORCHVISION["resnet18"].build_full().state_dict()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    with pytest.raises(CatdogError, match=r"not finite \(NaN or infinity in layer1.0.conv1.weight\)"):
        build_model("resnet18", 2, weights=str(path))


def test_a_weight_download_never_writes_on_stdout(monkeypatch, capsys):
    """torch hub says "Downloading: ..." on stdout; `--json` stdout must hold the document only."""
    state = TORCHVISION["resnet18"].build_full().state_dict()

    def download(url, *args, **kwargs):
        print(f'Downloading: "{url}" to /cache/resnet18.pth')  # what torch.hub.load_state_dict_from_url prints
        return state

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", download)  # where torchvision calls it
    build_model("resnet18", 2, weights="default")
    out, err = capsys.readouterr()
    assert out == "" and "Downloading: " in err


def test_random_init_googlenet_feeds_its_batchnorms_activations_their_running_statistics_can_follow():
    """BatchNorm's running variance starts at 1 and moves 10 % a step. torchvision's GoogLeNet init (std 0.01)
    gave its 57 BatchNorm inputs a variance of 0.002-0.04 (median 0.017): eval-mode statistics lagged for a whole
    compare cell and its val accuracy sat at chance (an H200 run, benchmarks/README). PyTorch's default init
    gives 0.06-0.18 here."""
    model = build_model("googlenet", 2, "none", seed=0).train()
    variances = []
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.register_forward_hook(lambda mod, inp, out: variances.append(inp[0].var(dim=(0, 2, 3)).mean().item()))
    with torch.no_grad():
        model(torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert len(variances) == 57
    assert sorted(variances)[len(variances) // 2] > 0.05 and min(variances) > 0.02
