"""runtime.model and runtime.color: model resolution, providers, contract checks, Lab maths and the merge; and the
README's Python API snippet, run as written."""

import os
import re
import subprocess
import sys

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from skimage.color import lab2rgb, rgb2lab

from runtime import ColorizerModel, ModelError, ProviderError, color, contract, model as runtime_model, resolve_model
from tests.conftest import REPO, make_conv_model, make_tiny_colorizer


def textured_image(height=96, width=128, seed=0):
    """Smooth colour gradients plus fine detail, so a merge that loses full-res L shows up."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, 0.5 + 0.4 * np.sin(x / 7.0)], axis=2) * 200 + 20
    detail = ((x // 2 + y // 2) % 2)[..., None] * 30
    return np.clip(base + detail + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- resolving and loading models

def test_resolve_model_shipped_names_and_paths(tmp_path, monkeypatch):
    package, repo = tmp_path / "package", tmp_path / "checkpoints"
    package.mkdir(), repo.mkdir()
    make_tiny_colorizer(package / "colorizer-int8.onnx")
    for name in ("colorizer-int8", "colorizer", "general-v2", "seed-colorizer"):
        make_tiny_colorizer(repo / f"{name}.onnx")
    (repo / "colorizer.pt").write_bytes(b"not a model")
    monkeypatch.setattr(runtime_model, "shipped_model_dirs", lambda: [package, repo, tmp_path / "missing"])
    assert runtime_model.shipped_model_names() == ["colorizer", "colorizer-int8", "general-v2", "seed-colorizer"]
    # the default ("auto"): int8 on the CPU, fp32 on a GPU; package data first
    assert resolve_model(None) == resolve_model("auto") == package / "colorizer-int8.onnx"
    assert resolve_model("colorizer-int8") == package / "colorizer-int8.onnx"
    assert resolve_model("seed-colorizer.onnx") == repo / "seed-colorizer.onnx"
    assert resolve_model("general-v2") == repo / "general-v2.onnx"
    own = make_tiny_colorizer(tmp_path / "mine.onnx")
    assert resolve_model(own) == tmp_path / "mine.onnx"
    with pytest.raises(ModelError, match="shipped models installed here: colorizer, colorizer-int8, general-v2"):
        resolve_model("colorizer-fp16")  # a shipped name that is not shipped here
    with pytest.raises(ModelError, match="not found"):
        resolve_model(tmp_path / "missing.onnx")
    monkeypatch.setattr(runtime_model, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert resolve_model("auto") == resolve_model(None, "cuda") == repo / "colorizer.onnx"
    assert resolve_model("auto", "cpu") == package / "colorizer-int8.onnx"


def test_model_loads_with_metadata(tiny_model):
    model = ColorizerModel(tiny_model, provider="cpu")
    assert model.provider == "CPUExecutionProvider"
    assert model.input_size == 64 and model.size_multiple == 1
    assert model.metadata["precision"] == "fp32"
    assert ColorizerModel(tiny_model, provider="cpu", size=40).input_size == 40


def test_model_size_comes_from_the_file_metadata(tmp_path):
    """The rounding itself is test_contract's; here the model takes input_size and size_multiple from its file."""
    path = make_tiny_colorizer(tmp_path / "m.onnx", input_size=160, metadata={"size_multiple": "32"})
    model = ColorizerModel(path, provider="cpu")
    assert (model.input_size, model.size_multiple) == (160, 32)
    assert model.model_size(480, 640) == (160, 224)  # 213.3 -> 224
    small = contract.model_input(textured_image(480, 640), model.info)
    assert small.shape == (1, 1, 160, 224) and small.dtype == np.float32


