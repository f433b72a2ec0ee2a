"""VOC-smooth data: blending and edge labels (blend), manifests, datasets and joint augmentation.

Exports are resolved on first use (PEP 562), so `csgis.data.blend` and `csgis.data.manifest`,
which the dataset builders use, load without importing torch.
"""
from importlib import import_module

_EXPORTS = {
    "build_dataset": "datasets", "ManifestDataset": "datasets", "ReleasedLayoutDataset": "datasets",
    "OnlineBlendDataset": "datasets", "RepeatDataset": "datasets", "DatasetError": "datasets",
    "check_dataset": "datasets",
    "JointRandomTransform": "transforms", "CenterCrop": "transforms", "center_crop": "transforms",
    "color_jitter": "transforms", "read_manifest": "manifest",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"csgis.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'csgis.data' has no attribute {name!r}")
