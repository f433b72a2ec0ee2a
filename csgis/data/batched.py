"""Training batches made on the training device (`data.pipeline: device`).

With `data.pipeline: workers` (the default) DataLoader workers augment one sample at a time on
the CPU (csgis.data.transforms.JointRandomTransform). A GPU that trains hundreds of patches per
second outruns them, so this pipeline instead:
1. decodes the training split once, in parallel, into a `DeviceBank`: uint8 tensors on the device,
   every image padded to the largest size of the split, with each sample's true size kept;
2. cuts every batch there with one batched resampling: per sample a random window (images smaller
   than the patch are padded), a horizontal flip and a rotation, one sampling grid for all five
   tensors (bilinear for the images, nearest for edges and labels), then one set of colour factors
   per sample for input, GT and over-smoothed image.
It is the same augmentation as JointRandomTransform (docs/method.md §5), with the same fills:
outside its source image a window holds mirrored image content, label 255 and edge 0. The random
choices of a batch come from a generator seeded by (seed, epoch, batch, rank), so a resumed run
draws exactly what an uninterrupted one does. The CPU runs the same code (tests, dry runs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from csgis.data.manifest import IGNORE_INDEX

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def _base(dataset: Dataset) -> Dataset:
    """The dataset under RepeatDataset (the bank holds each sample once)."""
    return getattr(dataset, "dataset", dataset)


def _load_uint8(args) -> dict:
    dataset, index = args
    item = dataset.load(index)
    return {"images": torch.cat([item[k] for k in ("input", "gt", "over_smoothed")]).mul(255).round().to(torch.uint8),
            "edge": item["edge"][0].to(torch.uint8), "seg": item["seg"].to(torch.uint8), "id": item["id"]}


class DeviceBank:
    """A training split as uint8 tensors on `device`: images (N, 9, H, W) = input | gt | over,
    edge (N, H, W), seg (N, H, W), sizes (N, 2) = each sample's own (height, width)."""

    def __init__(self, dataset: Dataset, device: torch.device, workers: int = 0, progress: bool = False):
        from csgis.runtime import parallel_map

        base = _base(dataset)
        if not hasattr(base, "load"):
            raise ValueError(f"data.pipeline=device needs a dataset with stored images, not {type(base).__name__}")
        self.repeat = len(dataset) // len(base)
        items = parallel_map(_load_uint8, [(base, i) for i in range(len(base))], workers, "loading", progress)
        height = max(item["images"].shape[1] for item in items)
        width = max(item["images"].shape[2] for item in items)
        n = len(items)
        self.images = torch.zeros(n, 9, height, width, dtype=torch.uint8)
        self.edge = torch.zeros(n, height, width, dtype=torch.uint8)
        self.seg = torch.full((n, height, width), IGNORE_INDEX, dtype=torch.uint8)
        sizes = []
        for i, item in enumerate(items):
            h, w = item["images"].shape[1:]
            self.images[i, :, :h, :w] = item["images"]
            self.edge[i, :h, :w] = item["edge"]
            self.seg[i, :h, :w] = item["seg"]
            sizes.append((h, w))
        self.ids = [item["id"] for item in items]
        self.sizes = torch.tensor(sizes, dtype=torch.float32)
        self.images, self.edge, self.seg, self.sizes = (t.to(device) for t in (self.images, self.edge, self.seg,
                                                                                self.sizes))
        self.device = device

    def __len__(self) -> int:
        return len(self.ids) * self.repeat

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.images, self.edge, self.seg))


def batch_seed(seed: int, epoch: int, batch: int, rank: int = 0) -> int:
    """Seed of the random choices of one batch (so that resuming mid-epoch draws the same)."""
    return (((seed * 1_000_003 + epoch) * 1_000_033 + batch) * 101 + rank) % 2**63