def test_predict_ab_matches_the_graph_by_hand(tiny_model):
    """The tiny graph is ab = 60 tanh(conv3x3((L - 50) / 50)); recompute it with OpenCV."""
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(tiny_model).graph.initializer}
    rng = np.random.default_rng(3)
    lightness = rng.uniform(0, 100, (2, 1, 20, 30)).astype(np.float32)
    ab = ColorizerModel(tiny_model, provider="cpu").predict_ab(lightness)
    assert ab.shape == (2, 2, 20, 30) and ab.dtype == np.float32
    for n in range(2):
        normalised = (lightness[n, 0] - 50.0) / 50.0
        for channel in range(2):
            conv = cv2.filter2D(normalised, -1, weights["conv_w"][channel, 0], borderType=cv2.BORDER_CONSTANT)
            expected = 60.0 * np.tanh(conv + weights["conv_b"][channel])
            np.testing.assert_allclose(ab[n, channel], expected, atol=1e-3)


@pytest.mark.parametrize("content", [b"", b"this is not an onnx file", None])
def test_malformed_model_file_is_a_model_error(tmp_path, content):
    path = tmp_path / "bad.onnx"
    if content is None:
        path = tmp_path / "missing.onnx"
    else:
        path.write_bytes(content)
    with pytest.raises(ModelError):
        ColorizerModel(path, provider="cpu")


def off_contract_model(path, input_name="x", metadata=None):
    make_conv_model(path, input_name=input_name, metadata=metadata or {"input_size": "64"})
    return path


def test_model_off_contract_or_without_size_is_rejected(tmp_path):
    with pytest.raises(ModelError, match="contract"):
        ColorizerModel(off_contract_model(tmp_path / "a.onnx", input_name="x"), provider="cpu")
    with pytest.raises(ModelError, match="input_size"):
        ColorizerModel(off_contract_model(tmp_path / "b.onnx", "L", metadata={"version": "1"}), provider="cpu")
    with pytest.raises(ModelError, match="not an integer"):
        ColorizerModel(off_contract_model(tmp_path / "c.onnx", "L", metadata={"input_size": "big"}), provider="cpu")
    # an explicit size makes the missing metadata fine
    assert ColorizerModel(tmp_path / "b.onnx", provider="cpu", size=32).input_size == 32


def test_provider_selection(tiny_model):
    available = ort.get_available_providers()
    auto = ColorizerModel(tiny_model, provider="auto")
    cuda_here = "CUDAExecutionProvider" in available
    assert auto.provider in (("CUDAExecutionProvider", "CPUExecutionProvider") if cuda_here
                             else ("CPUExecutionProvider",))
    assert ColorizerModel(tiny_model, provider="cpu").provider == "CPUExecutionProvider"
    with pytest.raises(ProviderError, match="unknown provider"):
        ColorizerModel(tiny_model, provider="npu")


@pytest.mark.parametrize("provider,ort_name", [("cuda", "CUDAExecutionProvider"),
                                               ("tensorrt", "TensorrtExecutionProvider")])
def test_unavailable_gpu_provider_is_an_error_not_a_fallback(tiny_model, provider, ort_name):
    if ort_name in ort.get_available_providers():
        pytest.skip(f"{ort_name} is built into this onnxruntime; the no-fallback case needs a CPU-only build")
    with pytest.raises(ProviderError, match=provider):
        ColorizerModel(tiny_model, provider=provider)


# ---------------------------------------------------------------- colour maths

def test_lightness_matches_skimage():
    rng = np.random.default_rng(0)
    rgb8 = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    expected = rgb2lab(rgb8)[..., 0]
    np.testing.assert_allclose(color.lightness(rgb8[..., ::-1].copy()), expected, atol=1e-3)
    rgb16 = rng.integers(0, 65536, (32, 40, 3), dtype=np.uint16)
    np.testing.assert_allclose(color.lightness(rgb16[..., ::-1].copy()), rgb2lab(rgb16 / 65535.0)[..., 0],
                               atol=1e-3)
    gray = rng.integers(0, 256, (30, 20), dtype=np.uint8)
    np.testing.assert_allclose(color.lightness(gray), rgb2lab(np.repeat(gray[..., None], 3, 2))[..., 0], atol=1e-3)


