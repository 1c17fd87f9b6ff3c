"""runtime.contract: the metadata schema, the signature check (in process and through the CLI), the image path and
the temperature input."""

import ast
import dataclasses
import json
import math

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from runtime import ColorizerModel, ModelError, color, contract
from runtime.contract import ContractError, ModelInfo
from tests.conftest import REPO, make_conv_model, run_module


def textured_image(height=72, width=100, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, 0.5 + 0.4 * np.sin(x / 7.0)], axis=2) * 200 + 20
    return np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- metadata

def test_model_info_round_trip():
    info = ModelInfo(input_size=160, size_multiple=32, precision="int8", preset="default", domain="general",
                     version="0.2.0", training_data="a folder", temperature=0.38,
                     metrics={"test": {"psnr": 20.28, "images": 819}}, source_sha256="ab" * 32)
    metadata = info.to_metadata()
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in metadata.items())
    assert set(metadata) == {"contract", "input_size", "size_multiple", "precision", "version", "preset", "domain",
                             "training_data", "metrics", "source_sha256", "temperature"}
    assert ModelInfo.from_metadata(metadata, "m.onnx") == info
    assert ModelInfo.from_metadata(metadata, "m.onnx").to_metadata() == metadata
    plain = ModelInfo(input_size=64)
    assert "temperature" not in plain.to_metadata()  # written only when the graph has one
    assert ModelInfo.from_metadata(plain.to_metadata(), "m.onnx") == plain


def test_model_info_of_an_older_file():
    """Files written before domain and temperature existed: flower models without a temperature input."""
    info = ModelInfo.from_metadata({"input_size": "160", "size_multiple": "32", "precision": "fp32",
                                    "metrics": json.dumps({"a": 1}), "unknown_future_key": "x"}, "old.onnx")
    assert (info.domain, info.temperature, info.metrics, info.version) == ("flowers", None, {"a": 1}, "0")


@pytest.mark.parametrize("metadata,match", [
    ({}, "has no 'input_size'"),
    ({"input_size": "big"}, "'input_size' is not an integer: 'big'"),
    ({"input_size": "0"}, "'input_size' must be a positive integer"),
    ({"input_size": "160", "size_multiple": "-32"}, "'size_multiple' must be a positive integer"),
    ({"input_size": "160", "temperature": "hot"}, "'temperature' is not a number"),
    ({"input_size": "160", "temperature": "9"}, "'temperature' must be in"),
    ({"input_size": "160", "metrics": "{not json"}, "'metrics' is not JSON"),
    ({"input_size": "160", "metrics": "[1, 2]"}, "'metrics' must be a JSON object"),
])
def test_model_info_bad_values_name_the_key_and_file(metadata, match):
    with pytest.raises(ContractError, match=match) as error:
        ModelInfo.from_metadata(metadata, "some/model.onnx")
    assert str(error.value).startswith("some/model.onnx") and "\n" not in str(error.value)


