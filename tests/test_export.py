"""PyTorch -> ONNX export and its verifier on tiny random-weight colorizers at small sizes: parity with
PyTorch (batch 2, two sizes, a size that is not a multiple of 32), metadata, byte-identical re-export,
fp16 and int8 files, and a verifier that catches a file whose weights were changed."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from tests.flowers_fixture import make_tiny_flowers
from train.models import build_colorizer

REPO = Path(__file__).resolve().parents[1]
INPUT_SIZE = 64
META = {
    "version": "test-0",
    "input_size": INPUT_SIZE,
    "size_multiple": 32,
    "training_data": "none (random weights)",
    "metrics": {"psnr": 21.5, "colorfulness_ratio": 0.9},
}


def make_checkpoint(path, preset: str) -> Path:
    """A random-weight colorizer whose BatchNorm statistics come from a few L-like batches: fresh
    running stats (mean 0, var 1) let activations grow layer by layer into meaningless extremes."""
    torch.manual_seed(0)
    model = build_colorizer(preset)
    if preset == "default":
        model.bin_weights = torch.rand(len(model.bins)) + 0.5
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model.forward_ab(smooth_lightness(4, INPUT_SIZE, INPUT_SIZE))
    meta = {**META, "preset": preset, "model_kwargs": {}}
    torch.save({"model": model.eval().state_dict(), "meta": meta}, path)
    return Path(path)


def smooth_lightness(n, h, w, seed=None) -> torch.Tensor:
    """L in [0, 100] with image-like structure (a blurred random field), not pixel noise."""
    generator = torch.Generator().manual_seed(seed if seed is not None else h * w + n)
    coarse = torch.rand(n, 1, max(h // 8, 1), max(w // 8, 1), generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False) * 100.0


def run(module, *args, check=True):
    result = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{module} {args} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def onnx_ab(path, lightness: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["ab"], {"L": lightness})[0]


def torch_ab(checkpoint, lightness: np.ndarray) -> np.ndarray:
    from train.models import load_colorizer

    model, _ = load_colorizer(checkpoint)
    with torch.no_grad():
        return model.forward_ab(torch.from_numpy(lightness)).numpy()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_flowers(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module", params=["default", "seed"])
def exported(request, tmp_path_factory):
    """(checkpoint, fp32 onnx) for each preset, exported once through the CLI."""
    folder = tmp_path_factory.mktemp(request.param)
    checkpoint = make_checkpoint(folder / "colorizer.pt", request.param)
    out = folder / "colorizer.onnx"
    run("export.onnx", "--checkpoint", checkpoint, "--out", out)
    return checkpoint, out


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 1, 96, 64), (2, 1, 96, 96)])
def test_fp32_onnx_matches_pytorch(exported, shape):
    checkpoint, onnx_path = exported
    lightness = smooth_lightness(*shape[:1], *shape[2:], seed=1).numpy()
    ours, theirs = onnx_ab(onnx_path, lightness), torch_ab(checkpoint, lightness)
    assert ours.shape == (shape[0], 2, shape[2], shape[3])
    assert np.abs(ours - theirs).max() <= 0.01  # ab spans about +-110; the verifier allows 0.05
    assert np.abs(theirs).max() > 1.0  # the model colours something, so parity means something


def test_a_size_that_is_not_a_multiple_of_32_still_matches(exported):
    """The contract asks the runtime for multiples of 32, but the graph itself gives ab at the input's own
    size for any side >= 32 (the seed model's traced decoder alone would give 128 x 160 here)."""
    checkpoint, onnx_path = exported
    lightness = smooth_lightness(1, 100, 150, seed=2).numpy()
    ours, theirs = onnx_ab(onnx_path, lightness), torch_ab(checkpoint, lightness)
    assert ours.shape == theirs.shape == (1, 2, 100, 150)
    assert np.abs(ours - theirs).max() <= 0.01  # ab spans about +-110; the verifier allows 0.05
    metadata = onnx.load(str(onnx_path)).metadata_props
    assert {p.key: p.value for p in metadata}["size_multiple"] == "32"  # sides below 32 are never asked for


def test_metadata_round_trips(exported):
    checkpoint, onnx_path = exported
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    preset = torch.load(checkpoint, weights_only=True)["meta"]["preset"]
    assert metadata["input_size"] == str(INPUT_SIZE)
    assert metadata["size_multiple"] == "32"
    assert metadata["precision"] == "fp32"
    assert metadata["version"] == META["version"]
    assert metadata["preset"] == preset
    assert metadata["training_data"] == META["training_data"]
    assert json.loads(metadata["metrics"]) == META["metrics"]
    assert metadata["source_sha256"] == sha256(checkpoint)
    assert "L*" in metadata["contract"] and "a*, b*" in metadata["contract"]
    assert [(i.name, i.type) for i in session.get_inputs()] == [("L", "tensor(float)")]
    assert [(o.name, o.type) for o in session.get_outputs()] == [("ab", "tensor(float)")]
    assert session.get_inputs()[0].shape[1] == 1 and session.get_outputs()[0].shape[1] == 2
    assert all(isinstance(d, str) for d in (*session.get_inputs()[0].shape[::2], session.get_inputs()[0].shape[3]))


def test_reexport_is_byte_identical_and_leaves_the_checkpoint_alone(exported, tmp_path):
    checkpoint, onnx_path = exported
    before = sha256(checkpoint)
    again = tmp_path / "again.onnx"
    run("export.onnx", "--checkpoint", checkpoint, "--out", again)
    assert again.read_bytes() == onnx_path.read_bytes()
    assert sha256(checkpoint) == before
    assert [p.name for p in tmp_path.iterdir()] == ["again.onnx"]  # no temporary file left behind


def test_verify_passes_an_honest_export(exported, tiny_data):
    checkpoint, onnx_path = exported
    result = run("export.verify", "--checkpoint", checkpoint, "--onnx", onnx_path, "--data", tiny_data,
                 "--images", 3, "--json")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] is True and report["source_matches"] is True
    assert report["images"] == 3 and report["precision"] == "fp32"
    assert report["max_abs_ab"] <= 0.05


