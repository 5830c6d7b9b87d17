"""Device-side augmentation has the classic transforms' semantics (issue 4): boxes, distributions, flips, crops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms.functional import pil_to_tensor

from catdog_cli.data import augment
from catdog_cli.data.augment import RATIO, SCALE, normalize, sample_boxes, train_transform
from catdog_cli.data.decode import Decoded, collate, load_eval_image, load_train_image

IDENTITY = ((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))  # normalize() that leaves pixel values as they are


def _box_stats(sizes: torch.Tensor, boxes: torch.Tensor):
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    area = w * h / (sizes[:, 0] * sizes[:, 1]).float()
    return w, h, area, torch.log(w / h)


def test_boxes_are_inside_each_images_valid_region():
    gen = torch.Generator().manual_seed(0)
    sizes = torch.stack(
        [torch.randint(8, 300, (5000,), generator=gen), torch.randint(8, 300, (5000,), generator=gen)], dim=1
    )
    boxes = sample_boxes(sizes, gen)
    x1, y1, x2, y2 = boxes.unbind(1)
    assert (x1 >= 0).all() and (y1 >= 0).all()
    assert (x2 <= sizes[:, 1]).all() and (y2 <= sizes[:, 0]).all()
    assert (x2 > x1).all() and (y2 > y1).all()
    assert torch.equal(boxes, boxes.round())  # whole pixels, as torchvision's integer boxes


@pytest.mark.parametrize(("height", "width"), [(224, 224), (256, 512), (73, 100)])
def test_box_distribution_matches_torchvision(height, width):
    """Mean/spread of area fraction and log aspect over many draws equal RandomResizedCrop.get_params'."""
    n = 8000
    sizes = torch.tensor([[height, width]] * n)
    w, h, area, log_aspect = _box_stats(sizes, sample_boxes(sizes, torch.Generator().manual_seed(1)))

    torch.manual_seed(2)  # get_params draws from the global generator
    image = torch.empty(3, height, width)
    ref = torch.tensor([T.RandomResizedCrop.get_params(image, list(SCALE), list(RATIO)) for _ in range(n)]).float()
    ref_area = ref[:, 2] * ref[:, 3] / (height * width)
    ref_log_aspect = torch.log(ref[:, 3] / ref[:, 2])

    assert area.mean().item() == pytest.approx(ref_area.mean().item(), abs=0.012)
    assert area.std().item() == pytest.approx(ref_area.std().item(), abs=0.012)
    assert log_aspect.mean().item() == pytest.approx(ref_log_aspect.mean().item(), abs=0.012)
    assert log_aspect.std().item() == pytest.approx(ref_log_aspect.std().item(), abs=0.012)
    # the area fraction spans the range (up to whole-pixel rounding) and the aspect stays within its range
    assert 0.07 < area.min().item() < 0.1 and area.max().item() <= 1.0
    assert area.max().item() == pytest.approx(ref_area.max().item(), abs=0.02)  # 2:1 images: at most 2/3
    slack = 0.5 / w + 0.5 / h  # rounding width and height to whole pixels
    assert (log_aspect.abs() <= math.log(4 / 3) + slack + 1e-6).all()
    # roughly uniform in area: a quarter of the range holds about a quarter of the draws (same as torchvision)
    lower = ((area > 0.08) & (area < 0.08 + 0.23)).float().mean().item()
    ref_lower = ((ref_area > 0.08) & (ref_area < 0.08 + 0.23)).float().mean().item()
    assert lower == pytest.approx(ref_lower, abs=0.03)


def test_fallback_is_torchvisions_central_crop():
    """No attempt can fit a 10x200 strip: torchvision takes the central crop with the ratio clamped to 4/3."""
    sizes = torch.tensor([[10, 200], [200, 10]])
    boxes = sample_boxes(sizes, torch.Generator().manual_seed(0))
    for (height, width), box in zip(sizes.tolist(), boxes.tolist()):
        top, left, h, w = T.RandomResizedCrop.get_params(torch.empty(3, height, width), list(SCALE), list(RATIO))
        assert box == [left, top, left + w, top + h]


def _ramp_batch(n: int, size: int = 16):
    """n copies of a left-dark, right-bright horizontal ramp: every crop of it is a ramp, flipped or not."""
    ramp = torch.linspace(0, 255, size).round().to(torch.uint8).expand(3, size, size)
    images = ramp.expand(n, 3, size, size).contiguous()
    return images, torch.tensor([[size, size]] * n), torch.zeros(n, dtype=torch.bool)


