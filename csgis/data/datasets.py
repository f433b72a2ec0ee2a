"""VOC-smooth datasets (docs/method.md §4): files -> dict of five tensors.

Every item is a dict:
  input, gt, over_smoothed  (3, H, W) float32 in [0, 1]
  edge                      (1, H, W) float32 in {0, 1}
  seg                       (H, W) int64 class indices, 255 = ignore (all 255 without a label)
  id                        str

Three sources, chosen by `DataConfig.format` in `build_dataset`:
- ManifestDataset: `manifest.csv` written by dataset_utils (paths relative to the root).
- ReleasedLayoutDataset: the authors' released folders (see its docstring).
- OnlineBlendDataset: textured inputs blended on the fly from GTs and a texture folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from csgis import io
from csgis.data import blend
from csgis.data.manifest import IGNORE_INDEX, MANIFEST_NAME, ManifestError, read_manifest
from csgis.data.transforms import CenterCrop, JointRandomTransform



class DatasetError(ValueError):
    """A dataset folder or one of its files is inconsistent (message names the files)."""


def check_dataset(dataset: Dataset, what: str) -> None:
    """Fail fast, before training: every file the dataset will read exists, has a readable header
    and the size of its GT. DatasetError with the first problem and how many there are."""
    problems = dataset.file_problems() if hasattr(dataset, "file_problems") else []
    if problems:
        more = f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)})" if len(problems) > 1 else ""
        raise DatasetError(f"{what}: {problems[0]}{more}")


def _size_problems(groups, sizes: dict) -> list[str]:
    """groups: [(reference path, [other paths])]; all must share the reference's size."""
    problems = []

    def size(path):
        if path not in sizes:
            try:
                sizes[path] = io.image_size(path)
            except io.ImageReadError as e:
                sizes[path] = str(e)
        return sizes[path]

    for reference, others in groups:
        ref = size(reference)
        if isinstance(ref, str):
            if ref not in problems:
                problems.append(ref)
            continue
        for other in others:
            got = size(other)
            if isinstance(got, str):
                if got not in problems:
                    problems.append(got)
            elif got != ref:
                problems.append(f"size mismatch: {other} is {got[0]}x{got[1]} (WxH) but {reference} is "
                                f"{ref[0]}x{ref[1]}")
    return problems


# --- file readers ----------------------------------------------------------------------------

def _palette_lookup() -> dict[int, int]:
    """VOC palette colour (packed 0xRRGGBB) -> class index, for all 256 entries."""
    pal = io.voc_palette(256)
    return {(pal[3 * i] << 16) | (pal[3 * i + 1] << 8) | pal[3 * i + 2]: i for i in range(256)}


_PALETTE_LOOKUP = _palette_lookup()


def colors_to_labels(rgb: np.ndarray, source: str = "<array>") -> np.ndarray:
    """(H, W, 3) uint8 VOC-palette-rendered label -> (H, W) uint8 indices; unknown colour raises."""
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    colours, inverse = np.unique(packed, return_inverse=True)
    indices = np.empty(len(colours), dtype=np.uint8)
    for k, colour in enumerate(colours.tolist()):
        if colour not in _PALETTE_LOOKUP:
            y, x = np.argwhere(packed == colour)[0]
            raise DatasetError(
                f"{source}: colour RGB{(colour >> 16, (colour >> 8) & 255, colour & 255)} at "
                f"(row {y}, col {x}) is not in the VOC palette; cannot recover class indices "
                f"(lossy-compressed or resized label?)")
        indices[k] = _PALETTE_LOOKUP[colour]
    return indices[inverse.reshape(packed.shape)]


def read_seg(path: str | os.PathLike) -> np.ndarray:
    """Segmentation label file -> (H, W) uint8 indices. Palette / gray PNGs keep their indices;
    colour-rendered files (the release's rename script re-saves them as RGB) are mapped back
    through the VOC palette."""
    path = Path(path)
    try:
        with Image.open(path) as pil:
            mode = pil.mode
    except FileNotFoundError:
        raise io.ImageReadError(f"{path}: file not found") from None
    except Exception:
        mode = None  # let io.read_label produce its error (empty / not an image)
    if mode in ("RGB", "RGBA"):
        return colors_to_labels(io.read_image(path), str(path))
    return io.read_label(path)


