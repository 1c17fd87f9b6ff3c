"""PyTorch eager against ONNX Runtime on the same inputs: the comparison column of the README's benchmark.

    python -m export.benchmark_torch --checkpoint checkpoints/colorizer.pt --onnx colorizer [--json]

It lives here, beside export, because it needs torch and train/; runtime.benchmark (ONNX only, torch-free) lends its
timing helpers (median_ms, latency_rows, ...), so both columns are measured the same way. The two engines are timed
in turn, never side by side: the ONNX session is released before PyTorch starts, so neither thread pool takes CPU
from the other.
"""

import argparse
import gc
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from runtime.benchmark import add_timing_arguments, latency_rows, peak_rss_mb, report_main
from runtime.model import PROVIDERS, ColorizerModel, ModelError, ProviderError, default_threads
from train.engine import file_sha256
from train.models import load_colorizer


def get_args_parser():
    parser = argparse.ArgumentParser(prog="python -m export.benchmark_torch",
                                     description="Time PyTorch eager against ONNX Runtime on the same inputs.")
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/colorizer.pt"))
    parser.add_argument("--onnx", default="colorizer", help="shipped model name or .onnx path (default: colorizer)")
    parser.add_argument("--provider", default="cpu", choices=PROVIDERS, help="ONNX Runtime provider (default: cpu)")
    add_timing_arguments(parser, "threads for both engines (default: all cores)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def torch_predict_ab(model):
    """A colorizer with forward_ab -> predict_ab(L [N,1,h,w] float32 numpy) -> ab numpy, as ONNX Runtime returns."""
    def predict_ab(lightness: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model.forward_ab(torch.from_numpy(lightness)).numpy()

    return predict_ab


def onnx_rows(args, sizes, batches) -> tuple[list[dict], dict]:
    """ONNX latency rows and the model's facts; the session is released on return."""
    model = ColorizerModel(args.onnx, provider=args.provider, threads=args.threads)
    facts = {"onnx": str(model.path), "provider": model.provider, "source_sha256": model.info.source_sha256}
    rows = latency_rows(model.predict_ab, model.path.stem, model.info.precision, sizes, batches, args.repeat,
                        args.budget)
    del model
    gc.collect()
    return rows, facts


def run(args) -> dict:
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    threads = args.threads or default_threads()
    if not args.checkpoint.is_file():
        raise ModelError(f"checkpoint not found: {args.checkpoint}")
    onnx_latency, facts = onnx_rows(args, sizes, batches)
    torch.set_num_threads(threads)
    model, _ = load_colorizer(args.checkpoint)
    torch_latency = latency_rows(torch_predict_ab(model), "pytorch-eager", "fp32", sizes, batches, args.repeat,
                                 args.budget)
    return {"torch": torch.__version__, "onnxruntime": ort.__version__, "threads": threads,
            "checkpoint": str(args.checkpoint), "onnx": facts["onnx"], "provider": facts["provider"],
            "same_model_as_onnx": facts["source_sha256"] == file_sha256(args.checkpoint),
            "onnx_latency": onnx_latency, "torch_latency": torch_latency, "peak_rss_mb": peak_rss_mb()}


def print_table(report: dict) -> None:
    print(f"torch {report['torch']} eager vs onnxruntime {report['onnxruntime']} ({report['provider']}), "
          f"{report['threads']} threads; {report['checkpoint']} vs {report['onnx']} "
          f"(same model: {report['same_model_as_onnx']})")
    print(f"\n{'engine':<24}{'size':>6}{'batch':>7}{'ms':>10}{'img/s':>10}{'runs':>6}")
    for r in report["onnx_latency"] + report["torch_latency"]:
        print(f"{r['model']:<24}{r['size']:>6}{r['batch']:>7}{r['median_ms']:>10.2f}{r['img_per_s']:>10.1f}"
              f"{r['runs']:>6}")


def main(argv=None) -> int:
    return report_main(get_args_parser(), argv, run, print_table, (ModelError, ProviderError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
