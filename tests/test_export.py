"""PyTorch -> ONNX export and its verifier on tiny random-weight colorizers at small sizes: parity with PyTorch
(batch 2, two sizes, a size that is not a multiple of 32), metadata through runtime.contract.ModelInfo, the
temperature input, byte-identical re-export, fp16 and int8 files that pass the verifier, and a verifier that
holds a file to the precision the user asks for, never to the file's own label."""

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from runtime import contract
from runtime.model import ColorizerModel
from tests.conftest import run_module
from train import engine
from train.models import build_colorizer, load_colorizer

INPUT_SIZE = 64
TEMPERATURE = 0.38
META = {
    "version": "test-0",
    "input_size": INPUT_SIZE,
    "size_multiple": 32,
    "domain": "general",
    "training_data": "none (random weights)",
    "metrics": {"psnr": 21.5, "colorfulness_ratio": 0.9},
}


def make_checkpoint(path, preset: str) -> Path:
    """A random-weight colorizer saved as fit saves one (fp16 weights, meta with preset and model_kwargs), whose
    BatchNorm statistics come from a few L-like batches: fresh running stats (mean 0, var 1) let activations grow
    layer by layer into meaningless extremes."""
    torch.manual_seed(0)
    model_kwargs = {"temperature": TEMPERATURE} if preset == "default" else {}
    model = build_colorizer(preset, **model_kwargs)
    if preset == "default":
        model.bin_weights = torch.rand(len(model.bins)) + 0.5
        model_kwargs["num_bins"] = len(model.bins)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model.forward_ab(smooth_lightness(4, INPUT_SIZE, INPUT_SIZE))
        if preset == "seed":  # its random tanh head saturates at +-110 everywhere; a trained one is far calmer
            model.decoder[-1].weight.mul_(0.1)
            model.decoder[-1].bias.mul_(0.1)
    meta = {**META, "preset": preset, "model_kwargs": model_kwargs}
    torch.save({"model": engine.half_state_dict(model.eval()), "meta": meta}, path)
    return Path(path)


def smooth_lightness(n, h, w, seed=None) -> torch.Tensor:
    """L in [0, 100] with image-like structure (a blurred random field), not pixel noise."""
    generator = torch.Generator().manual_seed(seed if seed is not None else h * w + n)
    coarse = torch.rand(n, 1, max(h // 8, 1), max(w // 8, 1), generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False) * 100.0


def run(module, *args, check=True):
    return run_module(module, *args, check=check)


def last_json(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def onnx_ab(path, lightness: np.ndarray, temperature: float | None = None) -> np.ndarray:
    """The runtime's own ColorizerModel on raw L (the temperature input fed only when asked)."""
    return ColorizerModel(path, provider="cpu", temperature=temperature).predict_ab(lightness)


def torch_ab(checkpoint, lightness: np.ndarray, temperature: float | None = None) -> np.ndarray:
    model, _ = load_colorizer(checkpoint)
    if temperature is not None:
        model.temperature.fill_(temperature)
    with torch.no_grad():
        return model.forward_ab(torch.from_numpy(lightness)).numpy()


def perturbed(onnx_path, out, relative: float, precision_label: str | None = None, forget_graph: bool = True) -> Path:
    """A copy of the file with Gaussian noise of `relative` x their spread on every convolution weight (whatever
    their storage type), optionally relabelled with another precision in its metadata: it loads and runs. Unless
    forget_graph is false, the graph_sha256 export recorded is dropped too (as in a file from before export recorded
    it), so that verify judges its figures."""
    model = onnx.load(str(onnx_path))
    rng = np.random.default_rng(0)
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.ndim == 4 and array.dtype in (np.float32, np.float16) and array.size > 1:
            noise = rng.normal(0.0, relative * float(array.astype(np.float32).std()), size=array.shape)
            tensor.CopyFrom(numpy_helper.from_array((array + noise).astype(array.dtype), tensor.name))
    metadata = {p.key: p.value for p in model.metadata_props}
    metadata.update({"precision": precision_label} if precision_label else {})
    if forget_graph:
        metadata.pop("graph_sha256", None)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, str(out))
    return Path(out)


@pytest.fixture(scope="module", params=["default", "seed"])
def exported(request, tmp_path_factory):
    """(checkpoint, fp32 onnx) for each preset, exported once through the CLI."""
    folder = tmp_path_factory.mktemp(request.param)
    checkpoint = make_checkpoint(folder / "colorizer.pt", request.param)
    out = folder / "colorizer.onnx"
    run("export.onnx", "--checkpoint", checkpoint, "--out", out)
    return checkpoint, out


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 1, 96, 64), (2, 1, 96, 96)])
def test_fp32_onnx_matches_pytorch(exported, shape):
    checkpoint, onnx_path = exported
    lightness = smooth_lightness(*shape[:1], *shape[2:], seed=1).numpy()
    ours, theirs = onnx_ab(onnx_path, lightness), torch_ab(checkpoint, lightness)
    assert ours.shape == (shape[0], 2, shape[2], shape[3])
    assert np.abs(ours - theirs).max() <= 0.01  # ab spans about +-110; the verifier allows 0.05
    assert np.abs(theirs).max() > 1.0  # the model colours something, so parity means something