def test_verify_fails_on_slightly_perturbed_weights(exported, tiny_data, tmp_path):
    """Nudge the head's weights by 1 % of their spread: the file still loads and runs, the verifier says no."""
    checkpoint, onnx_path = exported
    model = onnx.load(str(onnx_path))
    head = [node for node in model.graph.node if node.op_type == "Conv"][-1]
    weights = next(t for t in model.graph.initializer if t.name == head.input[1])
    array = numpy_helper.to_array(weights)
    noise = np.random.default_rng(0).normal(0.0, 0.01 * array.std(), size=array.shape).astype(array.dtype)
    weights.CopyFrom(numpy_helper.from_array(array + noise, weights.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, str(tampered))
    result = run("export.verify", "--checkpoint", checkpoint, "--onnx", tampered, "--data", tiny_data,
                 "--images", 2, "--json", check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] is False and report["max_abs_ab"] > 0.05
    assert "out of tolerance" in result.stderr


@pytest.fixture(scope="module")
def default_checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("default") / "colorizer.pt", "default")


def test_fp16_keeps_fp32_io_and_passes_the_verifier(default_checkpoint, tiny_data, tmp_path):
    out = tmp_path / "colorizer-fp16.onnx"
    run("export.onnx", "--checkpoint", default_checkpoint, "--out", out, "--precision", "fp16")
    model = onnx.load(str(out))
    assert {p.key: p.value for p in model.metadata_props}["precision"] == "fp16"
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    half = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    assert convs[0].input[1] in half  # the encoder runs in fp16
    assert convs[-1].input[1] not in half and convs[-2].input[1] not in half  # head and annealed mean stay fp32
    result = run("export.verify", "--checkpoint", default_checkpoint, "--onnx", out, "--data", tiny_data,
                 "--images", 2, "--json")
    assert json.loads(result.stdout.strip().splitlines()[-1])["rgb_psnr_vs_pytorch"] >= 40.0


