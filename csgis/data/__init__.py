"""VOC-smooth data: blending and edge labels (blend), manifests, datasets and joint augmentation."""
from csgis.data.datasets import (
    DatasetError,
    ManifestDataset,
    OnlineBlendDataset,
    ReleasedLayoutDataset,
    RepeatDataset,
    build_dataset,
)
from csgis.data.manifest import read_manifest
from csgis.data.transforms import CenterCrop, JointRandomTransform, center_crop, color_jitter

__all__ = [
    "build_dataset", "ManifestDataset", "ReleasedLayoutDataset", "OnlineBlendDataset",
    "RepeatDataset", "DatasetError", "JointRandomTransform", "CenterCrop", "center_crop",
    "color_jitter", "read_manifest",
]
