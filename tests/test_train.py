"""The training scripts on a tiny synthetic Flowers-102 + general set: the loops run, what fit records is what
evaluate prints, a NaN loss stops training without touching the saved files, resume after a kill gives the same
weights as an uninterrupted run, torchrun works with 2 CPU processes, evaluate gives known answers, and every
unusable input (a missing, damaged or wrong-kind file) is one `error:` line with exit 2."""

import importlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

from runtime import color
from tests.conftest import REPO, make_tiny_colorizer, run_main, run_module
from tests.flowers_fixture import CLASSES, GENERAL_CLASSES, GENERAL_PER_CLASS
from train import losses, metrics
from train.data import FLOWER_CLASSES, LABELLED_SOURCES
from train.engine import half_state_dict, load_checkpoint
from train.lab import AB_SCALE, rgb_to_lab
from train.models import build_colorizer
from train.models.classifier import resnet18_gray

FAST = ["--image-size", "32", "--workers", "0", "--amp", "off"]
FLOWER_VALID = len(CLASSES) * 4  # make_tiny_flowers' default per_class
GENERAL_LABELLED = [(s, label) for s, label in GENERAL_CLASSES if s in LABELLED_SOURCES]
NUM_CLASSES = FLOWER_CLASSES + len(GENERAL_LABELLED)  # the classifier's classes on the tiny data


def run(module, *args, env=None, check=True):
    return run_module(module, *args, env=env, check=check)


def last_json(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def terminal_lines(text: str) -> list[str]:
    """Lines as a terminal shows them (progress bars redraw with carriage returns)."""
    return [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]


def classifier_fit(tiny_data, tmp_path, *extra, epochs=2):
    return [
        "fit", "--data", tiny_data, "--epochs", epochs, "--batch-size", "8", *FAST,
        "--out", tmp_path / "classifier.pt", "--run-dir", tmp_path / "run", "--cache-dir", tmp_path / "cache", *extra,
    ]


@pytest.fixture(scope="module")
def fitted_classifier(tiny_data, tmp_path_factory) -> Path:
    """A folder holding classifier.pt and run/ (last.pt, log.jsonl) from a 2-epoch fit on the tiny data."""
    folder = tmp_path_factory.mktemp("classifier")
    run("train.classifier", *classifier_fit(tiny_data, folder))
    return folder


def test_rgb_to_lab_matches_skimage():
    rgb = np.random.default_rng(0).integers(0, 256, size=(16, 16, 3)).astype(np.uint8)
    ours = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255).permute(1, 2, 0).numpy()
    assert np.abs(ours - rgb2lab(rgb)).max() < 1e-3


