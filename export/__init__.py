"""Convert the colorizer to ONNX (fp32, fp16, int8) and verify it against PyTorch."""