def test_lab_to_bgr_matches_skimage():
    rng = np.random.default_rng(1)
    rgb = rng.uniform(0, 1, (40, 50, 3))
    lab = rgb2lab(rgb).astype(np.float32)
    np.testing.assert_allclose(color.lab_to_bgr(lab)[..., ::-1], lab2rgb(lab), atol=2e-3)
    # and OpenCV's forward float conversion agrees with skimage to the contract's tolerance
    np.testing.assert_allclose(cv2.cvtColor(rgb[..., ::-1].astype(np.float32), cv2.COLOR_BGR2Lab), lab, atol=0.5)


def test_merge_keeps_the_input_lightness(tiny_model):
    image = textured_image(192, 256)
    out = ColorizerModel(tiny_model, provider="cpu").colorize_bgr(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    difference = np.abs(color.lightness(out) - color.lightness(image))
    in_gamut = np.all((out > 0) & (out < 255), axis=2)  # clipping out-of-gamut colours may move L
    assert in_gamut.mean() > 0.3
    assert difference[in_gamut].max() <= 1.0
    assert np.abs(out.astype(int) - image).mean() > 2  # it did recolour


def test_merge_in_strips_equals_one_pass(tiny_model, monkeypatch):
    model = ColorizerModel(tiny_model, provider="cpu")
    image = textured_image(150, 170)
    whole, whole_l = model.colorize_bgr(image), color.lightness(image)
    monkeypatch.setattr(color, "STRIP_PIXELS", 170 * 7)  # 22 strips, the last one short
    np.testing.assert_array_equal(color.lightness(image), whole_l)
    ab = model.predict_ab(contract.model_input(image, model.info))[0]
    striped = color.merge_ab(image, ab)
    assert np.abs(striped.astype(int) - whole).max() <= 1
    in_place = image.copy()
    assert color.merge_ab(in_place, ab, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, striped)


def test_merge_threads_change_nothing_but_speed(monkeypatch):
    image = textured_image(300, 400)
    ab = np.random.default_rng(3).normal(0, 30, (2, 75, 100)).astype(np.float32)
    monkeypatch.setattr(color, "BAND_PIXELS", 400 * 9)  # 34 bands, an odd number, the last one short
    one = color.merge_ab(image, ab, threads=1)
    monkeypatch.setattr(color, "MERGE_THREADS", 3)
    monkeypatch.setattr(cv2, "getNumThreads", lambda: 8)
    assert color.merge_threads() == 3
    np.testing.assert_array_equal(color.merge_ab(image, ab), one)
    monkeypatch.setattr(cv2, "getNumThreads", lambda: 1)  # cv2.setNumThreads(1), as a Ray actor with 1 CPU does
    assert color.merge_threads() == 1
    monkeypatch.setattr(color, "STRIP_PIXELS", 400 * 50)  # strips of 50 rows, each split among the threads
    in_place = image.copy()
    assert color.merge_ab(in_place, ab, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, one)
    with pytest.raises(ValueError):  # a failing band is the caller's error, after every thread has stopped
        color.merge_ab(image, ab, out=np.empty((300, 399, 3), np.uint8))


# ---------------------------------------------------------------- the README's Python API snippet

def readme_python_api(text: str) -> str | None:
    """The first ```python block after the heading "## Python API", or None when there is none."""
    match = re.search(r"^## Python API\s*$(.*?)^```python\n(.*?)^```", text, re.M | re.S)
    if match is None or re.search(r"^## ", match.group(1), re.M):  # the block must be in that section
        return None
    return match.group(2)


def test_readme_python_api_snippet_runs(tmp_path):
    snippet = readme_python_api((REPO / "README.md").read_text())
    assert snippet is not None, "README.md has no '## Python API' section with a ```python block"
    (tmp_path / "examples").symlink_to(REPO / "examples")  # the snippet's relative paths, outputs in tmp_path
    (tmp_path / "snippet.py").write_text(snippet)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=300)
    assert result.returncode == 0, f"README snippet failed:\n{snippet}\n{result.stderr[-3000:]}"
