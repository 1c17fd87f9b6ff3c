"""Torch-free colorizer runtime: OpenCV + ONNX Runtime.

    python -m runtime.colorize photo.jpg old-films/ -o colorized/
    python -m runtime.benchmark

The ONNX file is the only interface with training (input L* [N,1,H,W] in [0, 100], output a*, b* [N,2,H,W]);
nothing here imports torch, train/ or export/.
"""

from runtime.model import ColorizerModel, ModelError, ProviderError, resolve_model

__all__ = ["ColorizerModel", "ModelError", "ProviderError", "resolve_model"]