def read_edge(path: str | os.PathLike) -> np.ndarray:
    """Edge label file stored as 0/1 or 0/255 (gray or colour) -> (H, W) uint8 in {0, 1}."""
    return (io.read_image(path).max(axis=2) > 0).astype(np.uint8)


def _image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255.0)


def make_sample(input_rgb: np.ndarray, gt_rgb: np.ndarray, edge: np.ndarray, seg: np.ndarray | None,
                over_rgb: np.ndarray, sample_id: str) -> dict:
    """uint8 arrays (H,W,3 / H,W) -> the item dict of tensors (module docstring)."""
    h, w = gt_rgb.shape[:2]
    seg_t = (torch.full((h, w), IGNORE_INDEX, dtype=torch.int64) if seg is None
             else torch.from_numpy(np.ascontiguousarray(seg)).long())
    return {
        "input": _image_tensor(input_rgb),
        "gt": _image_tensor(gt_rgb),
        "edge": torch.from_numpy(np.ascontiguousarray(edge > 0)).float()[None],
        "seg": seg_t,
        "over_smoothed": _image_tensor(over_rgb),
        "id": str(sample_id),
    }


def _read_rows(root: str | os.PathLike) -> list[dict]:
    """read_manifest with its errors as DatasetError (the one error type train.py reports)."""
    try:
        return read_manifest(root)
    except ManifestError as e:
        raise DatasetError(str(e)) from None


def _check_same_size(reference: np.ndarray, reference_name: str, other: np.ndarray, other_name: str) -> None:
    if reference.shape[:2] != other.shape[:2]:
        raise DatasetError(
            f"size mismatch: {other_name} is {other.shape[1]}x{other.shape[0]} (WxH) but "
            f"{reference_name} is {reference.shape[1]}x{reference.shape[0]}")


# --- manifest -------------------------------------------------------------------------------

class ManifestDataset(Dataset):
    """Rows of `<root>/manifest.csv` with the given split (columns id, split, input, gt, edge,
    seg, over; paths relative to root; seg may be empty = no label)."""

    def __init__(self, root: str | os.PathLike, split: str, transform=None):
        self.root = Path(root)
        self.split = split
        self.transform = transform
        rows = _read_rows(self.root)
        self.rows = [r for r in rows if r["split"] == split]
        if not self.rows:
            present = sorted({r["split"] for r in rows})
            raise DatasetError(f"{self.root / MANIFEST_NAME}: no rows with split '{split}' "
                               f"(splits present: {', '.join(present) or 'none'})")
        for r in self.rows:
            for key in ("input", "gt", "edge", "over"):
                if not r.get(key):
                    raise DatasetError(f"{self.root / MANIFEST_NAME}: row id '{r.get('id')}' has "
                                       f"an empty '{key}' path")

    def __len__(self) -> int:
        return len(self.rows)

    def file_problems(self) -> list[str]:
        """Missing, unreadable or mis-sized files of this split (headers only)."""
        groups = [(self.root / r["gt"], [self.root / r[k] for k in ("input", "edge", "over", "seg") if r.get(k)])
                  for r in self.rows]
        return _size_problems(groups, {})

    def load(self, index: int) -> dict:
        """Untransformed item at `index` (full image)."""
        row = self.rows[index]
        paths = {k: self.root / row[k] for k in ("input", "gt", "edge", "over")}
        gt = io.read_image(paths["gt"])
        input_rgb = io.read_image(paths["input"])
        edge = read_edge(paths["edge"])
        over = io.read_image(paths["over"])
        seg = read_seg(self.root / row["seg"]) if row.get("seg") else None
        _check_same_size(gt, str(paths["gt"]), input_rgb, str(paths["input"]))
        _check_same_size(gt, str(paths["gt"]), edge, str(paths["edge"]))
        _check_same_size(gt, str(paths["gt"]), over, str(paths["over"]))
        if seg is not None:
            _check_same_size(gt, str(paths["gt"]), seg, str(self.root / row["seg"]))
        return make_sample(input_rgb, gt, edge, seg, over, row["id"])

    def __getitem__(self, index: int) -> dict:
        sample = self.load(index)
        return self.transform(sample) if self.transform is not None else sample