def test_int8_export_is_a_valid_qdq_model(default_checkpoint, tiny_data, tmp_path):
    out = tmp_path / "colorizer-int8.onnx"
    run("export.onnx", "--checkpoint", default_checkpoint, "--out", out, "--precision", "int8",
        "--calibration", tiny_data, "--calibration-images", 6)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert {p.key: p.value for p in model.metadata_props}["precision"] == "int8"
    ops = [node.op_type for node in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    initializers = {t.name: t for t in model.graph.initializer}
    producers = {out_name: node for node in model.graph.node for out_name in node.output}
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    quantised = [c for c in convs if getattr(producers.get(c.input[1]), "op_type", "") == "DequantizeLinear"]
    assert len(quantised) == len(convs) - 2  # every convolution but the head and the annealed-mean projection
    for conv in quantised:
        dequantize = producers[conv.input[1]]
        assert initializers[dequantize.input[0]].data_type == onnx.TensorProto.INT8
        channels = numpy_helper.to_array(initializers[dequantize.input[0]]).shape[0]
        assert numpy_helper.to_array(initializers[dequantize.input[1]]).shape == (channels,)  # per channel
    lightness = smooth_lightness(2, 96, 64, seed=3).numpy()
    ab = onnx_ab(out, lightness)
    assert ab.shape == (2, 2, 96, 64) and np.isfinite(ab).all()
    assert np.abs(ab - torch_ab(default_checkpoint, lightness)).mean() < 5.0  # int8 noise, not a different model


@pytest.mark.slow
def test_int8_reexport_is_byte_identical(default_checkpoint, tiny_data, tmp_path):
    args = ["--checkpoint", default_checkpoint, "--precision", "int8", "--calibration", tiny_data,
            "--calibration-images", 4]
    run("export.onnx", *args, "--out", tmp_path / "a.onnx")
    run("export.onnx", *args, "--out", tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_bad_inputs_give_one_error_line(default_checkpoint, tmp_path, capsys):
    from export import onnx as export_onnx
    from export import verify

    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("not a checkpoint")
    classifier = tmp_path / "classifier.pt"
    torch.save({"model": {}, "meta": {"valid_top1": 0.5}}, classifier)
    out = tmp_path / "x.onnx"
    cases = [
        (export_onnx, ["--checkpoint", tmp_path / "missing.pt", "--out", out], "not found"),
        (export_onnx, ["--checkpoint", not_a_checkpoint, "--out", out], "cannot load"),
        (export_onnx, ["--checkpoint", classifier, "--out", out], "not a colorizer checkpoint"),
        (export_onnx, ["--checkpoint", default_checkpoint, "--out", default_checkpoint], "checkpoint itself"),
        (export_onnx, ["--checkpoint", default_checkpoint, "--out", tmp_path], "is a folder"),
        (export_onnx, ["--checkpoint", default_checkpoint, "--out", out, "--precision", "int8"], "--calibration"),
        (export_onnx, ["--checkpoint", default_checkpoint, "--out", out, "--precision", "int8",
                       "--calibration", tmp_path / "nowhere"], "not found"),
        (verify, ["--checkpoint", default_checkpoint, "--onnx", not_a_checkpoint], "cannot load"),
        (verify, ["--checkpoint", classifier, "--onnx", not_a_checkpoint], "not a colorizer checkpoint"),
    ]
    before = sha256(default_checkpoint)
    for module, args, message in cases:
        with pytest.raises(SystemExit) as exit_info:  # any other exception would be a traceback for the user
            module.main([str(a) for a in args])
        lines = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2, (args, lines)
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (args, lines)
    assert sha256(default_checkpoint) == before
    assert not out.exists()
