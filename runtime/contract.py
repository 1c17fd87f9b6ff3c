"""The one contract between training and runtime: the ONNX colorizer's signature, its metadata and the image path.

Training, export and the runtime all go through this module (numpy + OpenCV only, so the torch-free runtime can
own it), so what export writes, what evaluation measures and what users run cannot drift apart:

* graph: input `L` float32 [N,1,H,W] = CIE L* in [0, 100] with dynamic H, W; output `ab` float32 [N,2,H,W] =
  CIE a*, b*; optionally an input `temperature` (float32 scalar [], an initializer holding a default the caller may
  override: the annealed-mean temperature, the vividness control); normalisation and decoding inside the graph.
* metadata_props (string key/values): ModelInfo below.
* image path: colorize() = image_ab() (model_input: pixels resized to model_size, then L*; any predict_ab
  callable: ONNX Runtime, OpenCV DNN, OpenVINO, PyTorch; check_ab; an optional ab filter) then color.merge_ab
  (ab resized up, merged with the image's own full-resolution L*).
"""

import json
from dataclasses import dataclass, field, fields, replace

import numpy as np

from runtime import color

INPUT = "L"
OUTPUT = "ab"
TEMPERATURE = "temperature"
# The annealed-mean temperature divides the logits: above MAX the mean is a different model, not a colour setting;
# below MIN the softmax is one-hot to within float32 (1e-45 overflows it to NaN: an all-white image), and 0.01
# already gives the most vivid colours any smaller value could.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 5.0
MAX_ASPECT = 8  # the model sees at most this many times input_size along the longer side (see model_size)
CONTRACT = (
    "input L float32 [N,1,H,W] = CIE L* in [0,100]; output ab float32 [N,2,H,W] = CIE a*, b*; optional input "
    "temperature float32 [] (annealed-mean temperature, default in the graph); normalisation and decoding inside "
    "the graph; H, W multiples of size_multiple"
)


class ContractError(Exception):
    """A model or its metadata breaks the contract; the message is one line meant for users."""


