"""Networks: the CSGIS-Net smoother and the DeepLabV3+ MobileNetV2 segmenter."""
from .smoother import HDCBlock, Smoother, SmootherOutput, build_smoother, count_parameters

__all__ = ["HDCBlock", "Smoother", "SmootherOutput", "build_smoother", "count_parameters",
           "deeplabv3plus_mobilenet", "imagenet_normalize"]


def __getattr__(name):
    # The segmenter pulls in torchvision; import it only when it is asked for.
    if name in ("deeplabv3plus_mobilenet", "imagenet_normalize"):
        from . import segmenter
        return getattr(segmenter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
