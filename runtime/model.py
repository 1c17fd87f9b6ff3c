"""Load a contract-following ONNX colorizer into ONNX Runtime and run it on images.

The contract: input `L` float32 [N,1,H,W] (CIE L* in [0, 100]) -> output `ab` float32 [N,2,H,W] (CIE a*, b*),
with the preferred model size in the file's metadata (`input_size`, `size_multiple`).
"""

import importlib.resources
import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime import color

log = logging.getLogger(__name__)

SHIPPED_MODELS = ("colorizer", "colorizer-int8", "colorizer-fp16", "seed-colorizer")
DEFAULT_MODEL = "colorizer"
PROVIDERS = ("auto", "cuda", "tensorrt", "cpu")
_ORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
REPO_CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


class ModelError(Exception):
    """The model file is missing, unreadable or does not follow the contract."""


class ProviderError(Exception):
    """The requested execution provider cannot be used here."""


def shipped_model_dirs() -> list[Path]:
    """Where shipped models live: the installed package data of runtime.models, then the repo's checkpoints/."""
    folders = []
    try:
        folders.append(Path(str(importlib.resources.files("runtime.models"))))
    except (ModuleNotFoundError, TypeError):
        pass
    return folders + [REPO_CHECKPOINTS]


def shipped_model_path(name: str) -> Path | None:
    for folder in shipped_model_dirs():
        candidate = folder / f"{name}.onnx"
        if candidate.is_file():
            return candidate
    return None


def resolve_model(model: str | Path | None) -> Path:
    """None -> the shipped default; a bare shipped name ("colorizer-int8", "colorizer-int8.onnx") -> that shipped
    file; anything else is a path. Raises ModelError when the file does not exist."""
    if model is None:
        model = DEFAULT_MODEL
    text = str(model)
    name = text[:-5] if text.endswith(".onnx") else text
    if name in SHIPPED_MODELS and os.sep not in text and "/" not in text:
        path = shipped_model_path(name)
        if path is None:
            raise ModelError(f"shipped model {name!r} is not installed "
                             f"(looked in the runtime.models package data and {REPO_CHECKPOINTS})")
        return path
    path = Path(text).expanduser()
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    return path


def available_providers() -> list[str]:
    return ort.get_available_providers()


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _provider_chain(provider: str) -> list:
    """ORT provider list for a requested provider name; raises ProviderError when it is not built in."""
    available = available_providers()
    if provider not in PROVIDERS:
        raise ProviderError(f"unknown provider {provider!r} (choose from {', '.join(PROVIDERS)})")
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    if provider == "auto":
        return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]
    wanted = _ORT_NAMES[provider]
    if wanted not in available:
        raise ProviderError(
            f"provider {provider!r} is not available in this onnxruntime build (available: {', '.join(available)}); "
            "install onnxruntime-gpu with a matching CUDA, or use --provider cpu")
    if provider == "tensorrt":
        # Engines take tens of seconds to build; cache them so later starts are quick.
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "colorizer" / "tensorrt"
        cache.mkdir(parents=True, exist_ok=True)
        options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
        return [(wanted, options), "CUDAExecutionProvider", "CPUExecutionProvider"]
    return [wanted, "CPUExecutionProvider"]


