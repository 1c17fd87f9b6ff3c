"""The shipped checkpoints against the real Flowers-102 (FLOWERS_ROOT): the figures in their metadata are
re-measured, so a stale or swapped file fails here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS = REPO / "checkpoints"


def needs(name):
    path = CHECKPOINTS / name
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    return path


def run_json(*args):
    result = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_shipped_classifier_reaches_its_recorded_valid_accuracy(flowers_root, tmp_path):
    import torch

    checkpoint = needs("classifier.pt")
    recorded = torch.load(checkpoint, weights_only=True)["meta"]["valid_top1"]
    scores = run_json("train.classifier", "evaluate", "--checkpoint", checkpoint, "--data", flowers_root,
                      "--subset", "valid", "--json", "--cache-dir", tmp_path)
    assert scores["images"] == 818
    assert scores["top1"] >= 0.75
    assert abs(scores["top1"] - recorded) <= 2 / 818  # bf16 vs fp32 arithmetic may flip an image or two


@pytest.mark.slow
@pytest.mark.parametrize("name", ["colorizer.onnx", "seed-colorizer.onnx"])
def test_shipped_onnx_colorizers_beat_gray_on_test_images(flowers_root, name):
    model = needs(name)
    scores = run_json("train.colorizer", "evaluate", "--onnx", model, "--data", flowers_root, "--subset", "test",
                      "--limit", "100", "--json")
    assert scores["images"] == 100
    assert scores["psnr"] > scores["gray"]["psnr"] + 0.5
    assert scores["colorfulness_ratio"] > 0.3
