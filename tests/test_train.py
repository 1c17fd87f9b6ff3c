"""The training scripts on a tiny synthetic Flowers-102: the loops run, resume after a kill gives the
same weights as an uninterrupted run, torchrun works with 2 CPU processes, evaluate gives known answers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

from tests.flowers_fixture import make_tiny_flowers
from train import metrics
from train.engine import load_checkpoint
from train.lab import rgb_to_lab
from train.models.classifier import resnet18_gray

REPO = Path(__file__).resolve().parents[1]
FAST = ["--image-size", "32", "--workers", "0", "--amp", "off"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_flowers(tmp_path_factory.mktemp("data"))


def run(module, *args, env=None, check=True):
    result = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{module} {args} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def classifier_fit(tiny_data, tmp_path, *extra, epochs=2):
    return [
        "fit", "--data", tiny_data, "--epochs", epochs, "--batch-size", "8", *FAST,
        "--out", tmp_path / "classifier.pt", "--run-dir", tmp_path / "run", "--cache-dir", tmp_path / "cache", *extra,
    ]


def test_rgb_to_lab_matches_skimage():
    rgb = np.random.default_rng(0).integers(0, 256, size=(16, 16, 3)).astype(np.uint8)
    ours = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255).permute(1, 2, 0).numpy()
    assert np.abs(ours - rgb2lab(rgb)).max() < 1e-3


def test_classifier_fit_writes_a_loadable_checkpoint_and_log(tiny_data, tmp_path):
    run("train.classifier", *classifier_fit(tiny_data, tmp_path))
    checkpoint = load_checkpoint(tmp_path / "classifier.pt")
    model = resnet18_gray(102)
    model.load_state_dict(checkpoint["model"])  # fp16 weights load into the fp32 model
    assert model.conv1.in_channels == 1
    assert checkpoint["meta"]["l_center"] == 50.0 and checkpoint["meta"]["image_size"] == 32
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert 0.0 <= log[-1]["valid_top1"] <= 1.0


def test_classifier_resume_after_kill_matches_uninterrupted_run(tiny_data, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run("train.classifier", *classifier_fit(tiny_data, straight, epochs=3))

    process = subprocess.Popen(
        [sys.executable, "-m", "train.classifier", *map(str, classifier_fit(tiny_data, killed, epochs=3))],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    state = killed / "run" / "last.pt"
    deadline = time.time() + 300
    while not state.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    epochs_done = len((killed / "run" / "log.jsonl").read_text().splitlines())
    assert epochs_done < 3, "the run finished before it could be killed"

    resumed = run("train.classifier", *classifier_fit(tiny_data, killed, "--resume", epochs=3))
    assert "resumed from" in resumed.stderr
    a = torch.load(straight / "run" / "last.pt", weights_only=True)["model"]
    b = torch.load(killed / "run" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"


def test_classifier_under_torchrun_with_two_cpu_processes(tiny_data, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
         "train.classifier", *map(str, classifier_fit(tiny_data, tmp_path, epochs=1))],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["world_size"] == 2  # only rank 0 wrote
    assert (tmp_path / "classifier.pt").is_file()


def test_classifier_evaluate_known_answer(tiny_data, tmp_path):
    """A model whose only signal is the fc bias predicts one class for every image."""
    model = resnet18_gray(102)
    torch.nn.init.zeros_(model.fc.weight)
    torch.nn.init.zeros_(model.fc.bias)
    model.fc.bias.data[1] = 10.0  # class index 1 = label 2, one third of the fixture's valid images
    torch.save({"model": model.state_dict(), "meta": {"image_size": 32}}, tmp_path / "fixed.pt")
    result = run("train.classifier", "evaluate", "--checkpoint", tmp_path / "fixed.pt", "--data", tiny_data,
                 "--subset", "valid", "--json", "--cache-dir", tmp_path / "cache", "--amp", "off")
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert scores["images"] == 12
    assert scores["top1"] == pytest.approx(4 / 12)
    assert scores["top5"] >= scores["top1"]


def test_missing_data_folder_is_one_clear_line(tmp_path):
    result = run("train.classifier", "fit", "--data", tmp_path / "nowhere", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: no flowers-102/ folder")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("preset", ["default", "seed"])
def test_colorizer_fit_and_evaluate(tiny_data, tmp_path, preset):
    run("train.classifier", *classifier_fit(tiny_data, tmp_path, epochs=1))
    run("train.colorizer", "fit", "--data", tiny_data, "--classifier", tmp_path / "classifier.pt", "--preset", preset,
        "--epochs", "1", "--batch-size", "8", *FAST, "--valid-images", "3", "--out", tmp_path / "colorizer.pt",
        "--run-dir", tmp_path / "crun", "--cache-dir", tmp_path / "cache")
    meta = load_checkpoint(tmp_path / "colorizer.pt")["meta"]
    assert meta["preset"] == preset and meta["epochs_trained"] == 1 and "valid_psnr" in meta["valid"]
    result = run("train.colorizer", "evaluate", "--checkpoint", tmp_path / "colorizer.pt", "--data", tiny_data,
                 "--subset", "test", "--json", "--grid", tmp_path / "grid.png", "--cache-dir", tmp_path / "cache")
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert scores["images"] == 12 and scores["gray"]["colorfulness"] == 0.0
    assert 5.0 < scores["psnr"] < 60.0 and 0.0 <= scores["auc"] <= 1.0
    assert (tmp_path / "grid.png").stat().st_size > 0

    run("train.colorizer", "tune", "--checkpoint", tmp_path / "colorizer.pt", "--data", tiny_data, "--input-sizes",
        "32,64", "--temperatures", "0.2,1.0", "--min-colorfulness", "0", "--out", tmp_path / "tuned.pt")
    tuned = load_checkpoint(tmp_path / "tuned.pt")
    chosen = tuned["meta"]["tuning"]["chosen"]
    assert tuned["meta"]["input_size"] == chosen["input_size"] in (32, 64)
    assert chosen["psnr"] == max(row["psnr"] for row in tuned["meta"]["tuning"]["table"])
    if preset == "default":
        assert len(tuned["meta"]["tuning"]["table"]) == 4
        assert float(tuned["model"]["temperature"]) == pytest.approx(chosen["temperature"])


def test_colorizer_fit_on_a_plain_image_folder(tiny_data, tmp_path):
    run("train.colorizer", "fit", "--images", tiny_data / "flowers-102" / "jpg", "--encoder-init", "none",
        "--epochs", "1", "--batch-size", "8", *FAST, "--limit", "16", "--out", tmp_path / "c.pt",
        "--run-dir", tmp_path / "crun", "--cache-dir", tmp_path / "cache")
    assert load_checkpoint(tmp_path / "c.pt")["meta"]["training_data"].startswith("images under")


def test_metrics_known_answers():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(32, 32, 3)).astype(np.uint8)
    assert metrics.psnr(image, image) == metrics.PSNR_CAP_DB
    assert metrics.ssim(image, image) == pytest.approx(1.0)
    gray = np.repeat(image[..., :1], 3, axis=2)
    assert metrics.colorfulness(gray) == 0.0
    assert metrics.colorfulness(image) > 10.0
    noisy = np.clip(image.astype(int) + 16, 0, 255).astype(np.uint8)
    assert 20.0 < metrics.psnr(noisy, image) < 25.0  # an offset of ~16 -> about 24 dB
    ab = rng.normal(size=(2, 8, 8)) * 30
    assert metrics.auc(metrics.ab_accuracy_curve(ab, ab)) == pytest.approx(1.0)
    curve = metrics.ab_accuracy_curve(ab + np.array([10.0, 0.0])[:, None, None], ab)  # every error is 10
    assert curve[9] == 0.0 and curve[10] == 1.0