def test_flip_rate_is_one_half():
    images, sizes, transposed = _ramp_batch(4000)
    out = train_transform(images, sizes, transposed, 8, *IDENTITY, generator=torch.Generator().manual_seed(0))
    flipped = out[:, 0, :, 0].mean(1) > out[:, 0, :, -1].mean(1)
    assert 0.46 < flipped.float().mean().item() < 0.54


def test_portraits_come_back_upright(tmp_path):
    """A portrait whose top half is red is stored on its side; every crop must have red above blue again."""
    im = Image.new("RGB", (30, 60), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 30, 30))
    im.save(tmp_path / "portrait.png")
    image, transposed = load_train_image(tmp_path / "portrait.png", 30)
    assert transposed
    landscape = torch.zeros(3, 30, 45, dtype=torch.uint8)
    batch = collate([Decoded(image, 0, 0, True), Decoded(landscape, 1, 1, False)] * 100, train=True)
    out = train_transform(
        batch.images, batch.sizes, batch.transposed, 12, *IDENTITY, generator=torch.Generator().manual_seed(0)
    )[0::2]
    red = out[:, 0]  # (n, rows, cols)
    # each row is one color (the color boundary is horizontal) ...
    assert (red.amax(2) - red.amin(2)).max() < 1
    # ... and going down, red never comes back after blue
    rows = red.mean(2)
    assert (rows[:, 1:] <= rows[:, :-1] + 1).all()
    assert ((rows[:, 0] > 200) & (rows[:, -1] < 50)).any(), "no crop spanned both halves: the test proves nothing"


def test_crops_never_see_the_padding():
    """Images narrower or shorter than the batch canvas: every output pixel comes from the image itself."""
    gray = torch.full((3, 32, 40), 128, dtype=torch.uint8)
    short = torch.full((3, 20, 30), 60, dtype=torch.uint8)
    wide = torch.full((3, 32, 64), 200, dtype=torch.uint8)
    batch = collate([Decoded(gray, 0, 0), Decoded(short, 0, 1), Decoded(wide, 1, 2)] * 200, train=True)
    out = train_transform(
        batch.images, batch.sizes, batch.transposed, 16, *IDENTITY, generator=torch.Generator().manual_seed(0)
    )
    for k, value in enumerate((128, 60, 200)):
        assert (out[k::3] - value).abs().max() < 0.5, f"image {k} mixed with its padding"


def _smooth(height: int, width: int) -> torch.Tensor:
    y, x = torch.linspace(0, 1, height)[:, None], torch.linspace(0, 1, width)[None]
    r = 128 + 100 * torch.sin(4.4 * x + 1) * torch.cos(3.1 * y)
    g = 40 + 200 * x * y
    b = 255 * (1 - x) + 0 * y
    return torch.stack([r, g, b]).round().clamp(0, 255).to(torch.uint8)


def test_full_box_crop_equals_bilinear_interpolate(monkeypatch):
    """With the box forced to the whole image, the roi_align crop is F.interpolate(bilinear) (up to its
    two-samples-per-bin averaging), for padded, transposed and flipped images alike."""
    images = [_smooth(30, 40), _smooth(50, 80), _smooth(64, 48).transpose(1, 2)]
    batch = collate([Decoded(images[0], 0, 0), Decoded(images[1], 0, 1), Decoded(images[2], 0, 2, True)], train=True)
    monkeypatch.setattr(
        augment,
        "sample_boxes",
        lambda sizes, generator=None: torch.cat([torch.zeros_like(sizes), sizes.flip(1)], dim=1).float(),
    )
    out = train_transform(
        batch.images, batch.sizes, batch.transposed, 24, *IDENTITY, generator=torch.Generator().manual_seed(0)
    )
    for k, image in enumerate(images):
        upright = image.transpose(1, 2) if k == 2 else image
        want = F.interpolate(upright[None].float(), size=(24, 24), mode="bilinear", align_corners=False)[0]
        diff = min((out[k] - want).abs().max().item(), (out[k] - want.flip(2)).abs().max().item())
        assert diff < 1.0, (k, diff)