@pytest.mark.slow
def test_classifier_fit_writes_a_loadable_checkpoint_and_log(fitted_classifier):
    checkpoint = load_checkpoint(fitted_classifier / "classifier.pt")
    meta = checkpoint["meta"]
    assert meta["classes"][:FLOWER_CLASSES] == [f"flowers/{i + 1:03d}" for i in range(FLOWER_CLASSES)]
    assert meta["classes"][FLOWER_CLASSES:] == sorted(f"{s}/{label}" for s, label in GENERAL_LABELLED)
    model = resnet18_gray(len(meta["classes"]))
    model.load_state_dict(checkpoint["model"])  # fp16 weights load into the fp32 model
    assert model.conv1.in_channels == 1 and model.fc.out_features == NUM_CLASSES
    assert meta["l_center"] == 50.0 and meta["image_size"] == meta["eval_image_size"] == 32
    log = [json.loads(line) for line in (fitted_classifier / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert 0.0 <= log[-1]["valid_top1"] <= 1.0
    assert meta["valid_images"] == FLOWER_VALID + len(GENERAL_LABELLED) * GENERAL_PER_CLASS[1]
    assert meta["valid_top1"] == max(r["valid_top1"] for r in log)  # the best epoch is the one shipped


@pytest.mark.slow
def test_classifier_fit_records_exactly_what_evaluate_prints(fitted_classifier, tiny_data, tmp_path):
    meta = load_checkpoint(fitted_classifier / "classifier.pt")["meta"]
    result = run("train.classifier", "evaluate", "--checkpoint", fitted_classifier / "classifier.pt", "--data",
                 tiny_data, "--subset", "valid", "--json", "--cache-dir", tmp_path / "cache")
    scores = last_json(result)
    assert scores["image_size"] == meta["eval_image_size"]
    assert (scores["correct"], scores["images"]) == (meta["valid_correct"], meta["valid_images"])
    assert scores["top1"] == meta["valid_top1"] and scores["top5"] == meta["valid_top5"]
    assert scores["flowers_102way"] == meta["valid_flowers_102way"]
    assert scores["per_source"] == meta["valid_per_source"]
    assert set(scores["per_source"]) == {"flowers", *LABELLED_SOURCES}
    assert f"({meta['valid_correct']}/{meta['valid_images']})" in result.stderr  # the table says the same


@pytest.mark.slow
def test_a_nan_loss_stops_training_and_leaves_the_saved_weights_alone(fitted_classifier, tiny_data, tmp_path):
    shutil.copytree(fitted_classifier, tmp_path / "run-copy")
    folder = tmp_path / "run-copy"
    before = {p: p.read_bytes() for p in (folder / "classifier.pt", folder / "run" / "last.pt")}
    result = run("train.classifier", *classifier_fit(tiny_data, folder, "--lr", "1e30", "--overwrite", epochs=2),
                 check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in terminal_lines(result.stderr) if line.startswith("error:")]
    assert len(errors) == 1 and re.match(r"error: loss is (nan|inf|-inf) at epoch 1", errors[0]), errors
    assert terminal_lines(result.stderr)[-1] == errors[0] and "Traceback" not in result.stderr
    assert all(path.read_bytes() == data for path, data in before.items())
    assert len((folder / "run" / "log.jsonl").read_text().splitlines()) == 2  # no epoch logged


@pytest.mark.slow
def test_classifier_resume_after_kill_matches_uninterrupted_run(fitted_classifier, tiny_data, tmp_path):
    """Killed after its first epoch's save and resumed, a 2-epoch fit ends with the weights of fitted_classifier's
    uninterrupted 2-epoch fit (same arguments)."""
    straight, killed = fitted_classifier, tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "train.classifier", *map(str, classifier_fit(tiny_data, killed))],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    state = killed / "run" / "last.pt"
    deadline = time.time() + 300
    while not state.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    epochs_done = len((killed / "run" / "log.jsonl").read_text().splitlines())
    assert epochs_done < 2, "the run finished before it could be killed"

    resumed = run("train.classifier", *classifier_fit(tiny_data, killed, "--resume"))
    assert "resumed from" in resumed.stderr
    a = torch.load(straight / "run" / "last.pt", weights_only=True)["model"]
    b = torch.load(killed / "run" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"


@pytest.mark.slow
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


def fixed_classifier(path, num_classes: int, favourite: int, classes=None) -> Path:
    """A model whose only signal is the fc bias: it predicts class `favourite` for every image."""
    model = resnet18_gray(num_classes)
    torch.nn.init.zeros_(model.fc.weight)
    torch.nn.init.zeros_(model.fc.bias)
    model.fc.bias.data[favourite] = 10.0
    meta = {"image_size": 32, **({"classes": classes} if classes else {})}
    torch.save({"model": model.state_dict(), "meta": meta}, path)
    return path


def test_classifier_evaluate_known_answers(tiny_data, tmp_path, capfd):
    # a flower-only (102-class) model is scored on the flowers alone: class index 1 = label 2, a third of them
    result = run_main(capfd, "train.classifier", "evaluate", "--checkpoint",
                      fixed_classifier(tmp_path / "f.pt", 102, 1),
                 "--data", tiny_data, "--subset", "valid", "--json", "--cache-dir", tmp_path / "cache")
    scores = last_json(result)
    assert (scores["correct"], scores["images"]) == (4, FLOWER_VALID)
    assert scores["top1"] == pytest.approx(4 / 12) and scores["top5"] >= scores["top1"]
    assert set(scores["per_source"]) == {"flowers"}
    # a model with the general classes too: it always says houses/kitchen (index 102 + 1 in sorted order)
    names = [f"flowers/{i + 1:03d}" for i in range(FLOWER_CLASSES)] + sorted(f"{s}/{label}" for s, label in GENERAL_LABELLED)
    favourite = names.index("houses/kitchen")
    checkpoint = fixed_classifier(tmp_path / "g.pt", NUM_CLASSES, favourite, names)
    scores = last_json(run_main(capfd, "train.classifier", "evaluate", "--checkpoint", checkpoint, "--data",
                                tiny_data,
                           "--subset", "valid", "--json", "--cache-dir", tmp_path / "cache"))
    general = len(GENERAL_LABELLED) * GENERAL_PER_CLASS[1]
    assert (scores["correct"], scores["images"]) == (1, FLOWER_VALID + general)
    assert scores["per_source"]["houses"] == {"correct": 1, "images": 1}
    assert scores["per_source"]["flowers"] == {"correct": 0, "images": FLOWER_VALID}
    # among the 102 flower logits alone (all zero) the first, label 1, wins: a third of the flowers
    assert scores["flowers_102way"] == {"correct": 4, "images": FLOWER_VALID}


def test_missing_data_folder_is_one_clear_line(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_main(capfd, "train.classifier", "fit", "--data", tmp_path / "nowhere", check=False)
    assert result.returncode == 2
    lines = terminal_lines(result.stderr)  # the first says where the run would have written
    assert lines[-1].startswith("error: no flowers-102/ folder") and sum("error:" in line for line in lines) == 1
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["default", "seed"])
def test_colorizer_fit_evaluate_and_tune(tiny_data, fitted_classifier, tmp_path, preset, capfd):
    run_main(capfd, "train.colorizer", "fit", "--data", tiny_data, "--classifier",
             fitted_classifier / "classifier.pt", "--preset", preset, "--epochs", "1", "--batch-size", "8", *FAST,
             "--valid-images", "4", "--out", tmp_path / "colorizer.pt", "--run-dir", tmp_path / "crun",
             "--cache-dir", tmp_path / "cache", *(["--overshoot-weight", "5"] if preset == "default" else []))
    meta = load_checkpoint(tmp_path / "colorizer.pt")["meta"]
    assert meta["preset"] == preset and meta["epochs_trained"] == 1 and meta["domain"] == "general"
    assert meta["recipe"].get("overshoot_weight") == (5.0 if preset == "default" else None)
    assert meta["classifier"]["classes"] == NUM_CLASSES
    assert {"valid_flowers_psnr", "valid_general_psnr"} <= set(meta["valid"])
    result = run_main(capfd, "train.colorizer", "evaluate", "--checkpoint", tmp_path / "colorizer.pt", "--data",
                      tiny_data, "--subset", "test", "--json", "--grid", tmp_path / "grid.png", "--cache-dir",
                      tmp_path / "cache")
    scores = last_json(result)
    assert set(scores) >= {"flowers", "general"}
    flowers, general = scores["flowers"], scores["general"]
    assert flowers["images"] == len(CLASSES) * 4 and general["images"] == len(GENERAL_CLASSES) * GENERAL_PER_CLASS[2]
    assert set(general["per_source"]) == {source for source, _ in GENERAL_CLASSES}
    assert sum(r["images"] for r in general["per_source"].values()) == general["images"]
    for result_set in (flowers, general, *general["per_source"].values()):
        assert result_set["gray"]["colorfulness"] == 0.0
        assert 5.0 < result_set["psnr"] < 60.0 and 0.0 <= result_set["auc"] <= 1.0
    assert (tmp_path / "grid.png").stat().st_size > 0

    run_main(capfd, "train.colorizer", "tune", "--checkpoint", tmp_path / "colorizer.pt", "--data", tiny_data,
             "--input-sizes", "32,64", "--temperatures", "0.2,1.0", "--min-colorfulness", "0", "--limit", "4",
             "--out", tmp_path / "tuned.pt")
    tuned = load_checkpoint(tmp_path / "tuned.pt")
    chosen = tuned["meta"]["tuning"]["chosen"]
    assert tuned["meta"]["input_size"] == chosen["input_size"] in (32, 64)
    assert chosen["psnr"] == max(row["psnr"] for row in tuned["meta"]["tuning"]["table"])
    if preset == "default":
        assert len(tuned["meta"]["tuning"]["table"]) == 4
        assert float(tuned["model"]["temperature"]) == pytest.approx(chosen["temperature"])


@pytest.mark.slow
def test_colorizer_fit_on_a_plain_image_folder(tiny_data, tmp_path, capfd):
    run_main(capfd, "train.colorizer", "fit", "--images", tiny_data / "flowers-102" / "jpg", "--encoder-init",
             "none", "--epochs", "1", "--batch-size", "8", *FAST, "--limit", "16", "--out", tmp_path / "c.pt",
             "--run-dir", tmp_path / "crun", "--cache-dir", tmp_path / "cache")
    meta = load_checkpoint(tmp_path / "c.pt")["meta"]
    assert meta["training_data"].startswith("images under") and meta["domain"] == "custom"


def test_damaged_grid_shows_the_models_colouring_the_print_itself(tiny_data, tmp_path, capfd):
    model = make_tiny_colorizer(tmp_path / "tiny.onnx")
    grid = tmp_path / "prints.png"
    run_main(capfd, "train.colorizer", "evaluate", "--onnx", model, "--data", tiny_data, "--sets", "flowers",
             "--limit", "2", "--damage", "--grid", grid, "--grid-images", "2", "--grid-with", model,
             "--cache-dir", tmp_path / "cache")
    picture = cv2.imread(str(grid))
    side = 256  # flowers are scored at 256 x 256: four columns of two rows under a 28 px title
    assert picture.shape == (28 + 2 * side, 4 * side, 3)
    lightness = [color.lightness(picture[28:, i * side:(i + 1) * side]) for i in range(4)]
    printed, other, this, truth = lightness
    assert np.abs(printed - truth).mean() > 3  # the print is damaged ...
    for coloured in (other, this):  # ... and both models keep its damage: what a user colouring the scan gets
        assert np.abs(coloured - printed).mean() < 1.0


def test_evaluate_grid_is_not_replaced_without_overwrite(tiny_data, tmp_path, capfd):
    model = make_tiny_colorizer(tmp_path / "tiny.onnx")
    grid = tmp_path / "grid.png"
    grid.write_bytes(b"someone's picture")
    args = ["evaluate", "--onnx", model, "--data", tiny_data, "--sets", "flowers", "--limit", "2",
            "--grid", grid, "--grid-images", "2", "--cache-dir", tmp_path / "cache"]
    refused = run_main(capfd, "train.colorizer", *args, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert terminal_lines(refused.stderr) == [f"error: {grid} exists; pass --overwrite to replace it"]
    assert grid.read_bytes() == b"someone's picture"
    run_main(capfd, "train.colorizer", *args, "--overwrite")
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_chroma_overshoot_counts_only_colour_beyond_the_truth():
    true_ab = torch.zeros(1, 2, 8, 8)
    true_ab[:, 0] = 30.0  # chroma 30 everywhere
    duller, exact = true_ab * 0.5, true_ab.clone()
    vivid = true_ab.clone()
    vivid[:, 0, :4] = 70.0  # half the pixels 40 beyond the truth: 30 past the 10 margin
    assert losses.chroma_overshoot(duller, true_ab).item() == 0.0
    assert losses.chroma_overshoot(exact, true_ab).item() == 0.0
    assert losses.chroma_overshoot(vivid, true_ab).item() == pytest.approx(0.5 * 30.0 / AB_SCALE)
    wrong_hue = torch.zeros(1, 2, 8, 8)
    wrong_hue[:, 1] = -30.0  # as vivid as the truth, another colour: the regression loss's business, not this one's
    assert losses.chroma_overshoot(wrong_hue, true_ab).item() == 0.0


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


# ---------------------------------------------------------------- unusable inputs: one line, exit 2

@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, tiny_data) -> dict:
    """Files for the failure rows: real checkpoints of each kind, damaged ones and ONNX files."""
    folder = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    colorizer = folder / "colorizer.pt"
    torch.save({"model": half_state_dict(build_colorizer("seed")), "meta": {"preset": "seed", "model_kwargs": {},
                "input_size": 64, "size_multiple": 32}}, colorizer)
    classifier = folder / "classifier.pt"
    torch.save({"model": half_state_dict(resnet18_gray(FLOWER_CLASSES)), "meta": {"image_size": 32}}, classifier)
    other_classes = folder / "other-classes.pt"
    names = [f"flowers/{i + 1:03d}" for i in range(FLOWER_CLASSES)] + ["caltech101/zebra", "houses/attic",
                                                                       "intel-scenes/glacier"]
    fixed_classifier(other_classes, len(names), 0, names)
    random_bytes = folder / "random.pt"
    random_bytes.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    truncated = folder / "truncated.pt"
    truncated.write_bytes(colorizer.read_bytes()[: colorizer.stat().st_size // 2])
    tiny = Path(make_tiny_colorizer(folder / "tiny.onnx"))
    truncated_onnx = folder / "truncated.onnx"
    truncated_onnx.write_bytes(tiny.read_bytes()[: tiny.stat().st_size // 2])
    garbage_onnx = folder / "garbage.onnx"
    garbage_onnx.write_text("this is not an ONNX file\n" * 20)
    return {"colorizer.pt": colorizer, "classifier.pt": classifier, "other-classes.pt": other_classes,
            "random.pt": random_bytes, "truncated.pt": truncated, "missing.pt": folder / "missing.pt",
            "tiny.onnx": tiny, "truncated.onnx": truncated_onnx, "garbage.onnx": garbage_onnx,
            "missing.onnx": folder / "missing.onnx", "data": tiny_data, "tmp": folder}


NOT_READABLE = "is not a readable PyTorch checkpoint"
BAD_ONNX = "cannot load"
BAD_INPUT_ROWS = [
    # (module, args with {file} placeholders, what the one error line says)
    ("train.colorizer", ["evaluate", "--onnx", "{missing.onnx}"], "model file not found"),
    ("train.colorizer", ["evaluate", "--onnx", "{garbage.onnx}"], BAD_ONNX),
    ("train.colorizer", ["evaluate", "--onnx", "{truncated.onnx}"], BAD_ONNX),
    ("train.colorizer", ["evaluate", "--checkpoint", "{random.pt}"], NOT_READABLE),
    ("train.colorizer", ["evaluate", "--checkpoint", "{truncated.pt}"], NOT_READABLE),
    ("train.colorizer", ["evaluate", "--checkpoint", "{classifier.pt}"], "is not a colorizer checkpoint"),
    ("train.colorizer", ["evaluate", "--checkpoint", "{missing.pt}"], "checkpoint not found"),
    ("train.colorizer", ["fit", "--classifier", "{colorizer.pt}", "--out", "{tmp}/c.pt", "--run-dir", "{tmp}/r"],
     "is not a classifier checkpoint"),
    ("train.classifier", ["evaluate", "--checkpoint", "{random.pt}"], NOT_READABLE),
    ("train.classifier", ["evaluate", "--checkpoint", "{truncated.pt}"], NOT_READABLE),
    ("train.classifier", ["evaluate", "--checkpoint", "{colorizer.pt}"], "is not a classifier checkpoint"),
    ("train.classifier", ["evaluate", "--checkpoint", "{garbage.onnx}"], NOT_READABLE),
    ("train.classifier", ["evaluate", "--checkpoint", "{other-classes.pt}"], "trained on other classes"),
    ("export.verify", ["--checkpoint", "{colorizer.pt}", "--onnx", "{missing.onnx}"], "ONNX file not found"),
    ("export.verify", ["--checkpoint", "{colorizer.pt}", "--onnx", "{garbage.onnx}"], BAD_ONNX),
    ("export.verify", ["--checkpoint", "{colorizer.pt}", "--onnx", "{truncated.onnx}"], BAD_ONNX),
    ("export.verify", ["--checkpoint", "{random.pt}", "--onnx", "{tiny.onnx}"], NOT_READABLE),
    ("export.verify", ["--checkpoint", "{truncated.pt}", "--onnx", "{tiny.onnx}"], NOT_READABLE),
    ("export.verify", ["--checkpoint", "{classifier.pt}", "--onnx", "{tiny.onnx}"], "is not a colorizer checkpoint"),
    ("export.verify", ["--checkpoint", "{missing.pt}", "--onnx", "{tiny.onnx}"], "checkpoint not found"),
]


@pytest.mark.parametrize("module,args,message", BAD_INPUT_ROWS,
                         ids=[f"{m.split('.')[-1]}-{' '.join(a[:3])}" for m, a, _ in BAD_INPUT_ROWS])
def test_unusable_inputs_are_one_error_line_and_exit_2(bad_files, module, args, message, capsys):
    """In this process (the rows would take minutes as subprocesses): main() must end in SystemExit(2) after one
    `error:` line; any other exception would reach the user as a traceback."""
    import importlib

    argv = [re.sub(r"\{([^}]+)\}", lambda m: str(bad_files[m.group(1)]), a) for a in args]
    if module.startswith("train."):
        argv += ["--data", str(bad_files["data"]), "--cache-dir", str(bad_files["tmp"] / "cache")]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(argv)
    lines = terminal_lines(capsys.readouterr().err)
    errors = [line for line in lines if line.startswith("error:")]
    assert exit_info.value.code == 2, lines
    assert len(errors) == 1 and errors[0] == lines[-1] and message in errors[0], lines
    assert not (bad_files["tmp"] / "c.pt").exists()
