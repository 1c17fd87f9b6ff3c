"""Load a contract-following ONNX colorizer into ONNX Runtime and run it on images.

The contract (signature, metadata, image path) lives in runtime.contract: input `L` float32 [N,1,H,W] (CIE L* in
[0, 100]) -> output `ab` float32 [N,2,H,W] (CIE a*, b*), optionally a `temperature` input, the preferred model size
in the file's metadata (`input_size`, `size_multiple`). This module adds files, providers, the session, the default model per device (DEFAULT_MODEL) and the guards
around a run (a probe at load, a timeout, termination on signals).
"""

import importlib.resources
import logging
import os
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime import contract
from runtime.contract import INPUT, OUTPUT, TEMPERATURE, ContractError, ModelInfo
from runtime.fileio import first_line

log = logging.getLogger(__name__)

# "auto": colorizer-int8 on the CPU, colorizer (fp32) on CUDA / TensorRT. int8 equals fp32 within 0.02 dB on every
# test set (README) and is 1.5x or more faster on every CPU measured (AVX2 Zen 3: 13 against 25 ms at 160x224;
# Sapphire Rapids AVX-512 VNNI: 104 against 42 fps at 256x256; AMD EPYC AVX-512 VNNI: 8.9 against 39 ms at
# 160x224); GPUs run the QDQ int8 graph no faster than fp32. AUTO_HELP is the --help text for it.
DEFAULT_MODEL = "auto"
AUTO_MODELS = {"cpu": "colorizer-int8", "gpu": "colorizer"}
AUTO_HELP = "auto = colorizer-int8 on the CPU (as good as fp32, faster), colorizer (fp32) on CUDA"
PROVIDERS = ("auto", "cuda", "tensorrt", "cpu")
_ORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
REPO_CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
# ONNX Runtime's worker threads spin for at most this long between operators of one run, and stop at its end;
# see ColorizerModel.__init__
SPIN_DURATION_US = 100
MAX_THREADS_PER_CORE = 4  # more ONNX Runtime threads than this only cost memory (each has its own arena and stack)
RUN_TIMEOUT_S = 120.0  # one model run: the largest allowed input (2048 px, aspect 8) takes well under this on 2 cores
STOP_WAIT_S = 0.5  # how long a stopped run may take to notice RunOptions.terminate
PROBE_TIMEOUT_S = 10.0  # the probe at load is 2 x 2 size multiples: milliseconds for any real colorizer


class ModelError(Exception):
    """The model file is missing, unreadable or does not follow the contract."""


class ModelContractError(ModelError, ContractError):
    """The file loads but breaks the contract: a ModelError for the CLIs, a ContractError for everyone else."""


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


def shipped_model_names() -> list[str]:
    """The shipped models actually installed (*.onnx in shipped_model_dirs()), sorted, for --help and errors."""
    names = set()
    for folder in shipped_model_dirs():
        if folder.is_dir():
            names.update(path.stem for path in folder.glob("*.onnx") if path.is_file())
    return sorted(names)


def shipped_model_path(name: str) -> Path | None:
    for folder in shipped_model_dirs():
        candidate = folder / f"{name}.onnx"
        if candidate.is_file():
            return candidate
    return None


def resolve_model(model: str | Path | None, provider: str = "auto") -> Path:
    """None or "auto" -> the shipped default for the provider (AUTO_MODELS: fp32 where CUDA or TensorRT will run
    it, int8 on the CPU); a bare shipped name ("colorizer-int8", "colorizer-int8.onnx") -> that shipped file;
    anything else is a path. Raises ModelError when the file does not exist (ProviderError for a bad provider)."""
    if model is None or model == "auto":
        model = AUTO_MODELS["cpu" if _provider_chain(provider)[0] == "CPUExecutionProvider" else "gpu"]
    text = str(model)
    name = text[:-5] if text.endswith(".onnx") else text
    bare = os.sep not in text and "/" not in text
    if bare:
        path = shipped_model_path(name)
        if path is not None:
            return path
    path = Path(text).expanduser()
    if not path.is_file():
        names = ", ".join(shipped_model_names()) or "none"
        raise ModelError(f"model file not found: {path} (shipped models installed here: {names})")
    return path


