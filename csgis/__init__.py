"""csgis: reference PyTorch implementation of CSGIS-Net (Contrastive Semantic-Guided Image Smoothing)."""
__version__ = "0.1.0"
