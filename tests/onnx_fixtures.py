"""Kept for older imports: the tiny ONNX model builders live in tests/conftest.py (one copy)."""

from tests.conftest import make_conv_model, make_tiny_colorizer

__all__ = ["make_conv_model", "make_tiny_colorizer"]