@pytest.mark.slow
def test_a_size_that_is_not_a_multiple_of_32_still_matches(exported):
    """The contract asks the runtime for multiples of 32, but the graph itself gives ab at the input's own
    size for any side >= 32 (the seed model's traced decoder alone would give 128 x 160 here)."""
    checkpoint, onnx_path = exported
    lightness = smooth_lightness(1, 100, 150, seed=2).numpy()
    ours, theirs = onnx_ab(onnx_path, lightness), torch_ab(checkpoint, lightness)
    assert ours.shape == theirs.shape == (1, 2, 100, 150)
    assert np.abs(ours - theirs).max() <= 0.01


@pytest.mark.slow
def test_metadata_round_trips(exported):
    checkpoint, onnx_path = exported
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    info = contract.ModelInfo.from_metadata(metadata, str(onnx_path))
    preset = torch.load(checkpoint, weights_only=True)["meta"]["preset"]
    assert (info.input_size, info.size_multiple, info.precision) == (INPUT_SIZE, 32, "fp32")
    assert (info.version, info.preset, info.domain) == (META["version"], preset, "general")
    assert info.training_data == META["training_data"] and info.metrics == META["metrics"]
    assert info.source_sha256 == sha256(checkpoint)
    assert info.contract == contract.CONTRACT
    assert info.temperature == (pytest.approx(TEMPERATURE, abs=1e-3) if preset == "default" else None)
    # the signature the runtime checks at load: L (and, for the default preset, temperature) in, ab out
    inputs = session.get_inputs() + session.get_overridable_initializers()
    contract.check_signature(inputs, session.get_outputs(), str(onnx_path))
    names = sorted(arg.name for arg in inputs)
    assert names == (["L", "temperature"] if preset == "default" else ["L"])
    assert [(o.name, o.type) for o in session.get_outputs()] == [("ab", "tensor(float)")]


@pytest.mark.slow
def test_temperature_input_changes_the_output_as_in_pytorch(exported):
    checkpoint, onnx_path = exported
    if torch.load(checkpoint, weights_only=True)["meta"]["preset"] != "default":
        assert not ColorizerModel(onnx_path, provider="cpu").has_temperature  # the seed preset has none
        return
    lightness = smooth_lightness(1, 64, 96, seed=4).numpy()
    default, hotter = onnx_ab(onnx_path, lightness), onnx_ab(onnx_path, lightness, temperature=1.0)
    info = ColorizerModel(onnx_path, provider="cpu").info
    assert info.temperature == pytest.approx(TEMPERATURE, abs=1e-3)  # the checkpoint's (fp16-rounded) value
    assert np.abs(default - onnx_ab(onnx_path, lightness, temperature=info.temperature)).max() == 0.0  # = default
    assert np.abs(default - hotter).mean() > 0.5  # the input is used
    assert np.abs(hotter - torch_ab(checkpoint, lightness, temperature=1.0)).max() <= 0.01  # and means the same


@pytest.mark.slow
def test_fp32_file_stores_its_weights_at_half_size(exported):
    """The checkpoint's weights are fp16 values: the fp32 file keeps them as fp16 (exactly, see the parity tests)."""
    checkpoint, onnx_path = exported
    parameters = sum(v.numel() for v in torch.load(checkpoint, weights_only=True)["model"].values())
    assert onnx_path.stat().st_size < 0.6 * 4 * parameters


@pytest.mark.slow
def test_reexport_is_byte_identical_and_leaves_the_checkpoint_alone(exported, tmp_path):
    checkpoint, onnx_path = exported
    before = sha256(checkpoint)
    again = tmp_path / "again.onnx"
    run("export.onnx", "--checkpoint", checkpoint, "--out", again)
    assert again.read_bytes() == onnx_path.read_bytes()
    assert sha256(checkpoint) == before
    assert [p.name for p in tmp_path.iterdir()] == ["again.onnx"]  # no temporary file left behind