def _preload_gpu_libraries(chain: list) -> None:
    """onnxruntime-gpu can load the CUDA/cuDNN libraries of the nvidia-* pip wheels (or torch's) itself."""
    names = [entry[0] if isinstance(entry, tuple) else entry for entry in chain]
    if "CUDAExecutionProvider" in names and hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as error:  # libraries found some other way (LD_LIBRARY_PATH) still work
            log.debug("onnxruntime.preload_dlls failed: %s", error)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class ColorizerModel:
    """An ONNX colorizer in an ONNX Runtime session, with the image-side steps around it."""

    def __init__(self, model: str | Path | None = None, provider: str = "auto", size: int | None = None,
                 threads: int | None = None):
        self.path = resolve_model(model)
        chain = _provider_chain(provider)
        _preload_gpu_libraries(chain)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if provider == "auto":
            options.log_severity_level = 3  # a missing CUDA library is not an error when CPU is acceptable
        try:
            self.session = self._session(options, chain, provider)
        except Exception as error:
            if provider != "auto" or len(chain) == 1:
                raise
            log.info("CUDA could not be used (%s); using the CPU", _first_line(error))
            self.session = self._session(options, ["CPUExecutionProvider"], "cpu")
        self.provider = self.session.get_providers()[0]
        if provider == "auto" and len(chain) > 1 and self.provider == "CPUExecutionProvider":
            log.info("CUDA is installed but could not be used; using the CPU")
        if provider in ("cuda", "tensorrt") and self.provider != _ORT_NAMES[provider]:
            raise ProviderError(
                f"provider {provider!r} could not be started (onnxruntime fell back to {self.provider}); "
                "check the CUDA/cuDNN libraries and the GPU driver, or use --provider cpu")
        self._check_contract()
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.size_multiple = self._metadata_int("size_multiple", default=1)
        self.input_size = int(size) if size is not None else self._metadata_int("input_size")
        if self.input_size < 1:
            raise ModelError(f"model size must be positive, got {self.input_size}")
        self.input_size = max(self.size_multiple, self.input_size)
        log.info("model %s on %s (size %d, multiple %d)", self.path, self.provider, self.input_size,
                 self.size_multiple)

    def _session(self, options, chain: list, provider: str) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(str(self.path), options, providers=chain)
        except Exception as error:
            message = _first_line(error)
            if provider in ("cuda", "tensorrt", "auto") and "provider" in message.lower():
                raise ProviderError(f"cannot start {provider}: {message}") from None
            raise ModelError(f"cannot load {self.path}: {message}") from None

    def _check_contract(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != ["L"] or "ab" not in [o.name for o in outputs]:
            raise ModelError(
                f"{self.path} does not follow the colorizer contract (expected input 'L' and output 'ab'; "
                f"found inputs {[i.name for i in inputs]}, outputs {[o.name for o in outputs]})")
        if inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 4:
            raise ModelError(f"{self.path}: input 'L' must be float32 [N,1,H,W], found {inputs[0].type} "
                             f"{inputs[0].shape}")

    def _metadata_int(self, key: str, default: int | None = None) -> int:
        value = self.metadata.get(key)
        if value is None:
            if default is None:
                raise ModelError(f"{self.path} has no {key!r} metadata (pass a size explicitly)")
            return default
        try:
            number = int(value)
        except ValueError:
            raise ModelError(f"{self.path}: metadata {key!r} is not an integer: {value!r}") from None
        if number < 1:
            raise ModelError(f"{self.path}: metadata {key!r} must be positive, got {number}")
        return number

    def model_size(self, height: int, width: int) -> tuple[int, int]:
        return color.model_size(height, width, self.input_size, self.size_multiple)

    def small_lightness(self, image: np.ndarray) -> np.ndarray:
        """Gray or BGR image of any size -> L* [1,1,h,w] float32 at the model's size. The pixels are resized first
        (as training resized its RGB images), so a huge image never gets a full-size float copy."""
        h, w = self.model_size(*image.shape[:2])
        return np.ascontiguousarray(color.lightness(color.resize_area(image, h, w))[None, None])

    def prepare(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """BGR (or gray) frame -> (full-res L* HxW float32, L* [1,1,h,w] float32 at the model's size)."""
        return color.lightness(bgr), self.small_lightness(bgr)

    def predict_ab(self, lightness: np.ndarray) -> np.ndarray:
        """L* [N,1,h,w] -> a*, b* [N,2,h,w] float32."""
        (ab,) = self.session.run(["ab"], {"L": np.ascontiguousarray(lightness, dtype=np.float32)})
        return ab.astype(np.float32, copy=False)

    def merge(self, L_full: np.ndarray, ab_small: np.ndarray) -> np.ndarray:
        """Full-res L* HxW and ab [2,h,w] -> uint8 BGR HxWx3: ab resized up, L kept at full resolution."""
        return color.merge_lab(L_full, ab_small, source_is_lightness=True)

    def colorize_bgr(self, bgr: np.ndarray) -> np.ndarray:
        full, small = self.prepare(bgr)
        return self.merge(full, self.predict_ab(small)[0])