def _draw(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _mirror(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Continuous pixel positions -> [0, n-1] by mirroring at the borders (edge pixel repeated)."""
    period = torch.remainder(x + 0.5, 2 * n)
    x = torch.where(period >= n, 2 * n - period, period) - 0.5
    return torch.minimum(x.clamp(min=0.0), n - 1)


def _rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    r, g, b = rgb.unbind(-3)
    maxc, _ = rgb.max(-3)
    minc, _ = rgb.min(-3)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp(min=1e-12), torch.zeros_like(maxc))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, torch.remainder(h / 6.0, 1.0), torch.zeros_like(h))
    return torch.stack((h, s, maxc), dim=-3)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    h, s, v = hsv.unbind(-3)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    choices = [torch.stack(c, dim=-3) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    out = choices[0]
    for k in range(1, 6):
        out = torch.where((i == k).unsqueeze(-3), choices[k], out)
    return out


def augment_batch(bank: DeviceBank, indices: torch.Tensor, patch: int, hflip: float, rotate: float,
                  brightness, contrast, hue: float, generator: torch.Generator) -> dict:
    """Augmented training batch of the bank samples `indices` (positions in the repeated split)."""
    indices = torch.as_tensor(indices, dtype=torch.int64) % len(bank.ids)
    n, device, p = len(indices), bank.device, int(patch)
    # The random choices, drawn on the CPU in a fixed order.
    flip_u, angle_u = (torch.rand(n, generator=generator, dtype=torch.float64) for _ in range(2))
    top_u, left_u = (torch.rand(n, generator=generator, dtype=torch.float64) for _ in range(2))
    factors = torch.stack([_draw(n, *brightness, generator), _draw(n, *contrast, generator),
                           _draw(n, -hue, hue, generator)], 1)
    sizes = bank.sizes[indices.to(device)].double().cpu()
    h, w = sizes[:, 0], sizes[:, 1]

    def offset(u, size):  # uniform over full windows; a smaller image lands anywhere inside the patch
        span = (size - p).abs() + 1
        o = torch.floor(u * span).clamp(max=span - 1)
        return torch.where(size >= p, o, -o)

    top, left = offset(top_u, h), offset(left_u, w)
    flip = flip_u < hflip
    angle = (angle_u * 2 - 1) * rotate if rotate > 0 else torch.zeros(n, dtype=torch.float64)

    # One sampling grid per sample, in source pixel coordinates.
    centre = (p - 1) / 2.0
    dy = (torch.arange(p, dtype=torch.float64) - centre).view(1, p, 1)
    dx = (torch.arange(p, dtype=torch.float64) - centre).view(1, 1, p)
    dx = torch.where(flip.view(n, 1, 1), -dx, dx)
    cos, sin = torch.cos(torch.deg2rad(angle)).view(n, 1, 1), torch.sin(torch.deg2rad(angle)).view(n, 1, 1)
    src_x = left.view(n, 1, 1) + centre + cos * dx - sin * dy
    src_y = top.view(n, 1, 1) + centre + sin * dx + cos * dy
    src_x, src_y = src_x.to(device, torch.float32), src_y.to(device, torch.float32)
    hd, wd = h.to(device, torch.float32).view(n, 1, 1), w.to(device, torch.float32).view(n, 1, 1)
    height, width = bank.images.shape[-2:]

    def grid(x, y):  # align_corners=True: pixel centre x sits at 2x / (W - 1) - 1
        return torch.stack((2 * x / max(width - 1, 1) - 1, 2 * y / max(height - 1, 1) - 1), dim=-1)

    index = indices.to(device)
    images = bank.images[index].float().div_(255.0)
    images = F.grid_sample(images, grid(_mirror(src_x, wd), _mirror(src_y, hd)), mode="bilinear",
                           padding_mode="border", align_corners=True).clamp_(0.0, 1.0)
    rx, ry = torch.round(src_x), torch.round(src_y)
    inside = (rx >= 0) & (rx <= wd - 1) & (ry >= 0) & (ry <= hd - 1)
    discrete = torch.stack((bank.edge[index], bank.seg[index]), dim=1).float()
    discrete = F.grid_sample(discrete, grid(rx.clamp(min=0), ry.clamp(min=0)), mode="nearest",
                             padding_mode="border", align_corners=True)
    edge = torch.where(inside, discrete[:, 0], torch.zeros((), device=device)).unsqueeze(1)
    seg = torch.where(inside, discrete[:, 1], torch.full((), float(IGNORE_INDEX), device=device)).long()

    # Colour: one brightness, contrast and hue factor per sample for its three images; contrast
    # blends towards the GT's mean gray (as color_jitter does).
    images = images.view(n, 3, 3, p, p)
    b, c, hue_shift = (factors[:, k].to(device, torch.float32) for k in range(3))
    images = (images * b.view(n, 1, 1, 1, 1)).clamp_(0.0, 1.0)
    weights = torch.tensor(GRAY_WEIGHTS, device=device).view(1, 3, 1, 1)
    mean_gray = (images[:, 1] * weights).sum(1).mean(dim=(1, 2)).view(n, 1, 1, 1, 1)
    images = (c.view(n, 1, 1, 1, 1) * images + (1 - c.view(n, 1, 1, 1, 1)) * mean_gray).clamp_(0.0, 1.0)
    if hue > 0:
        hsv = _rgb_to_hsv(images)
        hsv[:, :, 0] = torch.remainder(hsv[:, :, 0] + hue_shift.view(n, 1, 1, 1), 1.0)
        images = _hsv_to_rgb(hsv)
    return {"input": images[:, 0].contiguous(), "gt": images[:, 1].contiguous(),
            "over_smoothed": images[:, 2].contiguous(), "edge": edge.contiguous(), "seg": seg.contiguous(),
            "id": [bank.ids[i] for i in indices.tolist()]}


def device_epoch(bank: DeviceBank, order: list[int], per_rank_batch: int, start_batch: int, data_cfg,
                 seed: int, epoch: int, rank: int = 0):
    """The batches of one epoch on the bank's device: `order` (the sampler's indices) cut into batches,
    those before `start_batch` skipped (already trained), the last partial batch dropped."""
    for b in range(start_batch, len(order) // per_rank_batch):
        generator = torch.Generator().manual_seed(batch_seed(seed, epoch, b, rank))
        yield augment_batch(bank, torch.tensor(order[b * per_rank_batch:(b + 1) * per_rank_batch]),
                            data_cfg.patch_size, data_cfg.hflip, data_cfg.rotate, data_cfg.brightness,
                            data_cfg.contrast, data_cfg.hue, generator)

