"""The 0.4 training data: the old-print damage model, the per-set mixture, the false-colour figure and the damaged
evaluation protocol, on small real arrays and the tiny synthetic data set."""

import json

import numpy as np
import pytest
import torch

from runtime import color
from tests.conftest import run_main
from train import degrade, metrics
from train.data import ConcatImages, MixtureSampler


def test_gray_from_lightness_inverts_lightness():
    lightness = np.linspace(0, 100, 1001, dtype=np.float32).reshape(11, 91)
    back = color.lightness(degrade.gray_from_lightness(lightness))
    assert np.abs(back - lightness).max() < 0.5  # one 8-bit step is at most ~0.4 L*


def test_damage_is_fixed_by_the_file_name_and_changes_the_photo():
    gray = np.tile(np.linspace(30, 220, 160, dtype=np.float32), (120, 1)).astype(np.uint8)
    first = degrade.damage_gray(gray, degrade.file_rng("photo.jpg"))
    again = degrade.damage_gray(gray, degrade.file_rng("photo.jpg"))
    other = degrade.damage_gray(gray, degrade.file_rng("other.jpg"))
    assert first.shape == gray.shape and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    changed = [np.abs(degrade.damage_gray(gray, degrade.file_rng(f"{i}")).astype(int) - gray).mean() for i in range(20)]
    assert np.median(changed) > 3.0  # gray levels: damage is visible on a typical photo, not a no-op


def test_false_colour_counts_only_too_vivid_and_wrong_pixels():
    truth = np.zeros((10, 10, 2))
    truth[:, 5:] = (40.0, 0.0)  # the right half is truly red
    prediction = truth.copy()
    prediction[:2, :5] = (30.0, 0.0)  # 10 px: gray painted red (too vivid by 30, wrong by 30)
    prediction[:2, 5:] = (0.0, 0.0)  # 10 px: red left gray (wrong, but not too vivid)
    prediction[2:4, :5] = (15.0, 0.0)  # 10 px: a faint tint (below the margin)
    assert metrics.false_colour(prediction, truth) == pytest.approx(0.10)
    assert metrics.false_colour(np.zeros_like(truth), truth) == 0.0


def test_mixture_sampler_draws_each_set_its_passes():
    images = ConcatImages([np.zeros((40, 2, 2, 3), np.uint8), np.ones((10, 2, 2, 3), np.uint8)])
    assert len(images) == 50 and images[45].max() == 1 and images[39].max() == 0
    sampler = MixtureSampler([40, 10], [0.5, 2.0], seed=3)
    epoch = list(sampler)
    assert len(epoch) == len(sampler) == 40
    assert sum(i < 40 for i in epoch) == 20 and len(set(i for i in epoch if i < 40)) == 20
    assert sorted(i for i in epoch if i >= 40) == sorted(list(range(40, 50)) * 2)
    sampler.set_epoch(1)
    assert list(sampler) != epoch


def test_damaged_crops_keep_the_clean_colour():
    from torchvision.transforms import v2

    from train.data import DamagedCrops

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    crops = DamagedCrops(images, v2.CenterCrop(32), damage=1.0)
    torch.manual_seed(0)
    crop, lightness = crops[1]
    assert crop.shape == (3, 32, 32) and torch.equal(crop, torch.from_numpy(images[1, 4:36, 4:36]).permute(2, 0, 1))
    assert lightness.shape == (1, 32, 32) and torch.isfinite(lightness).all()
    assert not torch.isfinite(DamagedCrops(images, v2.CenterCrop(32), damage=0.0)[1][1]).any()


def test_a_source_weighed_on_its_own_leaves_its_set():
    from train.colorizer import split_sources

    paths, sources = ["a1", "c1", "a2", "w1", "c2"], ["a", "cars", "a", "weather", "cars"]
    assert split_sources("photos", paths, sources, {"photos": 0.2}) == [("photos", paths)]
    assert split_sources("photos", paths, sources, {"photos/cars": 1, "general/a": 2, "photos/boats": 1}) == [
        ("photos", ["a1", "a2", "w1"]), ("photos/cars", ["c1", "c2"])]
    assert split_sources("photos", paths, sources, {f"photos/{s}": 1 for s in ("a", "cars", "weather")}) == [
        ("photos/a", ["a1", "a2"]), ("photos/cars", ["c1", "c2"]), ("photos/weather", ["w1"])]


@pytest.mark.slow
def test_fit_on_a_mix_with_damage_then_evaluate_both_protocols(tiny_data, tmp_path, capfd):
    from train.models import build_colorizer

    init = tmp_path / "init.pt"  # a warm start: an untrained colorizer checkpoint of the default preset
    model = build_colorizer("default", temperature=0.38)
    torch.save({"model": model.state_dict(), "meta": {"preset": "default", "model_kwargs": {"temperature": 0.38,
                "num_bins": len(model.bins)}}}, init)
    run_main(capfd, "train.colorizer", "fit", "--data", tiny_data, "--init", init, "--mix",
               "flowers=0.5,general=2,general/people=3",
               "--damage", "0.5", "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--workers", "0",
               "--amp", "off", "--valid-images", "8", "--out", tmp_path / "c.pt", "--run-dir", tmp_path / "run",
               "--cache-dir", tmp_path / "cache")
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert {"valid_general_false_colour", "valid_general_damaged_psnr", "valid_flowers_damaged_gray_psnr"} <= set(record)
    meta = torch.load(tmp_path / "c.pt", weights_only=True)["meta"]
    assert meta["recipe"]["mix"] == {"flowers": 0.5, "general": 2.0, "general/people": 3.0}
    assert meta["damage"] == 0.5
    assert "x0.5/epoch" in meta["training_data"] and "x2/epoch" in meta["training_data"]
    assert "general/people train (3, x3/epoch)" in meta["training_data"]  # the source apart from its set
    results = {}
    for protocol in ([], ["--damage"]):
        out = run_main(capfd, "train.colorizer", "evaluate", "--checkpoint", tmp_path / "c.pt", "--data", tiny_data,
                       "--sets", "general", "--json", *protocol)
        results[bool(protocol)] = json.loads(out.stdout.strip().splitlines()[-1])["general"]
    clean, damaged = results[False], results[True]
    assert damaged["damaged"] and not clean["damaged"]
    assert clean["gray"]["psnr"] == pytest.approx(damaged["gray"]["psnr"])  # gray is judged on the clean L* both times
    assert clean["psnr"] != damaged["psnr"]
    assert 0.0 <= damaged["false_colour"] <= 1.0
