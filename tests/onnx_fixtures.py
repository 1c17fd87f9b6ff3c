"""A tiny ONNX colorizer that follows the contract (L [N,1,H,W] in [0,100] -> ab [N,2,H,W]), built with
onnx.helper so runtime tests need neither torch nor a trained model. Its ab depends on L through one
3x3 convolution, so a wrong L channel or a misaligned output shows up in the numbers."""

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_tiny_colorizer(path, input_size: int = 64, seed: int = 0, metadata: dict | None = None) -> str:
    rng = np.random.default_rng(seed)
    weight = rng.normal(0.0, 0.5, size=(2, 1, 3, 3)).astype(np.float32)
    bias = np.array([0.1, -0.2], dtype=np.float32)
    initializers = [
        numpy_helper.from_array(np.array(50.0, dtype=np.float32), "l_center"),
        numpy_helper.from_array(weight, "conv_w"),
        numpy_helper.from_array(bias, "conv_b"),
        numpy_helper.from_array(np.array(60.0, dtype=np.float32), "ab_scale"),
    ]
    nodes = [
        helper.make_node("Sub", ["L", "l_center"], ["l_c"]),
        helper.make_node("Div", ["l_c", "l_center"], ["l_n"]),
        helper.make_node("Conv", ["l_n", "conv_w", "conv_b"], ["z"], pads=[1, 1, 1, 1]),
        helper.make_node("Tanh", ["z"], ["t"]),
        helper.make_node("Mul", ["t", "ab_scale"], ["ab"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_colorizer",
        [helper.make_tensor_value_info("L", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("ab", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    props = {
        "input_size": str(input_size),
        "size_multiple": "1",
        "precision": "fp32",
        "version": "test",
        "preset": "tiny-test",
        "training_data": "none (random weights)",
        "metrics": json.dumps({}),
    }
    props.update(metadata or {})
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return str(path)