# --- the authors' released layout ------------------------------------------------------------

# Split name -> candidate sub-folders of the released root, first existing wins. The release
# validated on its training folder by mistake (docs/method.md §4); here every split needs its own folder.
RELEASED_SPLIT_FOLDERS = {
    "train": ("train",),
    "val": ("val", "val_small", "valid", "validation"),
    "test": ("test", "testing"),
}


class ReleasedLayoutDataset(Dataset):
    """The authors' released VOC-smooth folders (defs/dataset.py + dataset_utils/ of the release):

        <root>/<split>/<n>.png   one image per sample: [GT | textured input] side by side
                                 (GT is the LEFT half, the input the right half)
        <root>/edge/<k>.png      edge label of GT k, 0 / 255
        <root>/seg/<k>.png       VOC label of GT k (the release's rename script stored colours)
        <root>/over/<k>.png      over-smoothed GT k
    where n = texture_index * n_gt + k, i.e. k = int(n) % n_gt. A missing seg/ folder gives
    all-ignore labels.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", n_gt: int = 150, transform=None):
        self.root = Path(root)
        self.split = split
        self.n_gt = int(n_gt)
        self.transform = transform
        if self.n_gt <= 0:
            raise DatasetError(f"n_gt must be positive, got {n_gt}")
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: released dataset folder not found")
        self.pair_dir = self._split_folder(split)
        self.edge_dir, self.seg_dir, self.over_dir = (self.root / n for n in ("edge", "seg", "over"))
        for folder in (self.edge_dir, self.over_dir):
            if not folder.is_dir():
                raise DatasetError(f"{folder}: folder not found (the released layout needs "
                                   f"{self.root}/edge and {self.root}/over)")
        self.has_seg = self.seg_dir.is_dir()

        self.files = []
        for path in io.list_images(self.pair_dir, recursive=False):
            try:
                number = int(path.stem)
            except ValueError:
                raise DatasetError(f"{path}: released sample names must be integers "
                                   f"(<texture_index * n_gt + gt_index>.png)") from None
            self.files.append((number, path))
        self.files.sort()
        if not self.files:
            raise DatasetError(f"{self.pair_dir}: no images")
        needed = sorted({n % self.n_gt for n, _ in self.files})
        folders = [self.edge_dir, self.over_dir] + ([self.seg_dir] if self.has_seg else [])
        for folder in folders:
            missing = [k for k in needed if not (folder / f"{k}.png").is_file()]
            if missing:
                raise DatasetError(f"{folder / f'{missing[0]}.png'}: missing ({len(missing)} of "
                                   f"{len(needed)} GT indices absent from {folder}; n_gt={self.n_gt})")

    def _split_folder(self, split: str) -> Path:
        candidates = RELEASED_SPLIT_FOLDERS.get(split, (split,))
        for name in candidates:
            if (self.root / name).is_dir():
                return self.root / name
        present = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        raise DatasetError(
            f"{self.root}: no folder for split '{split}' (looked for {', '.join(candidates)}; "
            f"present: {', '.join(present) or 'none'}). The release validated on its training "
            f"folder; move a subset of the training pairs into a separate folder instead.")

    def __len__(self) -> int:
        return len(self.files)

    def file_problems(self) -> list[str]:
        """Missing, unreadable or mis-sized files of this split (headers only)."""
        problems, sizes = [], {}
        for number, path in self.files:
            try:
                width, height = io.image_size(path)
            except io.ImageReadError as e:
                problems.append(str(e))
                continue
            if width % 2:
                problems.append(f"{path}: width {width} is odd; expected [GT | input] halves")
                continue
            k = number % self.n_gt
            sizes[path] = (width // 2, height)
            others = [d / f"{k}.png" for d in (self.edge_dir, self.over_dir)]
            others += [self.seg_dir / f"{k}.png"] if self.has_seg else []
            problems += [p for p in _size_problems([(path, others)], sizes) if p not in problems]
        return problems

    def load(self, index: int) -> dict:
        """Untransformed item at `index` (full image)."""
        number, path = self.files[index]
        k = number % self.n_gt
        pair = io.read_image(path)
        if pair.shape[1] % 2:
            raise DatasetError(f"{path}: width {pair.shape[1]} is odd; expected [GT | input] halves")
        half = pair.shape[1] // 2
        gt, input_rgb = pair[:, :half], pair[:, half:]
        edge_path, over_path, seg_path = (d / f"{k}.png" for d in (self.edge_dir, self.over_dir, self.seg_dir))
        edge = read_edge(edge_path)
        over = io.read_image(over_path)
        seg = read_seg(seg_path) if self.has_seg else None
        gt_name = f"{path} (GT half)"
        _check_same_size(gt, gt_name, edge, str(edge_path))
        _check_same_size(gt, gt_name, over, str(over_path))
        if seg is not None:
            _check_same_size(gt, gt_name, seg, str(seg_path))
        return make_sample(input_rgb, gt, edge, seg, over, path.stem)

    def __getitem__(self, index: int) -> dict:
        sample = self.load(index)
        return self.transform(sample) if self.transform is not None else sample


# --- online blending -------------------------------------------------------------------------

def _gray_copy(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> the same picture in gray: its rounded luma in all three channels."""
    luma = np.clip(np.rint(blend.texture_to_gray(rgb)), 0, 255).astype(np.uint8)
    return np.repeat(luma[..., None], 3, axis=2)