def available_providers() -> list[str]:
    return ort.get_available_providers()


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_threads(threads: int | None) -> int:
    """-> the ONNX Runtime thread count (None: all cores); ModelError outside 1 .. MAX_THREADS_PER_CORE x cores."""
    if threads is None:
        return default_threads()
    limit = MAX_THREADS_PER_CORE * default_threads()
    if isinstance(threads, bool) or int(threads) != threads or not 1 <= threads <= limit:
        raise ModelError(f"threads must be 1 to {limit} ({MAX_THREADS_PER_CORE} x {default_threads()} cores), "
                         f"got {threads!r}")
    return int(threads)


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Errors only: a missing CUDA library is no error when the CPU is acceptable (auto), and a temperature
    # input (an initializer that is also a graph input, by design) is no reason to warn users.
    options.log_severity_level = 3
    # Worker threads spin briefly between the operators of one run (waking a sleeping thread for each of the
    # ~100 operators costs a tenth of an int8 run) and stop spinning when the run ends, so between runs they
    # leave the CPU to the Lab conversion, the merge, video decoding and other processes. Measured on 2 cores
    # (AVX-512 VNNI), int8 at 256x256: idle 9.2 ms against 10.5 ms with no spinning; beside a 2-thread training
    # job 14.0 ms against 13.0 ms (and 15.5 ms with ONNX Runtime's default of spinning on between runs).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.intra_op.spin_duration_us", str(SPIN_DURATION_US))
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


def run_bounded(session: ort.InferenceSession, feeds: dict, timeout: float, where: str,
                in_flight: set | None = None) -> np.ndarray:
    """session.run for OUTPUT on a daemon thread while this thread waits, so that a timeout, or a signal handler
    raising in the main thread (SIGINT / SIGTERM), stops the run through RunOptions.terminate: ONNX Runtime checks
    it between operators and inside Loop bodies, so even a graph that never ends stops within milliseconds.
    in_flight: a set that holds the run's RunOptions while it runs (ColorizerModel.stop_runs stops them from another
    thread). ModelError when the run takes longer than `timeout` seconds, fails or is stopped."""
    options = ort.RunOptions()
    options.log_severity_level = 4  # the terminated run's own error log would repeat what we raise
    result, done = {}, threading.Event()
    in_flight = set() if in_flight is None else in_flight

    def run():
        try:
            result["ab"] = session.run([OUTPUT], feeds, options)[0]
        except Exception as error:  # reported by the waiting thread
            result["error"] = error
        finally:
            done.set()

    in_flight.add(options)
    threading.Thread(target=run, name="onnxruntime-run", daemon=True).start()
    # an Event, not Thread.join: a join that a signal interrupts can leave the thread marked alive for good
    stopped = True
    try:
        stopped = not done.wait(timeout)
    finally:  # also on KeyboardInterrupt from a signal handler
        in_flight.discard(options)
        if stopped:
            options.terminate = True
            # the run ends at its next operator; wait for it, as a process that exits while ONNX Runtime is still
            # inside a run aborts (SIGABRT) instead of exiting with its own status
            done.wait(STOP_WAIT_S)
    if stopped:
        raise ModelError(f"{where}: a model run took longer than {timeout:g} s and was stopped")
    if "error" in result:
        raise ModelError(f"{where}: the model failed: {first_line(result['error'])}")
    return result["ab"]


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