@pytest.mark.parametrize(("size", "crop"), [((97, 61), 48), ((61, 97), 48), ((300, 200), 64), ((64, 64), 56)])
def test_eval_crop_equals_classic_resize_center_crop(tmp_path, size, crop):
    path = tmp_path / "photo.png"
    Image.fromarray(_smooth(size[1], size[0]).permute(1, 2, 0).numpy()).save(path)
    resize = round(crop * 256 / 224)
    classic = T.Compose([T.Resize(resize), T.CenterCrop(crop)])
    want = pil_to_tensor(classic(Image.open(path).convert("RGB")))
    got = load_eval_image(path, resize, crop)
    assert got.shape == want.shape == (3, crop, crop)
    assert (got.int() - want.int()).abs().max() <= 1


def test_normalize_is_classic_to_tensor_then_normalize():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 5, 7), generator=gen, dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = normalize(images, mean, std)
    want = T.Normalize(mean, std)(images.float() / 255)
    assert out.dtype == torch.float32 and out.shape == images.shape
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_same_generator_same_augmentation():
    images, sizes, transposed = _ramp_batch(8, 32)
    a = train_transform(images, sizes, transposed, 8, *IDENTITY, generator=torch.Generator().manual_seed(5))
    b = train_transform(images, sizes, transposed, 8, *IDENTITY, generator=torch.Generator().manual_seed(5))
    c = train_transform(images, sizes, transposed, 8, *IDENTITY, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


# --- MixUp / CutMix ---------------------------------------------------------------------------------------------


def _constant_images(values: list[float], size: int = 16) -> torch.Tensor:
    """Image i is filled with values[i]: a mixed image's mean tells how much of each it holds."""
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 3, size, size).contiguous()


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_mixup_mixes_labels_with_the_same_weight_as_the_images(alpha):
    images, labels = _constant_images([0.0, 0.0, 1.0, 1.0]), torch.tensor([0, 0, 1, 1])
    mixed = augment.Mixing(2, mixup=alpha)(images, labels, torch.Generator().manual_seed(3))
    # image i is lam * images[i] + (1 - lam) * its mirror partner: its value is its share of class 1
    share_of_class_1 = mixed.images.mean(dim=(1, 2, 3))
    assert torch.allclose(mixed.targets[:, 1], share_of_class_1, atol=1e-6)
    assert torch.allclose(mixed.targets.sum(1), torch.ones(4))
    lam = mixed.targets[0, 0]
    assert 0 < lam < 1 and not torch.isclose(lam, torch.tensor(0.5))  # really mixed, not a no-op
    assert torch.equal(mixed.labels, labels if lam >= 0.5 else labels.flip(0))  # the larger share counts


def test_cutmix_labels_follow_the_area_really_pasted():
    images, labels = _constant_images([0.0, 0.0, 1.0, 1.0], size=20), torch.tensor([0, 0, 1, 1])
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):  # boxes of every size, clipped at the border or not
        mixed = augment.Mixing(2, cutmix=1.0)(images, labels, gen)
        pasted = (mixed.images[0, 0] == 1.0).float().mean()  # image 0 shows image 3 inside the box
        assert torch.isclose(mixed.targets[0, 1], pasted) and torch.isclose(mixed.targets[3, 0], pasted)
        assert set(mixed.images.unique().tolist()) <= {0.0, 1.0}  # pasted, never blended


def test_mixup_and_cutmix_together_use_one_of_them_per_batch_and_labels_still_match():
    images, labels = _constant_images([0.0, 1.0], size=12), torch.tensor([0, 1])
    gen, kinds = torch.Generator().manual_seed(1), set()
    for _ in range(30):
        mixed = augment.Mixing(2, mixup=1.0, cutmix=1.0)(images, labels, gen)
        values = set(mixed.images[0, 0].unique().tolist())
        kinds.add("cutmix" if values <= {0.0, 1.0} else "mixup")
        assert torch.isclose(mixed.targets[0, 1], mixed.images[0].mean(), atol=1e-6)
    assert kinds == {"cutmix", "mixup"}


def test_mixing_draws_only_from_its_generator():
    images, labels = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    mixing = augment.Mixing(3, mixup=0.4, cutmix=1.0)
    first = mixing(images, labels, torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # the global generator does not matter
    again = mixing(images, labels, torch.Generator().manual_seed(7))
    assert torch.equal(first.images, again.images) and torch.equal(first.targets, again.targets)


def test_beta_draws_have_the_beta_mean_and_spread():
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([augment.sample_beta(0.4, torch.device("cpu"), gen) for _ in range(4000)])
    assert abs(draws.mean().item() - 0.5) < 0.02
    assert abs(draws.var().item() - 1 / (4 * (2 * 0.4 + 1))) < 0.01  # Beta(a, a): var = 1 / (4 (2a + 1))