class OnlineBlendDataset(Dataset):
    """Textured inputs made on the fly: each item tiles a random texture at a random offset and
    amplitude over its GT; edge from blend.edge_label.

    texture_std 0 (default): the authors' blend (blend.blend_texture: gray, plain tiling, the
    texture's own contrast times the amplitude). texture_std > 0: blend.blend_layer with a scale
    drawn from `scale`, the colour blend with probability `colour` (else gray), the layer brought
    to texture_std gray levels times the amplitude.
    `gray_gt`: probability that the GT and its over-smoothed image are replaced by their luma
    (blend.texture_to_gray, rounded, in all three channels) before the texture is laid on, so that
    gray pictures, with gray or coloured texture, are seen too; 0 draws nothing extra.
    `soft_gt`: probability that the GT and its over-smoothed image are blurred (a Gaussian of sigma
    drawn from `soft_sigma`, in pixels) before the texture is laid on, so that soft structure under
    sharp texture is seen too (blurred photographs, out-of-focus backgrounds); 0 draws nothing extra.

    `samples`: GT image paths, or manifest rows (dicts with gt, seg, over, id; paths relative to
    `root`). The over-smoothed image comes from the row's `over` path; without one it is computed
    once per GT with blend.smooth_spec(over_smoother) and cached in memory.
    `seed`: None draws from torch's RNG (training); an int makes item i always the same blend
    (validation).
    """

    def __init__(self, samples, textures: str | os.PathLike, root: str | os.PathLike | None = None,
                 transform=None, amplitude=(0.75, 1.25), color=None,
                 over_smoother: str = blend.OVER_SMOOTHER, seed: int | None = None,
                 scale=(1.0, 1.0), colour: float = 0.0, texture_std: float = 0.0, gray_gt: float = 0.0,
                 soft_gt: float = 0.0, soft_sigma=(1.0, 3.0)):
        self.root = Path(root) if root is not None else None
        self.transform = transform
        self.amplitude = (float(amplitude[0]), float(amplitude[1]))
        self.scale = (float(scale[0]), float(scale[1]))
        self.colour, self.texture_std, self.gray_gt = float(colour), float(texture_std), float(gray_gt)
        self.soft_gt, self.soft_sigma = float(soft_gt), (float(soft_sigma[0]), float(soft_sigma[1]))
        if self.texture_std <= 0 and (self.scale != (1.0, 1.0) or self.colour > 0):
            raise DatasetError("data.blend_scale other than [1, 1] and data.blend_colour > 0 need "
                               "data.blend_texture_std > 0 (the layer's contrast)")
        self.color = color
        self.over_smoother = over_smoother
        self.seed = seed
        self.items = [self._as_row(s, i) for i, s in enumerate(samples)]
        if not self.items:
            raise DatasetError("OnlineBlendDataset: no ground-truth images given")
        self.texture_paths = io.list_images(textures) if Path(textures).is_dir() else []
        if not self.texture_paths:
            raise DatasetError(f"{textures}: no texture images found (data.textures must be a "
                               f"folder of images)")
        self._texture_cache: dict[int, np.ndarray] = {}
        self._over_cache: dict[int, np.ndarray] = {}

    def _resolve(self, path: str) -> Path:
        return self.root / path if self.root is not None else Path(path)

    def _as_row(self, sample, index: int) -> dict:
        if isinstance(sample, dict):
            return {"id": str(sample.get("id") or index), "gt": self._resolve(sample["gt"]),
                    "seg": self._resolve(sample["seg"]) if sample.get("seg") else None,
                    "over": self._resolve(sample["over"]) if sample.get("over") else None}
        path = Path(sample)
        return {"id": path.stem, "gt": path, "seg": None, "over": None}

    def __len__(self) -> int:
        return len(self.items)

    def _texture(self, index: int) -> np.ndarray:
        """Texture `index`: gray (authors' blend) or RGB (blend_layer), read once."""
        if index not in self._texture_cache:
            rgb = io.read_image(self.texture_paths[index])
            self._texture_cache[index] = rgb if self.texture_std > 0 else blend.texture_to_gray(rgb)
        return self._texture_cache[index]

    def _over(self, index: int, gt: np.ndarray) -> np.ndarray:
        row = self.items[index]
        if row["over"] is not None:
            over = io.read_image(row["over"])
            _check_same_size(gt, str(row["gt"]), over, str(row["over"]))
            return over
        if index not in self._over_cache:
            self._over_cache[index] = blend.smooth_spec(gt, self.over_smoother)
        return self._over_cache[index]

    def file_problems(self) -> list[str]:
        """Missing, unreadable or mis-sized GT/label/over-smoothed files and unreadable textures."""
        groups = [(r["gt"], [p for p in (r["seg"], r["over"]) if p is not None]) for r in self.items]
        problems = _size_problems(groups, {})
        for path in self.texture_paths:
            try:
                io.image_size(path)
            except io.ImageReadError as e:
                problems.append(str(e))
        return problems

    def load(self, index: int) -> dict:
        """Untransformed item at `index`: a fresh random blend (or the seeded one)."""
        row = self.items[index]
        generator = None
        if self.seed is not None:
            generator = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + index)
        gt = io.read_image(row["gt"])
        seg = read_seg(row["seg"]) if row["seg"] is not None else None
        if seg is not None:
            _check_same_size(gt, str(row["gt"]), seg, str(row["seg"]))
        t = int(torch.randint(len(self.texture_paths), (), generator=generator))
        texture = self._texture(t)
        offset = (int(torch.randint(texture.shape[0], (), generator=generator)),
                  int(torch.randint(texture.shape[1], (), generator=generator)))
        def uniform(low: float, high: float) -> float:
            return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))

        amplitude = uniform(*self.amplitude)
        over = self._over(index, gt)
        if self.gray_gt > 0 and uniform(0.0, 1.0) < self.gray_gt:
            gt, over = _gray_copy(gt), _gray_copy(over)
        if self.soft_gt > 0 and uniform(0.0, 1.0) < self.soft_gt:
            sigma = uniform(*self.soft_sigma)
            gt, over = blend.smooth(gt, "gaussian", sigma=sigma), blend.smooth(over, "gaussian", sigma=sigma)
        if self.texture_std > 0:
            # scale drawn log-uniformly: as many halvings as doublings
            scale = float(np.exp(uniform(np.log(self.scale[0]), np.log(self.scale[1]))))
            mode = "colour" if uniform(0.0, 1.0) < self.colour else "gray"
            input_rgb = blend.blend_layer(gt, texture, mode, scale, amplitude, offset, self.texture_std)
        else:
            input_rgb = blend.blend_texture(gt, texture, offset=offset, amplitude=amplitude, color=self.color)
        edge = blend.edge_label(gt)
        return make_sample(input_rgb, gt, edge, seg, over, row["id"])

    def __getitem__(self, index: int) -> dict:
        sample = self.load(index)
        return self.transform(sample) if self.transform is not None else sample


