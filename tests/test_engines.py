"""Every shipped colorizer loads and runs in the engines edge users run ONNX files in (export.engines: ONNX
Runtime, OpenCV DNN, OpenVINO on the CPU), through the runtime's image path, and agrees with ONNX Runtime: fp32
within verify's fp32 tolerance on ab, int8 (each engine has its own int8 kernels) within verify's int8 tolerances
on real photos (PSNR against the photo and colourfulness). `export.verify --engine` holds them to the checkpoint."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from export import engines
from export.verify import FP32_MAX_AB, INT8_MAX_COLOUR_CHANGE, INT8_MAX_PSNR_DROP
from runtime import contract
from tests.conftest import REPO
from train import metrics

SHIPPED = ("colorizer", "colorizer-int8")
PHOTOS = sorted((REPO / "examples").glob("*.jpg"))


def shipped_model_path(name: str) -> Path:
    return REPO / "checkpoints" / f"{name}.onnx"  # this checkout's files, whatever the venv has installed


@pytest.fixture(scope="module")
def onnxruntime_results():
    """What ONNX Runtime (the runtime's engine) gives for each shipped file: ab on one L*, colour on the photos."""
    results = {}
    for name in SHIPPED:
        predict, info = engines.load("onnxruntime", shipped_model_path(name))
        results[name] = run_engine(predict, info)
    return results


def run_engine(predict, info) -> tuple[np.ndarray, list[np.ndarray]]:
    lightness = contract.model_input(cv2.imread(str(PHOTOS[0])), info)
    return np.asarray(predict(lightness)), [contract.colorize(predict, cv2.imread(str(p)), info) for p in PHOTOS]


def scores(outputs) -> tuple[float, float]:
    truths = [cv2.imread(str(p))[..., ::-1] for p in PHOTOS]
    psnr = np.mean([metrics.psnr(out[..., ::-1], truth) for out, truth in zip(outputs, truths)])
    return float(psnr), float(np.mean([metrics.colorfulness(out[..., ::-1]) for out in outputs]))


@pytest.mark.parametrize("engine", ["opencv", "openvino"])
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_colorizer_runs_in_every_engine(name, engine, onnxruntime_results):
    if engine == "openvino":
        pytest.importorskip("openvino", reason="the edge extra (pip install '.[edge]') is not installed")
    path = shipped_model_path(name)
    predict, info = engines.load(engine, path)
    assert info == engines.file_info(path)
    ab, outputs = run_engine(predict, info)
    reference_ab, reference = onnxruntime_results[name]
    assert ab.shape == reference_ab.shape and np.isfinite(ab).all()
    if info.precision == "fp32":
        assert np.abs(ab - reference_ab).max() <= FP32_MAX_AB
        assert max(np.abs(out.astype(int) - ref).max() for out, ref in zip(outputs, reference)) <= 1
        return
    (psnr, colour), (reference_psnr, reference_colour) = scores(outputs), scores(reference)
    assert abs(psnr - reference_psnr) <= INT8_MAX_PSNR_DROP
    assert abs(colour / reference_colour - 1.0) <= INT8_MAX_COLOUR_CHANGE


def test_an_engine_that_cannot_load_the_file_says_so_in_one_line(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    for engine in ("opencv", "openvino"):
        if engine == "openvino":
            pytest.importorskip("openvino")
        with pytest.raises(engines.EngineError, match=f"cannot load {broken}") as error:
            engines.load(engine, broken)
        assert "\n" not in str(error.value)
    with pytest.raises(engines.EngineError, match="unknown engine 'tvm'"):
        engines.load("tvm", Path("x.onnx"))