class ColorizerModel:
    """An ONNX colorizer in an ONNX Runtime session; colorize_bgr runs runtime.contract's image path through it.

    model: a shipped name, an .onnx path, or None / "auto" (DEFAULT_MODEL: int8 on the CPU, fp32 on CUDA).
    temperature: for models with a `temperature` input, the annealed-mean temperature fed on every run instead of
    the file's default (default_temperature); what it does to colour depends on the model and the photo (see the
    model card). An error for older models without one.
    threads: ONNX Runtime's intra-op threads (default: all cores; at most MAX_THREADS_PER_CORE per core).
    run_timeout: seconds one model run may take before it is stopped (ModelError).
    The file is refused once, at load (ModelContractError), when its signature or metadata break the contract or a
    probe run on a small L* gives ab of the wrong shape or with NaN / infinity."""

    def __init__(self, model: str | Path | None = None, provider: str = "auto", size: int | None = None,
                 threads: int | None = None, *, temperature: float | None = None,
                 run_timeout: float = RUN_TIMEOUT_S):
        chain = _provider_chain(provider)
        self.path = resolve_model(model, provider)
        if size is not None and int(size) < 1:
            raise ModelError(f"model size must be positive, got {size}")
        if temperature is not None:
            try:
                temperature = contract.check_temperature(temperature)
            except ContractError as error:
                raise ModelError(str(error)) from None
        self.run_timeout = float(run_timeout)
        self._in_flight = set()  # RunOptions of the runs in progress (stop_runs)
        _preload_gpu_libraries(chain)
        options = session_options(check_threads(threads))
        try:
            self.session = self._session(options, chain, provider)
        except Exception as error:
            if provider != "auto" or len(chain) == 1:
                raise
            log.info("CUDA could not be used (%s); using the CPU", first_line(error))
            self.session = self._session(options, ["CPUExecutionProvider"], "cpu")
        self.provider = self.session.get_providers()[0]
        if provider == "auto" and len(chain) > 1 and self.provider == "CPUExecutionProvider":
            log.info("CUDA is installed but could not be used; using the CPU")
        if provider in ("cuda", "tensorrt") and self.provider != _ORT_NAMES[provider]:
            raise ProviderError(
                f"provider {provider!r} could not be started (onnxruntime fell back to {self.provider}); "
                "check the CUDA/cuDNN libraries and the GPU driver, or use --provider cpu")
        self._check_contract(size, temperature)
        log.info("model %s on %s (size %d, multiple %d%s)", self.path, self.provider, self.input_size,
                 self.size_multiple, f", temperature {temperature:g}" if temperature is not None else "")

    def _session(self, options, chain: list, provider: str) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(str(self.path), options, providers=chain)
        except Exception as error:
            message = first_line(error)
            if provider in ("cuda", "tensorrt", "auto") and "provider" in message.lower():
                raise ProviderError(f"cannot start {provider}: {message}") from None
            raise ModelError(f"cannot load {self.path}: {message}") from None

    def _check_contract(self, size: int | None, temperature: float | None) -> None:
        """Signature, metadata (self.info, with an explicit size applied), the temperature feed, then the probe."""
        inputs = self.session.get_inputs() + self.session.get_overridable_initializers()
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        try:
            contract.check_signature(inputs, self.session.get_outputs(), str(self.path))
            metadata = self.metadata if size is None else {"input_size": str(int(size)), **self.metadata}
            self.info = ModelInfo.from_metadata(metadata, str(self.path)).resolve(input_size=size)
        except ContractError as error:
            raise ModelContractError(str(error)) from None
        self.has_temperature = TEMPERATURE in [i.name for i in inputs]
        self.temperature = temperature
        self._extra_feeds = {}
        if temperature is not None:
            if not self.has_temperature:
                raise ModelError(f"{self.path} has no temperature input (an older model); "
                                 "leave the temperature unset for it")
            self._extra_feeds[TEMPERATURE] = np.array(temperature, np.float32)
        elif TEMPERATURE in [i.name for i in self.session.get_inputs()]:  # required, no default in the graph
            if self.info.temperature is None:
                raise ModelContractError(f"{self.path}: its temperature input has no default in the graph or the "
                                         "metadata; pass a temperature")
            self._extra_feeds[TEMPERATURE] = np.array(self.info.temperature, np.float32)
        self._probe()

    def _probe(self) -> None:
        """One run on a small L* ramp (2 x 3 size multiples, so a model that swaps or halves H and W shows it): the
        ab must be [1,2,h,w] and finite, or the file is refused here rather than on every image and frame."""
        side = self.size_multiple
        ramp = np.linspace(0.0, 100.0, 6 * side * side, dtype=np.float32).reshape(1, 1, 2 * side, 3 * side)
        try:
            contract.check_ab(self._run(ramp, PROBE_TIMEOUT_S), ramp, f"{self.path} (probe run at load)")
        except ContractError as error:
            raise ModelContractError(str(error)) from None
        except ModelError as error:
            raise ModelContractError(f"{error} (probe run at load)") from None

    @property
    def input_size(self) -> int:
        return self.info.input_size

    @property
    def size_multiple(self) -> int:
        return self.info.size_multiple

    @property
    def default_temperature(self) -> float | None:
        """The temperature baked into the file (metadata), None for older models."""
        return self.info.temperature

    def model_size(self, height: int, width: int) -> tuple[int, int]:
        return contract.model_size(height, width, self.input_size, self.size_multiple)

    def _run(self, lightness: np.ndarray, timeout: float) -> np.ndarray:
        feeds = {INPUT: np.ascontiguousarray(lightness, dtype=np.float32), **self._extra_feeds}
        return run_bounded(self.session, feeds, timeout, str(self.path), self._in_flight)

    def stop_runs(self) -> None:
        """Stop the runs in progress on other threads at their next operator (each raises ModelError there): how a
        pipeline whose model thread waits on a run shuts down at once (the webcam's ModelStage on SIGTERM)."""
        for options in list(self._in_flight):
            options.terminate = True

    def predict_ab(self, lightness: np.ndarray) -> np.ndarray:
        """L* [N,1,h,w] -> a*, b* [N,2,h,w] float32 (with the chosen temperature, if any); ModelError when the run
        fails or takes longer than run_timeout. contract.colorize checks the shape and that every value is finite."""
        return self._run(lightness, self.run_timeout).astype(np.float32, copy=False)

    def colorize_bgr(self, bgr: np.ndarray, out: np.ndarray | None = None, ab_filter=None) -> np.ndarray:
        """Gray or BGR image (uint8, uint16, float) -> BGR at the same size (uint8, or out's dtype): the image path
        of runtime.contract.colorize (see there for out and ab_filter) with this model."""
        return contract.colorize(self.predict_ab, bgr, self.info, out=out, ab_filter=ab_filter)