# --- factory ---------------------------------------------------------------------------------

class RepeatDataset(Dataset):
    """`times` passes over `dataset` per epoch (index modulo its length)."""

    def __init__(self, dataset: Dataset, times: int):
        if times < 1:
            raise ValueError(f"repeat must be >= 1, got {times}")
        self.dataset, self.times = dataset, int(times)

    def __len__(self) -> int:
        return len(self.dataset) * self.times

    def __getitem__(self, index: int) -> dict:
        return self.dataset[index % len(self.dataset)]

    def file_problems(self) -> list[str]:
        return self.dataset.file_problems() if hasattr(self.dataset, "file_problems") else []


def _split_name(data_cfg, split: str) -> str:
    """'train' | 'val' | 'test' -> the configured split name (other names pass through)."""
    return {"train": data_cfg.train_split, "val": data_cfg.val_split,
            "test": data_cfg.test_split}.get(split, split)


def build_dataset(data_cfg, split: str, train: bool) -> Dataset:
    """Dataset for `split` ('train' | 'val' | 'test' or a literal split name) from a DataConfig.

    train=True: JointRandomTransform(patch_size, ...) and data_cfg.repeat passes; train=False:
    full images, or a deterministic centre crop when data_cfg.val_crop > 0.
    """
    if train:
        transform = JointRandomTransform(data_cfg.patch_size, data_cfg.hflip, data_cfg.rotate,
                                         data_cfg.brightness, data_cfg.contrast, data_cfg.hue)
    else:
        transform = CenterCrop(data_cfg.val_crop) if data_cfg.val_crop > 0 else None
    name = _split_name(data_cfg, split)
    fmt = data_cfg.format
    if fmt == "manifest":
        dataset = ManifestDataset(data_cfg.root, name, transform)
    elif fmt == "released":
        dataset = ReleasedLayoutDataset(data_cfg.root, name, data_cfg.released_n_gt, transform)
    elif fmt == "online" and not train and data_cfg.online_eval == "stored":
        dataset = ManifestDataset(data_cfg.root, name, transform)  # the stored blends: fixed, other textures
    elif fmt == "online":
        if not data_cfg.textures:
            raise DatasetError("data.format=online needs data.textures (a folder of texture images)")
        rows = [r for r in _read_rows(data_cfg.root) if r["split"] == name]
        if not rows:
            raise DatasetError(f"{Path(data_cfg.root) / MANIFEST_NAME}: no rows with split '{name}'")
        # One item per GT (a manifest lists each GT once per stored texture); the texture is drawn.
        unique = {}
        for r in rows:
            unique.setdefault(r["gt"], {**r, "id": r.get("structure") or Path(r["gt"]).stem})
        rows = list(unique.values())
        # Validation blends are fixed per item so that scores are comparable between epochs.
        dataset = OnlineBlendDataset(rows, data_cfg.textures, root=data_cfg.root, transform=transform,
                                     seed=None if train else 0, amplitude=data_cfg.blend_amplitude,
                                     scale=data_cfg.blend_scale, colour=data_cfg.blend_colour,
                                     texture_std=data_cfg.blend_texture_std,
                                     gray_gt=data_cfg.blend_gray_gt if train else 0.0,
                                     soft_gt=data_cfg.blend_soft_gt if train else 0.0,
                                     soft_sigma=data_cfg.blend_soft_sigma)
    else:
        raise DatasetError(f"unknown data.format '{fmt}' (manifest | released | online)")
    if train and data_cfg.repeat > 1:
        dataset = RepeatDataset(dataset, data_cfg.repeat)
    return dataset
