"""Check an exported ONNX colorizer against its PyTorch checkpoint; exit 1 when it is out of tolerance.

    python -m export.verify --checkpoint checkpoints/colorizer.pt --onnx checkpoints/colorizer.onnx
    python -m export.verify --checkpoint checkpoints/colorizer.pt --onnx checkpoints/colorizer-int8.onnx \
        --data ../shared/data --json

Both run on real images (the repo's examples/, or with --data the seed split's test subset of a
Flowers-102 root, or any folder of images) the way the runtime feeds them, and on random L at sizes that
include a batch of 2 and a size that is not a multiple of 32. Tolerances, by the ONNX file's precision:
fp32: max |delta ab| <= 0.05; fp16: RGB PSNR against PyTorch >= 40 dB; int8: colourfulness within 5 %
of PyTorch's and PSNR against the ground truth at most 0.5 dB below PyTorch's.
"""

import argparse
import json
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from export.onnx import file_sha256, load_colorizer_or_fail
from train import data as flowers
from train import evaluation, metrics
from train.engine import fail

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RANDOM_SHAPES = [(2, 1, 64, 96), (1, 1, 160, 224), (1, 1, 100, 150)]  # batch 2; 100x150 is not a multiple of 32
EVAL_SIZE = 256  # ground truth is compared at the evaluation protocol's size (train.evaluation)
FP32_MAX_AB = 0.05
FP16_MIN_PSNR = 40.0
INT8_MAX_PSNR_DROP = 0.5
INT8_MAX_COLOUR_CHANGE = 0.05


class ContractViolation(Exception):
    """The ONNX output does not have the contract's shape: as much a failure as a wrong number."""


def image_paths(data, count: int) -> list[Path]:
    if data is None:
        try:
            return flowers.find_images(EXAMPLES, limit=count)
        except flowers.DataError as exc:
            raise flowers.DataError(f"{exc}; pass --data (a Flowers-102 root or a folder of images)") from None
    try:
        flowers.flowers_dir(data)
    except flowers.DataError:
        return flowers.find_images(data, limit=count)
    return flowers.flowers_subset(data, "test", "seed", limit=count)[0]


def compare(torch_predict, onnx_predict, paths, input_size: int) -> dict:
    """|delta ab| over real images and random inputs; PSNR and colourfulness of both on the images."""
    deltas, rows = [], []
    for path in tqdm(paths, desc="verify", unit="img", leave=False):
        truth = cv2.resize(evaluation.load_rgb(path), (EVAL_SIZE, EVAL_SIZE), interpolation=cv2.INTER_AREA)
        rgb_torch, ab_torch = evaluation.colorize_rgb(torch_predict, truth, input_size)
        rgb_onnx, ab_onnx = evaluation.colorize_rgb(onnx_predict, truth, input_size)
        deltas.append(np.abs(ab_torch - ab_onnx).ravel())
        rows.append(
            (
                metrics.psnr(rgb_onnx, rgb_torch),
                metrics.psnr(rgb_torch, truth),
                metrics.psnr(rgb_onnx, truth),
                metrics.colorfulness(rgb_torch),
                metrics.colorfulness(rgb_onnx),
            )
        )
    image_delta = np.concatenate(deltas)
    rng = np.random.default_rng(0)
    random_deltas = []
    for shape in RANDOM_SHAPES:
        lightness = rng.uniform(0.0, 100.0, size=shape).astype(np.float32)
        ab_torch, ab_onnx = torch_predict(lightness), onnx_predict(lightness)
        expected = (shape[0], 2, shape[2], shape[3])
        if ab_torch.shape != expected or ab_onnx.shape != expected:
            raise ContractViolation(f"L {shape} gave ab {ab_onnx.shape} (PyTorch {ab_torch.shape}), not {expected}")
        random_deltas.append(np.abs(ab_torch - ab_onnx).ravel())
    random_delta = np.concatenate(random_deltas)
    psnr_vs_torch, psnr_torch, psnr_onnx, colour_torch, colour_onnx = np.mean(rows, axis=0)
    worst_psnr_vs_torch = min(row[0] for row in rows)
    return {
        "max_abs_ab": float(max(image_delta.max(), random_delta.max())),
        "mean_abs_ab": float(np.concatenate([image_delta, random_delta]).mean()),
        "images_max_abs_ab": float(image_delta.max()),
        "random_max_abs_ab": float(random_delta.max()),
        "rgb_psnr_vs_pytorch": float(psnr_vs_torch),  # mean over images, as the evaluation protocol averages
        "rgb_psnr_vs_pytorch_min": float(worst_psnr_vs_torch),
        "psnr_truth_pytorch": float(psnr_torch),
        "psnr_truth_onnx": float(psnr_onnx),
        "colorfulness_pytorch": float(colour_torch),
        "colorfulness_onnx": float(colour_onnx),
        "colorfulness_change": float(abs(colour_onnx / max(colour_torch, 1e-9) - 1.0)),
    }


