"""The shipped ONNX models. In the repo this is checkpoints/; `pip install .` installs its *.onnx files and
README.md as the package data of `runtime.models` (see pyproject.toml), and leaves the training .pt files out."""
