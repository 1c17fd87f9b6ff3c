"""Shared fixtures and helpers (one copy each). The `slow` marker is registered in pyproject.toml.

REPO, run_module (python -m MODULE in a subprocess), run_main (its main(argv) in this process) and the tiny ONNX
models built with onnx.helper, so runtime tests need neither torch nor a trained model. Test modules import the
plain helpers (`from tests.conftest import REPO, run_module, make_tiny_colorizer`) and request the fixtures by
name."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def run_module(module: str, *args, check: bool = True, env: dict | None = None, cwd=REPO,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m module args` with this interpreter, output captured as text; check: fail the test (with the
    end of stderr) on a non-zero exit."""
    result = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, capture_output=True,
                            text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{module} {args} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def run_main(capfd, module: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    """run_module in this process (seconds of imports saved): main(argv), its exit code and what it printed."""
    capfd.readouterr()
    try:
        code = importlib.import_module(module).main([str(a) for a in args]) or 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capfd.readouterr()
    if check and code != 0:
        raise AssertionError(f"{module} {args} exited {code}:\n{err[-3000:]}")
    return subprocess.CompletedProcess([module, *args], code, out, err)


def _save(model, path, metadata: dict) -> str:
    import onnx
    from onnx import helper

    model.ir_version = 8
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return str(path)


def tiny_metadata(input_size: int = 64, **extra) -> dict:
    props = {"input_size": str(input_size), "size_multiple": "1", "precision": "fp32", "version": "test",
             "preset": "tiny-test", "training_data": "none (random weights)", "metrics": json.dumps({})}
    props.update({key: str(value) for key, value in extra.items()})
    return props


def make_tiny_colorizer(path, input_size: int = 64, seed: int = 0, metadata: dict | None = None,
                        temperature: float | None = None) -> str:
    """A contract-following colorizer: ab = 60 tanh(conv3x3((L - 50) / 50) [* temperature]). Its ab depends on L
    through one 3x3 convolution, so a wrong L channel or a misaligned output shows up in the numbers. With a
    temperature, it is an extra scalar input with that default (an overridable initializer), as newer exports
    have, and also in the metadata."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.normal(0.0, 0.5, size=(2, 1, 3, 3)).astype(np.float32)
    initializers = [
        numpy_helper.from_array(np.array(50.0, dtype=np.float32), "l_center"),
        numpy_helper.from_array(weight, "conv_w"),
        numpy_helper.from_array(np.array([0.1, -0.2], dtype=np.float32), "conv_b"),
        numpy_helper.from_array(np.array(60.0, dtype=np.float32), "ab_scale"),
    ]
    inputs = [helper.make_tensor_value_info("L", TensorProto.FLOAT, ["N", 1, "H", "W"])]
    nodes = [
        helper.make_node("Sub", ["L", "l_center"], ["l_c"]),
        helper.make_node("Div", ["l_c", "l_center"], ["l_n"]),
        helper.make_node("Conv", ["l_n", "conv_w", "conv_b"], ["z"], pads=[1, 1, 1, 1]),
    ]
    if temperature is not None:
        initializers.append(numpy_helper.from_array(np.array(temperature, dtype=np.float32), "temperature"))
        inputs.append(helper.make_tensor_value_info("temperature", TensorProto.FLOAT, []))
        nodes.append(helper.make_node("Mul", ["z", "temperature"], ["z_t"]))
    nodes += [helper.make_node("Tanh", ["z_t" if temperature is not None else "z"], ["t"]),
              helper.make_node("Mul", ["t", "ab_scale"], ["ab"])]
    graph = helper.make_graph(nodes, "tiny_colorizer", inputs,
                              [helper.make_tensor_value_info("ab", TensorProto.FLOAT, ["N", 2, "H", "W"])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    props = tiny_metadata(input_size, **({"temperature": temperature} if temperature is not None else {}))
    props.update(metadata or {})
    return _save(model, path, props)


def make_conv_model(path, input_shape=("N", 1, "H", "W"), output_channels: int = 2, input_name: str = "L",
                    output_name: str = "ab", metadata: dict | None = None) -> str:
    """A model with any signature ONNX Runtime loads: output = 1x1 conv of the input. For off-contract cases
    (3 input channels, a fixed 224x224, a 1-channel ab, other names)."""
    from onnx import TensorProto, helper, numpy_helper

    channels = input_shape[1]
    weight = np.full((output_channels, channels, 1, 1), 0.1, np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", [input_name, "w"], [output_name])], "conv",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT,
                                       [input_shape[0], output_channels, *input_shape[2:]])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    return _save(model, path, tiny_metadata() if metadata is None else metadata)


@pytest.fixture
def tiny_model(tmp_path) -> str:
    """A contract-following tiny colorizer (input_size 64), without a temperature input."""
    return make_tiny_colorizer(tmp_path / "tiny.onnx")


@pytest.fixture
def make_model(tmp_path):
    """Factory: make_model("name.onnx", input_size=..., temperature=..., metadata=...) -> path in tmp_path."""
    def make(name: str = "tiny.onnx", **kwargs) -> str:
        return make_tiny_colorizer(tmp_path / name, **kwargs)

    return make


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A synthetic Flowers-102 and general/ (tests/flowers_fixture.py), made once for the session: read only."""
    from tests.flowers_fixture import make_tiny_flowers

    return make_tiny_flowers(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture(scope="session")
def flowers_root() -> Path:
    """The real Flowers-102 from env FLOWERS_ROOT (the folder holding flowers-102/, as torchvision takes it).

    Unset skips the test; set to a folder without flowers-102/ fails it, so a CI typo is not a silent skip."""
    root = os.environ.get("FLOWERS_ROOT")
    if not root:
        pytest.skip("FLOWERS_ROOT is not set (the folder holding flowers-102/)")
    path = Path(root).expanduser().resolve()
    if not (path / "flowers-102" / "jpg").is_dir():
        pytest.fail(f"FLOWERS_ROOT={root} holds no flowers-102/jpg/")
    return path


@pytest.fixture(scope="session", autouse=True)
def _cache_in_tmp(tmp_path_factory):
    """The decoded-image cache (FLOWERCOLOR_CACHE, read by train.data.default_cache_dir) goes to a temporary folder
    for the whole session, for this process and every subprocess it starts: tests write nothing outside tmp."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLOWERCOLOR_CACHE", str(tmp_path_factory.mktemp("flowercolor-cache")))
        yield
