"""Speed and memory of the ONNX colorizers: model-only latency and throughput, full-pipeline fps, session start.

    python -m runtime.benchmark                       # shipped colorizer (fp32) and colorizer-int8 (+ fp16 on CUDA)
    python -m runtime.benchmark --model my.onnx --provider cpu --json

Every figure is the median of repeated runs after one warm-up run; a measurement stops early once it has taken
--budget seconds and has at least 3 runs, which keeps the default run to about two minutes on two cores.
Only one ONNX Runtime session is alive at a time (created, timed, released in turn): on two cores the thread pool
of a second live session would take CPU from the one being timed. ONNX only: PyTorch eager is compared by
`python -m export.benchmark_torch`, which reuses the timing helpers here (the runtime never imports torch).
"""

import argparse
import gc
import json
import resource
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

from runtime.model import PROVIDERS, ColorizerModel, ModelError, ProviderError, default_threads, shipped_model_path

SIZES = (224, 256, 512)
BATCHES = (1, 8)
FRAMES = ((640, 480), (1280, 720))
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def get_args_parser():
    parser = argparse.ArgumentParser(description="Benchmark the ONNX colorizers (latency, throughput, fps, memory).")
    parser.add_argument("--model", default=None, help="one model (shipped name or .onnx path) instead of the "
                                                      "shipped fp32 / int8 (/ fp16 on CUDA) set")
    parser.add_argument("--provider", default="auto", choices=PROVIDERS)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per figure (median reported)")
    parser.add_argument("--budget", type=float, default=2.0,
                        help="seconds after which a figure stops repeating (once it has 3 runs)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="square model input sizes")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="batch sizes")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    return parser


def median_ms(run, repeat: int, budget: float) -> tuple[float, int]:
    run()  # warm-up: first-run allocations, kernel selection
    times, start = [], time.perf_counter()
    while len(times) < repeat:
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
        if len(times) >= 3 and time.perf_counter() - start > budget:
            break
    return statistics.median(times) * 1000.0, len(times)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def lightness_batch(batch: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.0, 100.0, (batch, 1, size, size)).astype(np.float32)


def synthetic_frame(width: int, height: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)


def benchmark_models(args) -> list[str]:
    if args.model:
        return [args.model]
    names = ["colorizer", "colorizer-int8"]
    if args.provider in ("cuda", "tensorrt") or (args.provider == "auto" and
                                                 "CUDAExecutionProvider" in ort.get_available_providers()):
        names.append("colorizer-fp16")
    return [name for name in names if shipped_model_path(name) is not None]


def session_start_ms(name, args) -> float:
    """Median of 3 session starts; each session is released before the next one starts."""
    times = []
    for _ in range(3):
        began = time.perf_counter()
        model = ColorizerModel(name, provider=args.provider, threads=args.threads)
        times.append(time.perf_counter() - began)
        del model
        gc.collect()
    return statistics.median(times) * 1000.0


def latency_rows(predict_ab, label: str, precision: str, sizes, batches, repeat: int, budget: float) -> list[dict]:
    """Model-only (L -> ab) median latency and throughput of any predict_ab callable for each size and batch."""
    rows = []
    for size in sizes:
        for batch in batches:
            inputs = lightness_batch(batch, size)
            ms, runs = median_ms(lambda: predict_ab(inputs), repeat, budget)
            rows.append({"model": label, "precision": precision, "size": size, "batch": batch, "median_ms": ms,
                         "img_per_s": batch * 1000.0 / ms, "runs": runs})
    return rows


def pipeline_rows(model: ColorizerModel, label: str, repeat: int, budget: float) -> list[dict]:
    """Full pipeline (colorize_bgr: Lab, resize, model, merge) on synthetic frames, at the model's own size."""
    rows = []
    for width, height in FRAMES:
        frame = synthetic_frame(width, height)
        ms, runs = median_ms(lambda: model.colorize_bgr(frame), repeat, budget)
        rows.append({"model": label, "frame": f"{width}x{height}",
                     "model_size": "x".join(map(str, model.model_size(height, width))),
                     "median_ms": ms, "fps": 1000.0 / ms, "runs": runs})
    return rows


def benchmark_one(name, args, sizes, batches, pipeline: bool) -> dict:
    """All figures of one model; its session is the only one alive and is released when this returns."""
    start_ms = session_start_ms(name, args)
    model = ColorizerModel(name, provider=args.provider, threads=args.threads)
    label, precision = model.path.stem, model.info.precision
    result = {"provider": model.provider,
              "model": {"model": label, "path": str(model.path), "precision": precision,
                        "input_size": model.input_size, "session_start_ms": start_ms},
              "latency": latency_rows(model.predict_ab, label, precision, sizes, batches, args.repeat, args.budget),
              "pipeline": pipeline_rows(model, label, args.repeat, args.budget) if pipeline else []}
    del model
    gc.collect()
    return result


def run_benchmark(args) -> dict:
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    names = benchmark_models(args)
    if not names:
        raise ModelError("no shipped models found (colorizer.onnx, colorizer-int8.onnx); pass --model")
    report = {"onnxruntime": ort.__version__, "threads": args.threads or default_threads(), "models": [],
              "latency": [], "pipeline": []}
    for index, name in enumerate(names):  # the full pipeline once, on the first (fp32 default) model
        result = benchmark_one(name, args, sizes, batches, pipeline=index == 0)
        report["provider"] = result["provider"]
        report["models"].append(result["model"])
        report["latency"] += result["latency"]
        report["pipeline"] += result["pipeline"]
    report["peak_rss_mb"] = peak_rss_mb()
    return report


def print_tables(report: dict) -> None:
    print(f"onnxruntime {report['onnxruntime']} on {report['provider']}, {report['threads']} threads")
    print(f"\n{'model':<24}{'precision':>10}{'input size':>12}{'session start ms':>18}")
    for m in report["models"]:
        print(f"{m['model']:<24}{m['precision']:>10}{m['input_size']:>12}{m['session_start_ms']:>18.1f}")
    print(f"\nmodel only (L -> ab), median of runs\n{'model':<24}{'size':>6}{'batch':>7}{'ms':>10}{'img/s':>10}"
          f"{'runs':>6}")
    for r in report["latency"]:
        print(f"{r['model']:<24}{r['size']:>6}{r['batch']:>7}{r['median_ms']:>10.2f}{r['img_per_s']:>10.1f}"
              f"{r['runs']:>6}")
    print(f"\nfull pipeline (colorize_bgr: Lab, resize, model, merge)\n{'model':<24}{'frame':>10}{'model size':>12}"
          f"{'ms':>10}{'fps':>8}")
    for p in report["pipeline"]:
        print(f"{p['model']:<24}{p['frame']:>10}{p['model_size']:>12}{p['median_ms']:>10.2f}{p['fps']:>8.1f}")
    print(f"\npeak RSS: {report['peak_rss_mb']:.0f} MB")


def check_timing_args(parser, args) -> None:
    """The timing options every benchmark shares must be positive (argparse error, exit 2, otherwise)."""
    try:
        if args.repeat < 1 or args.budget <= 0 or (args.threads is not None and args.threads < 1):
            raise ValueError
        if any(int(v) < 1 for v in args.sizes.split(",") + args.batches.split(",")):
            raise ValueError
    except ValueError:
        parser.error("--repeat, --budget, --threads, --sizes and --batches must be positive numbers")


def main(argv=None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    check_timing_args(parser, args)
    try:
        report = run_benchmark(args)
    except (ModelError, ProviderError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        print_tables(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