def check_temperature(value, where: str = "temperature") -> float:
    """-> value as a float, or ContractError unless MIN_TEMPERATURE <= value <= MAX_TEMPERATURE."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ContractError(f"{where} must be a number, got {value!r}") from None
    if not (MIN_TEMPERATURE <= number <= MAX_TEMPERATURE):  # also rejects nan
        raise ContractError(f"{where} must be in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}], got {value!r}")
    return number


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime needs to know about a model, stored as strings in the ONNX file's metadata_props.

    Export writes ModelInfo(...).to_metadata(); the runtime reads ModelInfo.from_metadata(...): one schema."""

    input_size: int  # shorter side of the model input, px
    size_multiple: int = 1  # both model-input sides are multiples of this (the encoder's stride)
    precision: str = "fp32"
    preset: str = ""
    domain: str = "flowers"  # older files have no domain key and were all flower models; new ones say "general"
    version: str = "0"
    training_data: str = ""
    temperature: float | None = None  # the default baked into the graph (informative; None: no temperature input)
    metrics: dict = field(default_factory=dict, hash=False, repr=False)
    source_sha256: str = ""
    graph_sha256: str = ""  # of the graph as exported (export.onnx.graph_sha256): verify tells a changed file by it
    contract: str = CONTRACT

    def __post_init__(self):
        for key in ("input_size", "size_multiple"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ContractError(f"metadata {key!r} must be a positive integer, got {value!r}")
        if self.temperature is not None:
            check_temperature(self.temperature, "metadata 'temperature'")
        if not isinstance(self.metrics, dict):
            raise ContractError(f"metadata 'metrics' must be a JSON object, got {self.metrics!r}")

    @classmethod
    def from_metadata(cls, metadata: dict, where: str) -> "ModelInfo":
        """ONNX metadata_props -> ModelInfo; ContractError naming the key and `where` (the file) when a value is
        missing or bad. Unknown keys are ignored, so newer files still load."""
        values = {}
        for spec in fields(cls):
            if spec.name not in metadata:
                continue
            text = metadata[spec.name]
            if spec.name in ("input_size", "size_multiple"):
                try:
                    values[spec.name] = int(text)
                except (TypeError, ValueError):
                    raise ContractError(f"{where}: metadata {spec.name!r} is not an integer: {text!r}") from None
            elif spec.name == "temperature":
                try:
                    values[spec.name] = float(text)
                except (TypeError, ValueError):
                    raise ContractError(f"{where}: metadata 'temperature' is not a number: {text!r}") from None
            elif spec.name == "metrics":
                try:
                    values[spec.name] = json.loads(text)
                except (TypeError, ValueError):
                    raise ContractError(f"{where}: metadata 'metrics' is not JSON: {str(text)[:60]!r}") from None
            else:
                values[spec.name] = str(text)
        if "input_size" not in values:
            raise ContractError(f"{where} has no 'input_size' metadata (pass a size explicitly)")
        try:
            return cls(**values)
        except ContractError as error:
            raise ContractError(f"{where}: {error}") from None

    def resolve(self, input_size: int | None = None, temperature: float | None = None) -> "ModelInfo":
        """The one way an override reaches a model (runtime, CLIs, evaluate/tune, export): this info with the
        given input size (never below one size multiple) and annealed-mean temperature (checked) applied; None
        keeps the file's own value."""
        changes = {}
        if input_size is not None:
            if isinstance(input_size, bool) or int(input_size) != input_size or input_size < 1:
                raise ContractError(f"input size must be a positive integer, got {input_size!r}")
            changes["input_size"] = max(self.size_multiple, int(input_size))
        if temperature is not None:
            changes["temperature"] = check_temperature(temperature)
        return replace(self, **changes) if changes else self

    def to_metadata(self) -> dict[str, str]:
        """-> metadata_props, the exact inverse of from_metadata (temperature and graph_sha256 only when set)."""
        metadata = {
            "contract": self.contract,
            "input_size": str(int(self.input_size)),
            "size_multiple": str(int(self.size_multiple)),
            "precision": self.precision,
            "version": self.version,
            "preset": self.preset,
            "domain": self.domain,
            "training_data": self.training_data,
            "metrics": json.dumps(self.metrics, sort_keys=True),
            "source_sha256": self.source_sha256,
        }
        if self.temperature is not None:
            metadata["temperature"] = repr(float(self.temperature))  # repr round-trips a float exactly
        if self.graph_sha256:
            metadata["graph_sha256"] = self.graph_sha256
        return metadata


def _fixed(dim) -> bool:
    """ONNX Runtime reports a fixed dimension as an int, a symbolic one as a str, an unknown one as None."""
    return isinstance(dim, (int, np.integer))


def check_signature(inputs, outputs, where: str) -> None:
    """Raise ContractError (one line) unless the graph's inputs/outputs follow the contract.

    inputs, outputs: onnxruntime NodeArg lists (.name, .type, .shape); pass session.get_inputs() plus
    session.get_overridable_initializers(), since ONNX Runtime lists an input with a default (temperature) there.
    Checked once at load, so an unusable model fails with one clear line rather than on every file."""
    by_name = {arg.name: arg for arg in inputs}
    names = [arg.name for arg in inputs]
    if INPUT not in by_name or len(by_name) != len(names) or set(names) - {INPUT, TEMPERATURE}:
        raise ContractError(f"{where} is not a colorizer: its inputs are {names}; the contract wants "
                            f"{INPUT!r} (and optionally {TEMPERATURE!r})")
    lightness = by_name[INPUT]
    shape = list(lightness.shape or [])
    if lightness.type != "tensor(float)" or len(shape) != 4:
        raise ContractError(f"{where}: input {INPUT!r} must be float32 [N,1,H,W], found {lightness.type} {shape}")
    if _fixed(shape[1]) and shape[1] != 1:
        raise ContractError(f"{where}: input {INPUT!r} has {shape[1]} channels {shape}; the contract wants 1 (L* only)")
    if _fixed(shape[2]) or _fixed(shape[3]):
        raise ContractError(f"{where}: input {INPUT!r} has a fixed size {shape}; the contract wants dynamic H and W "
                            "(export with dynamic axes)")
    if TEMPERATURE in by_name:
        temperature = by_name[TEMPERATURE]
        if temperature.type != "tensor(float)" or list(temperature.shape or []) != []:
            raise ContractError(f"{where}: input {TEMPERATURE!r} must be a float32 scalar [], found "
                                f"{temperature.type} {temperature.shape}")
    ab = {arg.name: arg for arg in outputs}.get(OUTPUT)
    if ab is None:
        raise ContractError(f"{where} has no output {OUTPUT!r} (outputs: {[arg.name for arg in outputs]})")
    if ab.shape is not None and (len(ab.shape) != 4 or (_fixed(ab.shape[1]) and ab.shape[1] != 2)):
        raise ContractError(f"{where}: output {OUTPUT!r} must be [N,2,H,W], found {list(ab.shape)}")


def model_size(height: int, width: int, input_size: int, size_multiple: int = 1) -> tuple[int, int]:
    """(h, w) for the model: shorter side input_size, longer side keeping aspect, both multiples of size_multiple
    (never below one multiple). The longer side is capped at MAX_ASPECT x input_size, so a 1 x 20000 strip reaches
    the model as about 160 x 1280 rather than 160 x 3.2 million (the ab is resized back to the full image anyway)."""
    scale = input_size / min(height, width)
    long_cap = MAX_ASPECT * input_size

    def snap(side: float) -> int:
        return max(size_multiple, int(round(min(side, long_cap) / size_multiple)) * size_multiple)

    return snap(height * scale), snap(width * scale)


def model_input(image: np.ndarray, info: ModelInfo) -> np.ndarray:
    """Gray or BGR image (uint8, uint16 or float in [0, 1]) of any size -> L* [1,1,h,w] float32 at the model's size.

    The pixels are resized first (INTER_AREA when shrinking, bilinear when enlarging; as training resized its RGB
    images), then converted, so a huge image never gets a full-size float copy."""
    h, w = model_size(image.shape[0], image.shape[1], info.input_size, info.size_multiple)
    return np.ascontiguousarray(color.lightness(color.resize_area(image, h, w))[None, None])


def check_ab(ab: np.ndarray, lightness: np.ndarray, where: str = "the model") -> np.ndarray:
    """-> ab as float32, or ContractError unless it is [N,2,h,w] for L [N,1,h,w] and finite everywhere (a NaN or an
    infinity would otherwise come out as a white or black image that looks like a result)."""
    ab = np.asarray(ab)
    n, _, h, w = lightness.shape
    if ab.shape != (n, 2, h, w):
        raise ContractError(f"{where} returned ab {list(ab.shape)} for L {list(lightness.shape)}; the contract wants "
                            f"[{n},2,{h},{w}]")
    if not np.isfinite(ab).all():
        raise ContractError(f"{where} returned NaN or infinite ab values")
    return ab.astype(np.float32, copy=False)


def image_ab(predict_ab, image: np.ndarray, info: ModelInfo, ab_filter=None) -> np.ndarray:
    """The model's half of the image path: image -> a*, b* [2,h,w] float32 at the model's size, through predict_ab
    (any callable L [1,1,h,w] float32 -> ab [1,2,h,w]: an ONNX Runtime session, OpenCV DNN, OpenVINO, PyTorch).

    The pixels are resized to the model's size and converted to L* there (model_input); the model's ab is checked
    (check_ab) and optionally passed through ab_filter(L* [h,w], ab [2,h,w]) -> ab [2,h,w] (the webcam's temporal
    smoothing)."""
    small = model_input(image, info)
    ab = check_ab(predict_ab(small), small)[0]
    return ab if ab_filter is None else ab_filter(small[0, 0], ab)


def colorize(predict_ab, image: np.ndarray, info: ModelInfo, out: np.ndarray | None = None,
             ab_filter=None) -> np.ndarray:
    """The image path: gray or BGR image -> BGR at the same size (uint8, or out's dtype): image_ab, then the ab
    resized up and merged with the image's own full-resolution L* (color.merge_ab), written into `out` when given
    (HxWx3 uint8 or uint16; it may be `image` itself). Files, videos, the webcam (which runs the two halves on two
    threads), evaluation and export verification all come through here, so what is measured is what users get."""
    return color.merge_ab(image, image_ab(predict_ab, image, info, ab_filter), out=out)


def gray_baseline(image: np.ndarray) -> np.ndarray:
    """The image's own L* with a* = b* = 0, through the same merge: the score any colorizer must beat."""
    return color.merge_ab(image, np.zeros((2, 1, 1), np.float32))
