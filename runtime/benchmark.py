"""Speed and memory of the ONNX colorizers on this machine: its CPU and instruction sets, model-only latency and
throughput, the image path alone and end to end, the webcam end to end from a generated clip, session start.

    python -m runtime.benchmark                       # shipped colorizer (fp32) and colorizer-int8 (+ fp16 on CUDA)
    python -m runtime.benchmark --model my.onnx --provider cpu --json

The image path and end-to-end figures use the default model (auto: int8 on the CPU), or --model; the webcam figure
drives runtime.webcam's own loop (LiveColorizer, --no-display) over a generated clip of --webcam-frames frames.

Every figure is the median of repeated runs after one warm-up run; a measurement stops early once it has taken
--budget seconds and has at least 3 runs, which keeps the default run to about two minutes on two cores.
Only one ONNX Runtime session is alive at a time (created, timed, released in turn): on two cores the thread pool
of a second live session would take CPU from the one being timed. ONNX only: PyTorch eager is compared by
`python -m export.benchmark_torch`, which reuses the timing helpers here (the runtime never imports torch).
"""

import argparse
import contextlib
import gc
import io
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from runtime import colorize, contract, webcam
from runtime.model import (PROVIDERS, ColorizerModel, ModelError, ProviderError, default_threads, resolve_model,
                           shipped_model_path)
from runtime.video import open_source

SIZES = (224, 256, 512)
BATCHES = (1, 8)
FRAMES = ((640, 480), (1280, 720))
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
# /proc/cpuinfo flags -> the instruction sets that decide ONNX Runtime's kernels (int8 above all)
INSTRUCTION_SETS = {"AVX2": ("avx2",), "AVX-512": ("avx512f",), "VNNI": ("avx512_vnni", "avx_vnni"),
                    "AMX": ("amx_tile",)}