def judge(report: dict) -> tuple[bool, str]:
    precision = report["precision"]
    if precision == "fp32":
        return report["max_abs_ab"] <= FP32_MAX_AB, f"max |delta ab| <= {FP32_MAX_AB}"
    if precision == "fp16":
        return report["rgb_psnr_vs_pytorch"] >= FP16_MIN_PSNR, f"RGB PSNR vs PyTorch >= {FP16_MIN_PSNR} dB"
    if precision == "int8":
        ok = (
            report["psnr_truth_pytorch"] - report["psnr_truth_onnx"] <= INT8_MAX_PSNR_DROP
            and report["colorfulness_change"] <= INT8_MAX_COLOUR_CHANGE
        )
        return ok, f"PSNR drop <= {INT8_MAX_PSNR_DROP} dB and colourfulness change <= {INT8_MAX_COLOUR_CHANGE:.0%}"
    raise ValueError(f"unknown precision {precision!r} in the ONNX file's metadata")


def verify(model, onnx_predict, metadata: dict, paths, input_size: int) -> dict:
    report = {"precision": metadata.get("precision", "fp32"), "input_size": input_size, "images": len(paths)}
    report.update(compare(evaluation.torch_predictor(model), onnx_predict, paths, input_size))
    report["ok"], report["tolerance"] = judge(report)
    return report


def first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def get_args_parser():
    parser = argparse.ArgumentParser(
        description="Verify an ONNX colorizer against PyTorch", prog="python -m export.verify"
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="the colorizer .pt it was exported from")
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--data", type=Path, help="a Flowers-102 root (seed test subset) or a folder of images; "
                        "default: the repo's examples/")
    parser.add_argument("--images", type=int, default=64, help="how many real images (evenly spaced)")
    parser.add_argument("--provider", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return parser


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    warnings.filterwarnings("ignore", message="Conversion from CIE-LAB")  # skimage clipping out-of-gamut Lab
    for path in (args.checkpoint, args.onnx):
        if not path.is_file():
            fail(f"file not found: {path}")
    if args.images < 1:
        fail("--images must be at least 1")
    if args.provider == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            fail("--provider cuda: this onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
    model, meta = load_colorizer_or_fail(args.checkpoint)
    try:
        onnx_predict, metadata = evaluation.onnx_predictor(args.onnx, args.provider)
    except Exception as exc:  # onnxruntime refusing the file
        fail(f"cannot load {args.onnx} with onnxruntime: {first_line(exc)}")
    try:
        paths = image_paths(args.data, args.images)
        report = {"checkpoint": str(args.checkpoint), "onnx": str(args.onnx), "provider": args.provider,
                  "source_matches": metadata.get("source_sha256") == file_sha256(args.checkpoint)}
        input_size = int(metadata.get("input_size", meta.get("input_size", 256)))
        report.update(verify(model, onnx_predict, metadata, paths, input_size))
    except flowers.DataError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(first_line(exc))
    except ContractViolation as exc:
        fail(f"{args.onnx} breaks the contract: {exc}", code=1)
    if not report["source_matches"]:
        print(f"warning: {args.onnx} was not exported from {args.checkpoint} (source_sha256 differs)", file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:22s} {value:.4f}" if isinstance(value, float) else f"{key:22s} {value}")
    if not report["ok"]:
        print(f"error: {args.onnx} is out of tolerance ({report['tolerance']})", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