@pytest.mark.slow
def test_verify_passes_an_honest_export(exported, tiny_data):
    checkpoint, onnx_path = exported
    result = run("export.verify", "--checkpoint", checkpoint, "--onnx", onnx_path, "--data", tiny_data,
                 "--images", 4, "--json")
    report = last_json(result)
    assert report["ok"] is True and report["source_matches"] is True
    assert report["images"] == 4 and report["precision"] == report["file_precision"] == "fp32"
    assert report["max_abs_ab"] <= 0.05
    assert "warning" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["opencv", "openvino"])
def test_verify_runs_the_file_in_other_engines(exported, tiny_data, engine):
    """The same file, fed through the runtime's image path, in OpenCV DNN and OpenVINO: within fp32's tolerance."""
    if engine == "openvino":
        pytest.importorskip("openvino", reason="the edge extra (pip install '.[edge]') is not installed")
    checkpoint, onnx_path = exported
    result = run("export.verify", "--checkpoint", checkpoint, "--onnx", onnx_path, "--data", tiny_data,
                 "--images", 4, "--engine", engine, "--json")
    report = last_json(result)
    assert report["ok"] is True and report["engine"] == engine and report["provider"] == f"{engine} CPU"
    assert report["max_abs_ab"] <= 0.05


def test_verify_samples_flowers_and_general_half_each(tiny_data):
    from export.verify import image_paths

    paths = image_paths(tiny_data, 6)
    assert [p.parent.parent.name for p in paths] == ["flowers-102"] * 3 + ["general"] * 3
    assert len(set(paths)) == 6


@pytest.mark.slow
@pytest.mark.parametrize("exported", ["default"], indirect=True)  # one preset is enough
def test_verify_holds_a_file_to_the_asked_precision_not_its_label(exported, tiny_data, tmp_path):
    """A perturbed fp32 file relabelled int8: without --precision it is held to fp32 and fails (exit 1), with a
    warning about the label; a wrong label must never loosen the check."""
    checkpoint, onnx_path = exported
    tampered = perturbed(onnx_path, tmp_path / "tampered.onnx", relative=0.01, precision_label="int8")
    lightness = smooth_lightness(1, 64, 64, seed=5).numpy()
    assert np.abs(onnx_ab(tampered, lightness) - onnx_ab(onnx_path, lightness)).max() > 0.05  # it still runs
    result = run("export.verify", "--checkpoint", checkpoint, "--onnx", tampered, "--data", tiny_data,
                 "--images", 2, "--json", check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    report = last_json(result)
    assert report["ok"] is False and report["precision"] == "fp32" and report["file_precision"] == "int8"
    assert report["max_abs_ab"] > 0.05
    stderr = [line for line in result.stderr.splitlines() if line.startswith(("warning:", "error:"))]
    assert any(line.startswith("warning:") and "precision=int8" in line for line in stderr)
    assert stderr[-1].startswith("error:") and "out of tolerance" in stderr[-1]
    assert "Traceback" not in result.stderr
    # the same file is within the int8 tolerance: trusting the label would have passed it
    loose = run("export.verify", "--checkpoint", checkpoint, "--onnx", tampered, "--data", tiny_data,
                "--images", 2, "--precision", "int8", "--json")
    assert last_json(loose)["ok"] is True


@pytest.mark.slow
@pytest.mark.parametrize("exported", ["default"], indirect=True)
def test_verify_fails_a_file_changed_after_export(exported, tiny_data, tmp_path):
    """Export records the graph's sha256; a file whose weights were changed afterwards (noise far too small to move
    any figure past a tolerance) is not the exported file: exit 1, whatever its figures."""
    checkpoint, onnx_path = exported
    changed = perturbed(onnx_path, tmp_path / "changed.onnx", relative=1e-4, forget_graph=False)
    result = run("export.verify", "--checkpoint", checkpoint, "--onnx", changed, "--data", tiny_data,
                 "--images", 2, "--json", check=False)
    assert result.returncode == 1
    assert last_json(result)["graph_matches"] is False and last_json(result)["source_matches"] is True
    assert result.stderr.strip().splitlines()[-1].endswith("the file was changed after export")
    honest = last_json(run("export.verify", "--checkpoint", checkpoint, "--onnx", onnx_path, "--data", tiny_data,
                           "--images", 2, "--json"))
    assert honest["graph_matches"] is True


@pytest.fixture(scope="module")
def default_checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("default") / "colorizer.pt", "default")