def add_timing_arguments(parser, threads_help: str) -> None:
    """The options every benchmark command shares (check_timing_args checks them)."""
    parser.add_argument("--threads", type=int, default=None, help=threads_help)
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per figure (median reported)")
    parser.add_argument("--budget", type=float, default=2.0,
                        help="seconds after which a figure stops repeating (once it has 3 runs)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="square model input sizes")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="batch sizes")


def get_args_parser():
    parser = argparse.ArgumentParser(description="Benchmark the ONNX colorizers (latency, throughput, fps, memory).")
    parser.add_argument("--model", default=None, help="one model (shipped name or .onnx path) instead of the "
                                                      "shipped fp32 / int8 (/ fp16 on CUDA) set")
    parser.add_argument("--provider", default="auto", choices=PROVIDERS)
    add_timing_arguments(parser, "ONNX Runtime threads (default: all cores)")
    parser.add_argument("--webcam-frames", type=int, default=300,
                        help="frames of the generated clip for the webcam figure (0: skip it)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    return parser


def cpu_info() -> dict:
    """The CPU's name, its core count here and which of INSTRUCTION_SETS it has (Linux: /proc/cpuinfo)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.machine(), platform.processor()):
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    sets = [label for label, names in INSTRUCTION_SETS.items() if flags & set(names)]
    return {"name": name, "cores": default_threads(), "instruction_sets": sets if flags else ["unknown"]}


def timed_runs(run, count: int, budget: float) -> tuple[list[float], list[float]]:
    """(wall seconds, process CPU seconds) of up to `count` runs after one warm-up (first-run allocations, kernel
    selection), stopping once past `budget` seconds with at least 3 runs."""
    run()
    walls, cpus, start = [], [], time.perf_counter()
    while len(walls) < count:
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        if len(walls) >= 3 and time.perf_counter() - start > budget:
            break
    return walls, cpus


def median_ms(run, repeat: int, budget: float) -> tuple[float, int]:
    walls, _ = timed_runs(run, repeat, budget)
    return statistics.median(walls) * 1000.0, len(walls)


def image_path_ms(run, repeat: int, budget: float) -> tuple[float, float]:
    """(median wall ms, mean CPU ms of the whole process) of the image path: cheap, so 10x the runs of a model figure
    (short runs are noisy). CPU time counts every thread: the merge runs on color.merge_threads() of them."""
    walls, cpus = timed_runs(run, 10 * repeat, budget)
    return statistics.median(walls) * 1000.0, statistics.fmean(cpus) * 1000.0


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
    """Per frame size: the image path alone (contract.colorize around a model that returns a ready ab: L*, resize,
    checks, merge) and end to end (colorize_bgr, the model included), at the model's own size."""
    rows = []
    for width, height in FRAMES:
        frame = synthetic_frame(width, height)
        ready_ab = model.predict_ab(contract.model_input(frame, model.info))
        image_ms, image_cpu_ms = image_path_ms(
            lambda: contract.colorize(lambda lightness: ready_ab, frame, model.info), repeat, budget)
        ms, runs = median_ms(lambda: model.colorize_bgr(frame), repeat, budget)
        rows.append({"model": label, "frame": f"{width}x{height}",
                     "model_size": "x".join(map(str, model.model_size(height, width))),
                     "image_path_ms": image_ms, "image_path_cpu_ms": image_cpu_ms, "median_ms": ms,
                     "fps": 1000.0 / ms, "runs": runs})
    return rows


def write_clip(path: Path, width: int, height: int, frames: int) -> None:
    """A clip of a textured picture panning sideways (so the decoder and the smoothing do real work)."""
    picture = cv2.GaussianBlur(synthetic_frame(width + frames, height), (0, 0), 3)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (width, height))
    for step in range(frames):
        writer.write(np.ascontiguousarray(picture[:, step:step + width]))
    writer.release()


def video_file_fps(model: ColorizerModel, clip: Path, frames: int) -> float:
    """runtime.colorize on the clip, in process: decode (child process), L*, model, merge, encode, read back (which
    already checks that all `frames` were written)."""
    target = clip.with_name(clip.stem + "_color.mp4")
    start = time.perf_counter()
    colorize.colorize_video(model, clip, target, side_by_side=False)
    seconds = time.perf_counter() - start
    target.unlink()
    return frames / seconds


def webcam_rows(name, args) -> list[dict]:
    """runtime.webcam --source CLIP --no-display, in process: end-to-end fps (decode, L*, model, smoothing, merge)."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for width, height in FRAMES:
            clip = Path(folder) / f"clip-{width}x{height}.mp4"
            write_clip(clip, width, height, args.webcam_frames)
            options = webcam.get_args_parser().parse_args(
                ["--source", str(clip), "--no-display"] + (["--model", name] if name else []))
            model = ColorizerModel(name, provider=args.provider, threads=args.threads)
            live = webcam.LiveColorizer(options, model, open_source(None, str(clip)))
            with contextlib.redirect_stdout(io.StringIO()):  # its summary line; the figure is computed here
                live.run()
            seconds = live.finished_at - live.started
            rows.append({"model": model.path.stem, "frame": f"{width}x{height}", "frames": live.processed,
                         "fps": live.processed / seconds, "file_fps": video_file_fps(model, clip, args.webcam_frames)})
            del live, model
            gc.collect()
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
    default = Path(args.model).stem if args.model else resolve_model(None, args.provider).stem
    report = {"cpu": cpu_info(), "onnxruntime": ort.__version__, "threads": args.threads or default_threads(),
              "default_model": default, "models": [], "latency": [], "pipeline": [], "webcam": []}
    for name in names:  # the image path and end to end once, on the default model
        result = benchmark_one(name, args, sizes, batches, pipeline=Path(name).stem == default)
        report["provider"] = result["provider"]
        report["models"].append(result["model"])
        report["latency"] += result["latency"]
        report["pipeline"] += result["pipeline"]
    if args.webcam_frames > 0:
        report["webcam"] = webcam_rows(args.model, args)
    report["peak_rss_mb"] = peak_rss_mb()
    return report


def print_tables(report: dict) -> None:
    cpu = report["cpu"]
    print(f"{cpu['name']}, {cpu['cores']} cores here, {' '.join(cpu['instruction_sets']) or 'none of AVX2 / AVX-512'}")
    print(f"onnxruntime {report['onnxruntime']} on {report['provider']}, {report['threads']} threads; "
          f"default model here: {report['default_model']}")
    print(f"\n{'model':<24}{'precision':>10}{'input size':>12}{'session start ms':>18}")
    for m in report["models"]:
        print(f"{m['model']:<24}{m['precision']:>10}{m['input_size']:>12}{m['session_start_ms']:>18.1f}")
    print(f"\nmodel only (L -> ab), median of runs\n{'model':<24}{'size':>6}{'batch':>7}{'ms':>10}{'img/s':>10}"
          f"{'runs':>6}")
    for r in report["latency"]:
        print(f"{r['model']:<24}{r['size']:>6}{r['batch']:>7}{r['median_ms']:>10.2f}{r['img_per_s']:>10.1f}"
              f"{r['runs']:>6}")
    print(f"\nfull pipeline: image path alone (L*, resize, checks, merge; wall ms and CPU ms of all threads) and end"
          f" to end (colorize_bgr)\n"
          f"{'model':<24}{'frame':>10}{'model size':>12}{'image ms':>10}{'CPU ms':>8}{'total ms':>10}{'fps':>8}")
    for p in report["pipeline"]:
        print(f"{p['model']:<24}{p['frame']:>10}{p['model_size']:>12}{p['image_path_ms']:>10.2f}"
              f"{p['image_path_cpu_ms']:>8.2f}{p['median_ms']:>10.2f}{p['fps']:>8.1f}")
    if report["webcam"]:
        print(f"\nwebcam end to end (runtime.webcam --source CLIP --no-display: decode, L*, model, smoothing, merge)"
              f" and the same clip as a file (runtime.colorize: also encoding and read-back)"
              f"\n{'model':<24}{'frame':>10}{'frames':>8}{'fps':>8}{'file fps':>10}")
        for w in report["webcam"]:
            print(f"{w['model']:<24}{w['frame']:>10}{w['frames']:>8}{w['fps']:>8.1f}{w['file_fps']:>10.1f}")
    print(f"\npeak RSS: {report['peak_rss_mb']:.0f} MB")


def check_timing_args(parser, args) -> None:
    """The timing options every benchmark shares must be positive (argparse error, exit 2, otherwise)."""
    try:
        if args.repeat < 1 or args.budget <= 0 or (args.threads is not None and args.threads < 1) \
                or getattr(args, "webcam_frames", 0) < 0:
            raise ValueError
        if any(int(v) < 1 for v in args.sizes.split(",") + args.batches.split(",")):
            raise ValueError
    except ValueError:
        parser.error("--repeat, --budget, --threads, --sizes and --batches must be positive numbers")


def report_main(parser, argv, measure, print_report, errors: tuple) -> int:
    """What a benchmark command does (this one, export.benchmark_torch): parse and check the options, measure, print
    the report as tables or one JSON line; errors -> one `error:` line, exit 2."""
    args = parser.parse_args(argv)
    check_timing_args(parser, args)
    try:
        report = measure(args)
    except errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


def main(argv=None) -> int:
    return report_main(get_args_parser(), argv, run_benchmark, print_tables, (ModelError, ProviderError))


if __name__ == "__main__":
    sys.exit(main())
