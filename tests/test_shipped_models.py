"""The shipped checkpoints: the classifier's recorded valid count is re-measured on the real Flowers-102 + general
data (FLOWERS_ROOT), so a stale or swapped file fails here; the shipped ONNX colorizers carry the metadata and
inputs the runtime relies on. Files from before the general data set (no valid_correct, no domain metadata) skip
with the reason."""

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, run_module

CHECKPOINTS = REPO / "checkpoints"
ONNX_FILES = {  # file -> (precision, preset)
    "colorizer.onnx": ("fp32", "default"),
    "colorizer-int8.onnx": ("int8", "default"),
    "seed-colorizer.onnx": ("fp32", "seed"),
}


def needs(name) -> Path:
    path = CHECKPOINTS / name
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    return path


@pytest.mark.slow
def test_shipped_classifier_reproduces_its_recorded_valid_count(flowers_root):
    import torch

    checkpoint = needs("classifier.pt")
    meta = torch.load(checkpoint, weights_only=True, map_location="cpu")["meta"]
    if "valid_correct" not in meta:
        pytest.skip(f"{checkpoint} records no valid_correct (an old checkpoint, from before counted evaluation)")
    result = run_module("train.classifier", "evaluate", "--checkpoint", checkpoint, "--data", flowers_root,
                        "--subset", "valid", "--json", timeout=3600)
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert scores["images"] == meta["valid_images"]
    assert scores["image_size"] == meta["eval_image_size"]
    # fp32 in a fixed order: the same count, give or take one image whose logits another CPU sums differently
    assert abs(scores["correct"] - meta["valid_correct"]) <= 1, (scores["correct"], meta["valid_correct"])


@pytest.mark.parametrize("name", sorted(ONNX_FILES))
def test_shipped_onnx_colorizers_carry_the_runtime_metadata(name):
    from runtime.model import ColorizerModel

    path = needs(name)
    model = ColorizerModel(path, provider="cpu")  # also checks the signature against the contract
    if "domain" not in model.metadata:
        pytest.skip(f"{path} is an export from before the general data set (no domain metadata)")
    precision, preset = ONNX_FILES[name]
    info = model.info
    assert (info.precision, info.preset) == (precision, preset)
    assert info.domain in ("flowers", "general")
    if preset == "default":
        assert info.domain == "general"  # the shipped runtime models learnt from Flowers-102 and general/
    assert info.input_size >= info.size_multiple == 32
    assert model.has_temperature == (preset == "default")
    if preset == "default":
        assert info.temperature is not None  # the graph's default, stated in the metadata
    assert len(info.source_sha256) == 64
    if preset == "default" and (CHECKPOINTS / "colorizer.pt").is_file():
        from train.engine import file_sha256

        assert info.source_sha256 == file_sha256(CHECKPOINTS / "colorizer.pt"), f"{name} is not from colorizer.pt"
