"""Export a colorizer checkpoint to ONNX: fp32, fp16 (for the CUDA provider) or int8 (static QDQ, for CPUs
and edge boards).

    python -m export.onnx --checkpoint checkpoints/colorizer.pt --out checkpoints/colorizer.onnx
    python -m export.onnx --checkpoint checkpoints/colorizer.pt --out checkpoints/colorizer-fp16.onnx --precision fp16
    python -m export.onnx --checkpoint checkpoints/colorizer.pt --out checkpoints/colorizer-int8.onnx \
        --precision int8 --calibration ../shared/data

The graph follows the contract: input `L` float32 [N,1,H,W] (L* in [0, 100]) -> output `ab` float32
[N,2,H,W]; normalisation and the annealed-mean decoding are inside it; N, H and W are dynamic (H, W >= 32,
which the runtime guarantees through size_multiple). What the runtime needs to know is in metadata_props.
The same checkpoint, options and library versions give a byte-identical file.

Exporter: torch.export-based (dynamo=True). It exports the size-of-another-tensor interpolations with
symbolic H, W as correctly as the TorchScript exporter does, but that one is deprecated in this torch, and
the symbolic output shapes it writes make a traced-in size show up (which is how the seed model's
`if out.shape != ...` branch was caught, see ContractOutput). Its stack-trace metadata is stripped so the
bytes do not depend on where the source lives.
"""

import argparse
import contextlib
import io
import json
import os
import pickle
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from train import data as flowers
from train.engine import fail, file_sha256
from train.evaluation import model_input_shape
from train.models import load_colorizer

CONTRACT = (
    "input L float32 [N,1,H,W] = CIE L* in [0,100]; output ab float32 [N,2,H,W] = CIE a*, b*; "
    "normalisation and decoding inside the graph; H, W multiples of size_multiple"
)
DEFAULT_OPSET = 18  # the lowest opset the torch.export-based exporter writes natively; ORT >= 1.14 runs it
MIN_SIDE = 32  # the encoder downsamples 32x
EXAMPLE_SHAPE = (2, 1, 96, 128)  # N > 1 and H != W, so no dynamic dimension is specialised to the example


class ContractOutput(torch.nn.Module):
    """L -> ab at L's own size. Tracing records one side of a Python `if` on tensor sizes (the seed
    model resizes its 32x-upsampled output only when the sizes differ), so the graph always ends with a
    resize to the input's size; where the sizes already match it is an exact identity."""

    def __init__(self, colorizer):
        super().__init__()
        self.colorizer = colorizer

    def forward(self, lightness):
        ab = self.colorizer.forward_ab(lightness)
        return F.interpolate(ab, size=lightness.shape[-2:], mode="bilinear", align_corners=False)


