"""What ColorizerModel refuses (issue 20, model level): a model whose ab has the wrong shape or is not finite is
refused once, at load (a probe run); a NaN on one image is that image's failure, never a white image; threads are
capped; a run that never ends is stopped by its timeout, and SIGTERM ends the process within a second."""

import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime import model as runtime_model
from runtime.contract import ContractError
from runtime.model import ColorizerModel, ModelContractError, ModelError
from tests.conftest import REPO, _save, make_tiny_colorizer, run_module, tiny_metadata

L_INPUT = helper.make_tensor_value_info("L", TensorProto.FLOAT, ["N", 1, "H", "W"])
AB_OUTPUT = helper.make_tensor_value_info("ab", TensorProto.FLOAT, ["N", 2, "h", "w"])


def save_graph(path, nodes, initializers=(), metadata=None) -> str:
    graph = helper.make_graph(nodes, "guard", [L_INPUT], [AB_OUTPUT], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    return _save(model, path, metadata or tiny_metadata())


def half_size_model(path) -> str:
    """ab at half the input's height and width (a 2x2 average pool in front of the head)."""
    return save_graph(path, [helper.make_node("AveragePool", ["L"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                             helper.make_node("Concat", ["p", "p"], ["ab"], axis=1)])


def nan_when_bright_model(path) -> str:
    """ab = sqrt(60 - mean L*) on both channels: finite on the probe's ramp (mean 50), NaN for a bright image."""
    return save_graph(path, [helper.make_node("ReduceMean", ["L"], ["mean"], keepdims=1),
                             helper.make_node("Sub", ["sixty", "mean"], ["room"]),
                             helper.make_node("Sqrt", ["room"], ["root"]),
                             helper.make_node("Mul", ["L", "zero"], ["zeros"]),
                             helper.make_node("Add", ["zeros", "root"], ["plane"]),
                             helper.make_node("Concat", ["plane", "plane"], ["ab"], axis=1)],
                      [numpy_helper.from_array(np.array(60.0, np.float32), "sixty"),
                       numpy_helper.from_array(np.array(0.0, np.float32), "zero")])


def endless_loop_model(path) -> str:
    """ab = L on both channels after an ONNX Loop of (H*W)^3 empty steps: 216 for the probe's 2 x 3 L*, 2e11 (never
    ends, in practice) for an image at the model's size."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["x_in"], ["x_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("x_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Shape", ["L"], ["shape"], start=2),
             helper.make_node("ReduceProd", ["shape"], ["pixels"], keepdims=0),
             helper.make_node("Mul", ["pixels", "pixels"], ["squared"]),
             helper.make_node("Mul", ["squared", "pixels"], ["steps"]),
             helper.make_node("Loop", ["steps", "go", "L"], ["looped"], body=body),
             helper.make_node("Concat", ["looped", "looped"], ["ab"], axis=1)]
    return save_graph(path, nodes, [numpy_helper.from_array(np.array(True), "go")])


def photo(value=None) -> np.ndarray:
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    return image if value is None else np.full_like(image, value)


def test_wrong_ab_shape_is_refused_at_load(tmp_path):
    path = half_size_model(tmp_path / "half.onnx")
    with pytest.raises(ModelContractError, match=r"probe run at load\) returned ab \[1, 2, 1, 1\] for L \[1, 1, 2, 3\]"):
        ColorizerModel(path, provider="cpu")
    # the same one line and exit 2 for images and videos alike: the model is refused before any input is read
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), photo())
    result = run_module("runtime.colorize", tmp_path / "in", "-o", tmp_path / "out", "--model", path, check=False)
    assert result.returncode == 2 and "probe run at load" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "a_color.png").exists()


def test_nan_ab_is_a_failure_never_a_white_image(tmp_path):
    path = nan_when_bright_model(tmp_path / "nan.onnx")
    model = ColorizerModel(path, provider="cpu")  # finite on the probe
    assert model.colorize_bgr(photo(40)).dtype == np.uint8
    with pytest.raises(ContractError, match="NaN or infinite"):
        model.colorize_bgr(photo(250))
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "bright.png"), photo(250))
    cv2.imwrite(str(tmp_path / "in" / "dark.png"), photo(40))
    result = run_module("runtime.colorize", tmp_path / "in", "-o", tmp_path / "out", "--model", path, check=False)
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {tmp_path / 'in' / 'bright.png'}: the model returned NaN or infinite ab values"]
    assert (tmp_path / "out" / "dark_color.png").is_file() and not (tmp_path / "out" / "bright_color.png").exists()


def test_a_model_that_is_nan_everywhere_is_refused_at_load(tmp_path):
    nodes = [helper.make_node("Sub", ["L", "hundred"], ["negative"]), helper.make_node("Sqrt", ["negative"], ["r"]),
             helper.make_node("Concat", ["r", "r"], ["ab"], axis=1)]
    path = save_graph(tmp_path / "nan.onnx", nodes, [numpy_helper.from_array(np.array(101.0, np.float32), "hundred")])
    with pytest.raises(ModelContractError, match="probe run at load\\) returned NaN or infinite ab values"):
        ColorizerModel(path, provider="cpu")


def test_threads_are_capped(tiny_model):
    limit = runtime_model.MAX_THREADS_PER_CORE * runtime_model.default_threads()
    for bad in (0, -1, limit + 1, 100000):
        with pytest.raises(ModelError, match=f"threads must be 1 to {limit}"):
            ColorizerModel(tiny_model, provider="cpu", threads=bad)
    assert ColorizerModel(tiny_model, provider="cpu", threads=limit).session.get_session_options() \
        .intra_op_num_threads == limit


def test_a_run_that_never_ends_is_stopped_by_its_timeout(tmp_path):
    model = ColorizerModel(endless_loop_model(tmp_path / "loop.onnx"), provider="cpu", run_timeout=0.5)
    began = time.perf_counter()
    with pytest.raises(ModelError, match="a model run took longer than 0.5 s and was stopped"):
        model.colorize_bgr(photo())
    assert time.perf_counter() - began < 3.0


def test_a_probe_that_never_ends_refuses_the_model(tmp_path, monkeypatch):
    path = make_tiny_colorizer(tmp_path / "ok.onnx")
    monkeypatch.setattr(runtime_model, "PROBE_TIMEOUT_S", 0.3)
    monkeypatch.setattr(runtime_model.ColorizerModel, "size_multiple", property(lambda self: 40))  # 80x120 probe
    with pytest.raises(ModelContractError, match="took longer than 0.3 s"):
        ColorizerModel(endless_loop_model(tmp_path / "loop.onnx"), provider="cpu")
    ColorizerModel(path, provider="cpu")  # a real model passes the same probe at once


def clip(path) -> str:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 24.0, (128, 96))
    for _ in range(10):
        writer.write(photo())
    writer.release()
    return str(path)


@pytest.mark.parametrize("command", ["colorize", "webcam"])
def test_sigterm_ends_a_run_that_never_ends_within_a_second(tmp_path, command):
    """In colorize the main thread waits on the run; in the webcam the model thread does, and the main thread
    stops its run (ColorizerModel.stop_runs) as it shuts down."""
    path = endless_loop_model(tmp_path / "loop.onnx")
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), photo())
    arguments = ([str(tmp_path / "in"), "-o", str(tmp_path / "out")] if command == "colorize" else
                 ["--source", clip(tmp_path / "clip.mp4"), "--no-display"])
    process = subprocess.Popen([sys.executable, "-m", f"runtime.{command}", *arguments, "--model", path], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:  # the model is loaded (the probe passed); the first photo's run never ends
            if line.startswith("model "):
                break
        time.sleep(1.0)
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        sent = time.perf_counter()
        assert process.wait(timeout=5) == 143
        assert time.perf_counter() - sent < 1.0
        expected = "interrupted: 0 done, 1 left" if command == "colorize" else "stopped (interrupted)"
        err = process.stderr.read()
        assert expected in err + process.stdout.read() and "Traceback" not in err
        assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []  # no output, no temp file
    finally:
        process.kill()
        process.wait()