def test_model_info_validates_when_built_by_export():
    with pytest.raises(ContractError, match="input_size"):
        ModelInfo(input_size=0)
    with pytest.raises(ContractError, match="temperature"):
        ModelInfo(input_size=64, temperature=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelInfo(input_size=64).input_size = 32


# ---------------------------------------------------------------- signature

def signature(path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.get_inputs() + session.get_overridable_initializers(), session.get_outputs()


def test_signature_of_contract_models_passes(make_model):
    contract.check_signature(*signature(make_model("plain.onnx")), "plain.onnx")
    contract.check_signature(*signature(make_model("temp.onnx", temperature=0.5)), "temp.onnx")


BAD_MODELS = {
    "three-channels": (dict(input_shape=("N", 3, "H", "W")), "has 3 channels"),
    "fixed-224": (dict(input_shape=(1, 1, 224, 224)), "fixed size"),
    "one-channel-ab": (dict(output_channels=1), "output 'ab' must be \\[N,2,H,W\\]"),
    "other-input-name": (dict(input_name="image"), "not a colorizer"),
    "no-ab-output": (dict(output_name="rgb"), "no output 'ab'"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_signature_rejects_off_contract_models_once_at_load(tmp_path, case):
    kwargs, match = BAD_MODELS[case]
    path = make_conv_model(tmp_path / f"{case}.onnx", **kwargs)
    with pytest.raises(ContractError, match=match) as error:
        contract.check_signature(*signature(path), path)
    assert "\n" not in str(error.value) and path in str(error.value)
    with pytest.raises(ModelError, match=match):  # and the runtime stops at load, as a ModelError for the CLIs
        ColorizerModel(path, provider="cpu")


@pytest.mark.parametrize("case", ["three-channels", "fixed-224", "one-channel-ab"])
def test_colorize_cli_rejects_off_contract_model_with_exit_2_and_one_line(tmp_path, case):
    kwargs, match = BAD_MODELS[case]
    path = make_conv_model(tmp_path / f"{case}.onnx", **kwargs)
    result = run_module("runtime.colorize", REPO / "examples" / "rose.jpg", "--model", path, "-o", tmp_path / "out",
                        "--provider", "cpu", check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and path in lines[0], result.stderr
    assert not (tmp_path / "out" / "rose_color.jpg").exists()


def test_temperature_input_must_be_a_float_scalar(tmp_path):
    from onnx import TensorProto, helper

    from tests.conftest import _save

    graph = helper.make_graph(
        [helper.make_node("Concat", ["L", "L"], ["ab"], axis=1)], "g",
        [helper.make_tensor_value_info("L", TensorProto.FLOAT, ["N", 1, "H", "W"]),
         helper.make_tensor_value_info("temperature", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("ab", TensorProto.FLOAT, ["N", 2, "H", "W"])])
    path = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "t.onnx",
                 {"input_size": "32"})
    with pytest.raises(ContractError, match="'temperature' must be a float32 scalar"):
        contract.check_signature(*signature(path), path)


# ---------------------------------------------------------------- image path

def test_model_size_rounding():
    assert contract.model_size(480, 640, 256, 1) == (256, 341)
    assert contract.model_size(480, 640, 160, 32) == (160, 224)
    assert contract.model_size(100, 100, 20, 32) == (32, 32)  # never below one multiple
    assert contract.model_size(1080, 1920, 160, 32) == (160, 288)  # 284.4 -> 288
    assert contract.model_size(2000, 500, 160, 32) == (640, 160)  # portrait: the short side is the width


def test_model_size_caps_the_long_side():
    """A 2 x 4000 or 1 x 20000 strip reaches the model at most MAX_ASPECT x input_size long, not 320 000 px."""
    cap = contract.MAX_ASPECT * 160
    assert contract.model_size(2, 4000, 160, 32) == (160, cap)
    assert contract.model_size(20000, 1, 160, 32) == (cap, 160)
    assert contract.model_size(10, 4000, 64, 32) == (64, contract.MAX_ASPECT * 64)
    assert contract.model_size(160, 160 * contract.MAX_ASPECT, 160, 32) == (160, cap)  # at the cap: unchanged


def test_model_input_for_gray_bgr_uint16_and_float():
    info = ModelInfo(input_size=32, size_multiple=8)
    bgr = textured_image()
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    for image in (bgr, gray, bgr.astype(np.uint16) * 257, gray.astype(np.float32) / 255.0):
        small = contract.model_input(image, info)
        assert small.shape == (1, 1, 32, 48) and small.dtype == np.float32 and small.flags.c_contiguous
        assert 0.0 <= small.min() and small.max() <= 100.0
    np.testing.assert_allclose(contract.model_input(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), info),
                               contract.model_input(gray, info), atol=1e-3)
    # pixels are resized first (INTER_AREA when shrinking), then converted
    expected = color.lightness(cv2.resize(bgr, (48, 32), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(contract.model_input(bgr, info)[0, 0], expected)


def test_colorize_is_what_colorize_bgr_gives_bit_for_bit(tiny_model):
    model = ColorizerModel(tiny_model, provider="cpu")
    for image in (textured_image(), cv2.cvtColor(textured_image(seed=1), cv2.COLOR_BGR2GRAY),
                  textured_image(seed=2).astype(np.uint16) * 257):
        out = contract.colorize(model.predict_ab, image, model.info)
        np.testing.assert_array_equal(out, model.colorize_bgr(image))
        # the steps spelled out: L* at the model size from resized pixels, ab merged with the full-resolution L*
        h, w = contract.model_size(*image.shape[:2], model.input_size, model.size_multiple)
        small = color.lightness(color.resize_area(image, h, w))[None, None]
        by_hand = color.merge_ab(image, model.predict_ab(small)[0])
        np.testing.assert_array_equal(out, by_hand)
        assert out.shape == image.shape[:2] + (3,) and out.dtype == np.uint8


def test_colorize_takes_any_predict_ab_and_checks_its_shape():
    info = ModelInfo(input_size=24)
    image = textured_image()
    zero = contract.colorize(lambda L: np.zeros((1, 2) + L.shape[2:], np.float32), image, info)
    np.testing.assert_array_equal(zero, contract.gray_baseline(image))
    with pytest.raises(ContractError, match="returned ab"):
        contract.colorize(lambda L: np.zeros((1, 1) + L.shape[2:], np.float32), image, info)


def test_gray_baseline_keeps_lightness_and_has_no_colour():
    image = textured_image(60, 80)
    gray = contract.gray_baseline(image)
    assert gray.shape == image.shape and gray.dtype == np.uint8
    assert np.abs(gray.astype(int) - gray[..., :1]).max() <= 1  # B = G = R
    assert np.abs(color.lightness(gray) - color.lightness(image)).max() <= 0.5


def test_contract_module_is_numpy_and_opencv_only():
    tree = ast.parse((REPO / "runtime" / "contract.py").read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert modules <= {"json", "math", "dataclasses", "numpy", "cv2", "runtime"}, modules


# ---------------------------------------------------------------- temperature

def test_temperature_is_fed_and_changes_the_output(make_model):
    path = make_model("temp.onnx", temperature=1.0)
    lightness = np.random.default_rng(0).uniform(0, 100, (1, 1, 16, 20)).astype(np.float32)
    default = ColorizerModel(path, provider="cpu")
    assert default.default_temperature == 1.0 and default.has_temperature and default.temperature is None
    same = ColorizerModel(path, provider="cpu", temperature=1.0)
    vivid = ColorizerModel(path, provider="cpu", temperature=2.5)
    np.testing.assert_array_equal(same.predict_ab(lightness), default.predict_ab(lightness))
    ab, ab_vivid = default.predict_ab(lightness), vivid.predict_ab(lightness)
    assert np.abs(ab_vivid - ab).max() > 1.0
    assert np.abs(ab_vivid).mean() > np.abs(ab).mean()  # the tiny graph: ab = 60 tanh(z * temperature)
    image = textured_image()
    assert not np.array_equal(vivid.colorize_bgr(image), default.colorize_bgr(image))


def test_temperature_is_rejected_for_a_model_without_one_and_out_of_range(tiny_model, make_model):
    older = ColorizerModel(tiny_model, provider="cpu")
    assert older.default_temperature is None and not older.has_temperature
    with pytest.raises(ModelError, match="has no temperature input \\(an older model\\)"):
        ColorizerModel(tiny_model, provider="cpu", temperature=0.5)
    path = make_model("temp.onnx", temperature=1.0)
    for bad in (0, 1e-45, 0.0099, -0.3, -1, 5.01, 5.5, math.nan, math.inf):  # 1e-45 would overflow the softmax
        with pytest.raises(ContractError):
            contract.check_temperature(bad)
        with pytest.raises(ModelError, match="temperature must be in \\[0.01, 5\\]"):
            ColorizerModel(path, provider="cpu", temperature=bad)
    with pytest.raises(ContractError):
        contract.check_temperature("warm")
    assert contract.check_temperature("0.01") == 0.01 and contract.check_temperature(5) == 5.0
    assert ColorizerModel(path, provider="cpu", temperature=5).temperature == 5.0
    assert ColorizerModel(path, provider="cpu", temperature=contract.MIN_TEMPERATURE).temperature == 0.01