def export_fp32(model, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    batch = torch.export.Dim("N")
    height, width = torch.export.Dim("H", min=MIN_SIDE), torch.export.Dim("W", min=MIN_SIDE)
    example = torch.rand(EXAMPLE_SHAPE, generator=torch.Generator().manual_seed(0)) * 100.0
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates its steps on stdout
        program = torch.onnx.export(
            ContractOutput(model).eval(),
            (example,),
            input_names=["L"],
            output_names=["ab"],
            dynamic_shapes={"lightness": {0: batch, 2: height, 3: width}},
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    model_proto = program.model_proto
    strip_trace_metadata(model_proto)
    return model_proto


def strip_trace_metadata(model_proto: onnx.ModelProto) -> None:
    """The exporter annotates nodes with stack traces (absolute source paths) and FX details: useful for
    debugging, but they tie the file's bytes to the machine it was made on."""
    graph = model_proto.graph
    for item in [*graph.node, *graph.value_info, *graph.input, *graph.output, *graph.initializer]:
        del item.metadata_props[:]
        item.doc_string = ""
    del model_proto.metadata_props[:]
    model_proto.doc_string = graph.doc_string = ""


def decode_nodes(model_proto: onnx.ModelProto) -> list[str]:
    """Names of the head (the first convolution after the decoder's last ReLU) and every node after it:
    the annealed mean (exp and its 1x1 projection) or tanh, and the resizes. Low precision there moves every
    output colour, so they stay fp32."""
    nodes = list(model_proto.graph.node)
    last_relu = max(i for i, node in enumerate(nodes) if node.op_type == "Relu")
    head = next(i for i, node in enumerate(nodes) if i > last_relu and node.op_type == "Conv")
    downstream, tensors = [nodes[head].name], set(nodes[head].output)
    for node in nodes[head + 1 :]:
        if tensors.intersection(node.input):
            downstream.append(node.name)
            tensors.update(node.output)
    return downstream


def to_fp16(model_proto: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and arithmetic for the CUDA provider, fp32 input and output (keep_io_types); the head,
    softmax and annealed mean (or tanh) stay fp32. onnxconverter-common 1.16 needs steering: its default
    op block list holds every Resize; a blocked node that writes a graph output turns that output fp16
    despite keep_io_types; it converts Resize's `scales` (which must stay float32) with the weights;
    and blocking Cast by op type sends it into an endless loop. So the block list is ours alone."""
    import warnings

    from onnxconverter_common import float16

    graph_outputs = {value.name for value in model_proto.graph.output}
    decode = set(decode_nodes(model_proto))

    def keep_fp32(node):
        resize_by_scales = node.op_type == "Resize" and len(node.input) > 2 and node.input[2] != ""
        return (node.name in decode and node.op_type != "Resize") or resize_by_scales

    nodes = model_proto.graph.node
    blocked = [node.name for node in nodes if keep_fp32(node) and not graph_outputs.intersection(node.output)]
    with warnings.catch_warnings():  # it warns once per tiny weight it rounds up to fp16's smallest step
        warnings.simplefilter("ignore", UserWarning)
        fp16 = float16.convert_float_to_float16(
            model_proto, keep_io_types=True, op_block_list=[], node_block_list=blocked
        )
    for value in [*fp16.graph.input, *fp16.graph.output]:
        elem_type = value.type.tensor_type.elem_type
        if elem_type != onnx.TensorProto.FLOAT:
            raise RuntimeError(f"fp16 conversion made {value.name} {onnx.TensorProto.DataType.Name(elem_type)}")
    return fp16


def calibration_paths(folder, count: int) -> list[Path]:
    """A Flowers-102 root -> an evenly spaced sample of the seed split's train subset; else any image folder."""
    try:
        flowers.flowers_dir(folder)
    except flowers.DataError:
        return flowers.find_images(folder, limit=count)
    return flowers.flowers_subset(folder, "train", "seed", limit=count)[0]


def calibration_lightness(path, input_size: int) -> np.ndarray:
    """One image -> L* [1,1,s,s] float32, s = input_size rounded to a multiple of 32 as the runtime does."""
    from skimage.color import rgb2lab

    side = model_input_shape(input_size, input_size, input_size)[0]
    rgb = flowers.load_square_rgb(path, side)
    return rgb2lab(rgb)[..., 0].astype(np.float32)[None, None]


def to_int8(model_proto: onnx.ModelProto, paths, input_size: int) -> onnx.ModelProto:
    """Static QDQ quantisation: per-channel int8 weights, uint8 activations, MinMax ranges from real
    images (the calibrator adds ReduceMin/Max outputs, so memory does not grow with the image count).
    The head and decode (see decode_nodes) are left fp32: quantising the logits before a
    temperature-sharpened softmax shifts every colour."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from tqdm import tqdm

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(tqdm(paths, desc="calibrate", unit="img", leave=False))

        def get_next(self):
            path = next(self.batches, None)
            return None if path is None else {"L": calibration_lightness(path, input_size)}

    with tempfile.TemporaryDirectory() as tmp:
        fp32_path, pre_path, int8_path = (os.path.join(tmp, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model_proto, fp32_path)
        quant_pre_process(fp32_path, pre_path, skip_symbolic_shape=True)
        excluded = decode_nodes(onnx.load(pre_path))  # after pre-processing, which fuses and renames nodes
        quantize_static(
            pre_path,
            int8_path,
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=excluded,
        )
        return onnx.load(int8_path)


def set_metadata(model_proto: onnx.ModelProto, meta: dict, precision: str, source_sha256: str) -> None:
    metrics = meta.get("metrics") or ({"valid": meta["valid"]} if "valid" in meta else {})
    props = {
        "contract": CONTRACT,
        "input_size": str(int(meta.get("input_size", 256))),
        "size_multiple": str(int(meta.get("size_multiple", MIN_SIDE))),
        "precision": precision,
        "version": str(meta.get("version", "0")),
        "preset": str(meta["preset"]),
        "training_data": str(meta.get("training_data", "")),
        "metrics": json.dumps(metrics, sort_keys=True),
        "source_sha256": source_sha256,
    }
    del model_proto.metadata_props[:]
    onnx.helper.set_model_props(model_proto, props)


def export(model, meta: dict, source_sha256: str, precision: str = "fp32", opset: int = DEFAULT_OPSET,
           calibration: list | None = None) -> onnx.ModelProto:
    """A loaded colorizer -> the checked ModelProto; calibration is the list of image paths int8 needs."""
    model_proto = export_fp32(model, opset)
    if precision == "fp16":
        model_proto = to_fp16(model_proto)
    elif precision == "int8":
        model_proto = to_int8(model_proto, calibration, int(meta.get("input_size", 256)))
    set_metadata(model_proto, meta, precision, source_sha256)
    onnx.checker.check_model(model_proto, full_check=True)
    return model_proto


def load_colorizer_or_fail(path):
    """-> (model, meta), or one `error:` line for a truncated file, a non-weights pickle, another model."""
    try:
        return load_colorizer(path)
    except pickle.UnpicklingError:
        fail(f"cannot load {path}: not a PyTorch checkpoint of plain tensors (torch.load weights_only refused it)")
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        fail(f"cannot load {path} as a colorizer checkpoint: {first_line}")


def save_atomic(model_proto: onnx.ModelProto, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(model_proto.SerializeToString(deterministic=True))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def get_args_parser():
    parser = argparse.ArgumentParser(description="Export a colorizer checkpoint to ONNX", prog="python -m export.onnx")
    parser.add_argument("--checkpoint", type=Path, required=True, help="colorizer .pt (train.colorizer fit)")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    parser.add_argument("--calibration", type=Path, help="int8: a Flowers-102 root (seed train subset) or image folder")
    parser.add_argument("--calibration-images", type=int, default=128, help="int8: how many calibration images")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    return parser


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if not args.checkpoint.is_file():
        fail(f"checkpoint not found: {args.checkpoint}")
    if args.out.resolve() == args.checkpoint.resolve():
        fail("--out is the checkpoint itself; choose another file")
    if args.out.is_dir():
        fail(f"--out {args.out} is a folder; give the .onnx file to write")
    if not DEFAULT_OPSET <= args.opset <= onnx.defs.onnx_opset_version():
        fail(f"--opset must be between {DEFAULT_OPSET} and {onnx.defs.onnx_opset_version()} (this exporter and onnx)")
    calibration = None
    if args.precision == "int8":
        if args.calibration is None:
            fail("--precision int8 needs --calibration DIR (a Flowers-102 root or a folder of images)")
        if args.calibration_images < 1:
            fail("--calibration-images must be at least 1")
        try:
            calibration = calibration_paths(args.calibration, args.calibration_images)
        except flowers.DataError as exc:
            fail(str(exc))
    model, meta = load_colorizer_or_fail(args.checkpoint)
    print(f"exporting {args.checkpoint} ({args.precision}, opset {args.opset})", file=sys.stderr)
    model_proto = export(model, meta, file_sha256(args.checkpoint), args.precision, args.opset, calibration)
    save_atomic(model_proto, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
