"""One ONNX colorizer in the engines edge users run ONNX files in: ONNX Runtime (the runtime's own ColorizerModel),
OpenCV DNN (cv2.dnn, CPU target: the engine of OpenCV's colorization sample) and OpenVINO (CPU, the `edge` extra).

Each gives a predict_ab callable (L* [N,1,h,w] float32 -> ab [N,2,h,w]) for runtime.contract.colorize, the
runtime's image path, so export.verify --engine checks each engine on exactly what users' photos go through.
The runtime itself stays on ONNX Runtime (README: engine x precision table).
"""

from pathlib import Path

import cv2
import numpy as np
import onnx

from runtime import contract
from runtime.model import ColorizerModel

ENGINES = ("onnxruntime", "opencv", "openvino")


class EngineError(Exception):
    """The engine is not installed or cannot load or run the file; one line for users."""


def file_info(path: Path) -> contract.ModelInfo:
    """The file's ModelInfo from its metadata_props (ContractError when they break the contract)."""
    model = onnx.load(str(path), load_external_data=False)
    return contract.ModelInfo.from_metadata({prop.key: prop.value for prop in model.metadata_props}, str(path))


def opencv_predictor(path: Path, threads: int | None = None):
    try:
        net = cv2.dnn.readNetFromONNX(str(path))  # OpenCV's own CPU back end (5.x's graph engine: no targets)
    except cv2.error as error:
        raise EngineError(f"OpenCV DNN {cv2.__version__} cannot load {path}: {_last_line(error)}") from None
    if threads:
        cv2.setNumThreads(threads)

    def predict_ab(lightness: np.ndarray) -> np.ndarray:
        net.setInput(np.ascontiguousarray(lightness, np.float32), contract.INPUT)
        try:
            return net.forward(contract.OUTPUT)
        except cv2.error as error:
            raise EngineError(f"OpenCV DNN failed on {path}: {_last_line(error)}") from None

    return predict_ab


def openvino_predictor(path: Path, threads: int | None = None):
    try:
        import openvino
    except ImportError:
        raise EngineError("OpenVINO is not installed (pip install '.[edge]')") from None
    # f32 inference: OpenVINO runs bf16 by default on CPUs that have it, which is another model's accuracy
    config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
    try:
        compiled = openvino.Core().compile_model(str(path), "CPU", config)
    except Exception as error:
        raise EngineError(f"OpenVINO {openvino.__version__} cannot load {path}: {_last_line(error)}") from None
    request, output = compiled.create_infer_request(), compiled.output(contract.OUTPUT)
    # OpenVINO folds the temperature input's default into the graph; fed only should a version keep it an input
    names = {name for port in compiled.inputs for name in port.get_names()}
    info = file_info(path)
    extra = {contract.TEMPERATURE: np.array(info.temperature, np.float32)} if contract.TEMPERATURE in names else {}

    def predict_ab(lightness: np.ndarray) -> np.ndarray:
        result = request.infer({contract.INPUT: np.ascontiguousarray(lightness, np.float32), **extra})
        return np.array(result[output])  # the request reuses its buffer on the next run

    return predict_ab


def load(engine: str, path: Path, threads: int | None = None):
    """-> (predict_ab, ModelInfo) for the file in that engine; EngineError when it cannot be used."""
    path = Path(path)
    if engine == "onnxruntime":
        model = ColorizerModel(path.resolve(), provider="cpu", threads=threads)  # a path, never a shipped name
        return model.predict_ab, model.info
    if engine == "opencv":
        return opencv_predictor(path, threads), file_info(path)
    if engine == "openvino":
        return openvino_predictor(path, threads), file_info(path)
    raise EngineError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")


def _last_line(error: Exception) -> str:
    """OpenCV's and OpenVINO's messages end with the reason after lines of source locations."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