@pytest.mark.slow
def test_fp16_keeps_fp32_io_and_passes_the_verifier(default_checkpoint, tiny_data, tmp_path):
    out = tmp_path / "colorizer-fp16.onnx"
    run("export.onnx", "--checkpoint", default_checkpoint, "--out", out, "--precision", "fp16")
    model = onnx.load(str(out))
    assert {p.key: p.value for p in model.metadata_props}["precision"] == "fp16"
    assert [v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]] == \
        [onnx.TensorProto.FLOAT] * (len(model.graph.input) + len(model.graph.output))
    assert ColorizerModel(out, provider="cpu").has_temperature
    result = run("export.verify", "--checkpoint", default_checkpoint, "--onnx", out, "--data", tiny_data,
                 "--images", 2, "--precision", "fp16", "--json")
    report = last_json(result)
    assert report["ok"] is True and report["rgb_psnr_vs_pytorch"] >= 40.0
    assert report["max_abs_ab"] > 0.0  # it does compute in fp16: not the fp32 file under another name
    assert "warning" not in result.stderr


INT8_ARGS = ["--precision", "int8", "--calibration-images", 6]


@pytest.fixture(scope="module")
def int8_export(default_checkpoint, tiny_data, tmp_path_factory) -> Path:
    """The default checkpoint exported to int8 once (calibrated on the tiny data), for the int8 tests."""
    out = tmp_path_factory.mktemp("int8") / "colorizer-int8.onnx"
    run("export.onnx", "--checkpoint", default_checkpoint, "--out", out, "--calibration", tiny_data, *INT8_ARGS)
    return out


@pytest.mark.slow
def test_int8_export_is_a_valid_qdq_model_and_passes_the_verifier(default_checkpoint, int8_export, tiny_data):
    out = int8_export
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert {p.key: p.value for p in model.metadata_props}["precision"] == "int8"
    initializers = {t.name: t for t in model.graph.initializer}
    producers = {name: node for node in model.graph.node for name in node.output}
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    quantised = [c for c in convs if getattr(producers.get(c.input[1]), "op_type", "") == "DequantizeLinear"]
    assert len(quantised) >= len(convs) // 2  # the encoder and decoder run in int8
    for conv in quantised:
        dequantize = producers[conv.input[1]]
        assert initializers[dequantize.input[0]].data_type == onnx.TensorProto.INT8
        channels = numpy_helper.to_array(initializers[dequantize.input[0]]).shape[0]
        assert numpy_helper.to_array(initializers[dequantize.input[1]]).shape == (channels,)  # per channel
    assert ColorizerModel(out, provider="cpu").has_temperature
    result = run("export.verify", "--checkpoint", default_checkpoint, "--onnx", out, "--data", tiny_data,
                 "--images", 4, "--precision", "int8", "--json")
    assert last_json(result)["ok"] is True
    lightness = smooth_lightness(2, 96, 64, seed=3).numpy()
    assert np.abs(onnx_ab(out, lightness) - torch_ab(default_checkpoint, lightness)).mean() < 5.0  # int8 noise


@pytest.mark.slow
def test_int8_reexport_is_byte_identical(default_checkpoint, int8_export, tiny_data, tmp_path):
    again = tmp_path / "again.onnx"
    run("export.onnx", "--checkpoint", default_checkpoint, "--out", again, "--calibration", tiny_data, *INT8_ARGS)
    assert again.read_bytes() == int8_export.read_bytes()


def test_bad_export_inputs_give_one_error_line(default_checkpoint, tmp_path, capsys):
    from export import onnx as export_onnx

    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("not a checkpoint")
    classifier = tmp_path / "classifier.pt"
    torch.save({"model": {"fc.weight": torch.zeros(3, 512)}, "meta": {"valid_top1": 0.5}}, classifier)
    out = tmp_path / "x.onnx"
    cases = [
        (["--checkpoint", tmp_path / "missing.pt", "--out", out], "not found"),
        (["--checkpoint", not_a_checkpoint, "--out", out], "not a readable PyTorch checkpoint"),
        (["--checkpoint", classifier, "--out", out], "not a colorizer checkpoint"),
        (["--checkpoint", default_checkpoint, "--out", default_checkpoint], "checkpoint itself"),
        (["--checkpoint", default_checkpoint, "--out", tmp_path], "is a folder"),
        (["--checkpoint", default_checkpoint, "--out", out, "--precision", "int8"], "--calibration"),
        (["--checkpoint", default_checkpoint, "--out", out, "--precision", "int8", "--calibration",
          tmp_path / "nowhere"], "not found"),
    ]
    before = sha256(default_checkpoint)
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_info:  # any other exception would be a traceback for the user
            export_onnx.main([str(a) for a in args])
        lines = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2, (args, lines)
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (args, lines)
    assert sha256(default_checkpoint) == before
    assert not out.exists()
