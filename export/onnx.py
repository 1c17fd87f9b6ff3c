"""Export a colorizer checkpoint to ONNX: fp32, fp16 (for the CUDA provider) or int8 (static QDQ, for CPUs
and edge boards).

    python -m export.onnx --checkpoint checkpoints/colorizer.pt --out checkpoints/colorizer.onnx
    python -m export.onnx --checkpoint checkpoints/colorizer.pt --out checkpoints/colorizer-fp16.onnx --precision fp16
    python -m export.onnx --checkpoint checkpoints/colorizer.pt --out checkpoints/colorizer-int8.onnx \
        --precision int8 --calibration ../shared/data

The graph follows runtime.contract: input `L` float32 [N,1,H,W] (L* in [0, 100]) -> output `ab` float32
[N,2,H,W]; normalisation and the annealed-mean decoding are inside it; N, H and W are dynamic (H, W >= 32,
which the runtime guarantees through size_multiple); the default preset's annealed-mean temperature is an input
with a default. What the runtime needs to know is in metadata_props (contract.ModelInfo). An fp32 file stores
its weights as fp16 plus a Cast (they are the checkpoint's fp16 values, so nothing changes but the size).
The same checkpoint, options and library versions give a byte-identical file.

Exporter: torch.export-based (dynamo=True). It exports the size-of-another-tensor interpolations with
symbolic H, W as correctly as the TorchScript exporter does, but that one is deprecated in this torch, and
the symbolic output shapes it writes make a traced-in size show up (which is how the seed model's
`if out.shape != ...` branch was caught, see ContractOutput). Its stack-trace metadata is stripped so the
bytes do not depend on where the source lives.
"""

import argparse
import dataclasses
import contextlib
import hashlib
import io
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import torch
import torch.nn.functional as F

from runtime import contract
from runtime.cli import interrupt_code, interruptible
from runtime.fileio import fail, first_line, write_bytes_atomic
from train import data as datasets
from train.engine import CheckpointError, file_sha256, non_finite_count, signals_deferred
from train.models import load_colorizer

DEFAULT_OPSET = 18  # the lowest opset the torch.export-based exporter writes natively; ORT >= 1.14 runs it
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
    """The fp32 graph with BatchNormalization kept apart from the convolutions (ONNX Runtime, and int8's
    pre-processing, fuse them when they load the file): the weights are then exactly the checkpoint's fp16 values,
    which store_weights_fp16 can keep at half the size with no change in any output. The temperature becomes an
    overridable input (expose_temperature)."""
    batch = torch.export.Dim("N")
    height, width = (torch.export.Dim(name, min=model.size_multiple) for name in ("H", "W"))
    example = torch.rand(EXAMPLE_SHAPE, generator=torch.Generator().manual_seed(0)) * 100.0
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates its steps on stdout
        program = torch.onnx.export(
            ContractOutput(model).eval(),
            (example,),
            input_names=[contract.INPUT],
            output_names=[contract.OUTPUT],
            dynamic_shapes={"lightness": {0: batch, 2: height, 3: width}},
            opset_version=opset,
            dynamo=True,
            optimize=False,
            verbose=False,
        )
    model_proto = optimize_keeping_batchnorm(program.model_proto)
    # OpenCV DNN 5 reads a Constant's value_ints as int32, so the int64 Concat of the input padding refused to load
    # there ("concat2_layer.cpp: inputs[i] == inputs[0] in getTypes"); as initializers they keep their int64
    constants_to_initializers(model_proto)
    strip_trace_metadata(model_proto)
    return model_proto


def optimize_keeping_batchnorm(model_proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnxscript's default clean-up (constant folding, its rewrite rules, dead nodes) minus the rules that fold
    BatchNormalization into the convolution before it."""
    from onnxscript import ir, optimizer, rewriter

    rules = [rule for rule in rewriter._DEFAULT_REWRITE_RULES if not (rule.name or "").startswith("FuseBatchNorm")]
    model = ir.from_proto(model_proto)
    for _ in range(2):
        optimizer.fold_constants(model)
        rewriter.rewrite(model, pattern_rewrite_rules=rules)
        optimizer.remove_unused_nodes(model)
    return ir.to_proto(model)


def expose_temperature(model_proto: onnx.ModelProto) -> None:
    """Make the annealed-mean temperature initializer an input with a default (ONNX Runtime lists it among the
    overridable initializers), so a user can trade vivid for safe colour at run time without re-exporting."""
    graph = model_proto.graph
    names = [init.name for init in graph.initializer if init.name.split(".")[-1] == contract.TEMPERATURE]
    if not names:
        return  # the seed preset has no temperature
    init = next(i for i in graph.initializer if i.name == names[0])
    if init.data_type != onnx.TensorProto.FLOAT or list(init.dims):
        raise RuntimeError(f"temperature initializer {init.name} is not a float32 scalar")
    for node in graph.node:
        node.input[:] = [contract.TEMPERATURE if name == init.name else name for name in node.input]
    init.name = contract.TEMPERATURE
    if contract.TEMPERATURE not in [value.name for value in graph.input]:
        graph.input.append(onnx.helper.make_tensor_value_info(contract.TEMPERATURE, onnx.TensorProto.FLOAT, []))


def store_weights_fp16(model_proto: onnx.ModelProto) -> None:
    """Store every float32 initializer whose values fp16 holds exactly as fp16 plus a Cast back to float32 (ONNX
    Runtime folds the casts at load): half the file, and the arithmetic and every output stay exactly fp32."""
    graph = model_proto.graph
    inputs = {value.name for value in graph.input}
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or init.name in inputs:
            continue
        values = onnx.numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if values.size < 64 or not np.array_equal(half.astype(np.float32), values):
            continue
        name = init.name
        init.CopyFrom(onnx.numpy_helper.from_array(half, f"{name}.fp16"))
        casts.append(onnx.helper.make_node("Cast", [f"{name}.fp16"], [name], to=onnx.TensorProto.FLOAT,
                                           name=f"{name}.cast"))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)


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
    """Names of every node that depends on the decoder's last ReLU or on the temperature (an input by then, see
    expose_temperature): the head, the annealed mean (softmax and its projection onto the bin centres) or tanh, and
    the resizes. Low precision there moves every output colour, so they stay fp32."""
    nodes = list(model_proto.graph.node)
    last_relu = max(i for i, node in enumerate(nodes) if node.op_type == "Relu")
    tensors = set(nodes[last_relu].output) | {contract.TEMPERATURE}
    downstream = []
    for node in nodes:
        if node is not nodes[last_relu] and tensors.intersection(node.input):
            downstream.append(node.name)
            tensors.update(node.output)
    return downstream


def input_nodes(model_proto: onnx.ModelProto) -> list[str]:
    """Names of the nodes that the first convolution's input comes from (the normalisation of L and the padding
    to a multiple of 32): a few thousand values each, which quantised would cost a Quantize/Dequantize pair per
    node (measured: 0.25 ms of a 9.5 ms int8 run) and gain nothing."""
    nodes = list(model_proto.graph.node)
    first = next(node for node in nodes if node.op_type == "Conv")
    producers = {output: node for node in nodes for output in node.output}
    ancestors, pending = set(), [first.input[0]]
    while pending:
        node = producers.get(pending.pop())
        if node is not None and node.name not in ancestors:
            ancestors.add(node.name)
            pending.extend(node.input)
    return [node.name for node in nodes if node.name in ancestors]


def constants_to_initializers(model_proto: onnx.ModelProto) -> None:
    """Constant nodes -> initializers (every export: OpenCV DNN types value_ints as int32, see export_fp32). The fp16
    converter retypes a Constant's output without converting its value (value_float, value_floats), which the
    checker then rejects; as initializers they are converted, or kept float32 where only fp32 nodes read them
    (Resize's scales, the annealed mean's column of ones)."""
    graph = model_proto.graph
    kept = []
    for node in graph.node:
        if node.op_type != "Constant" or len(node.attribute) != 1:
            kept.append(node)
            continue
        attribute = node.attribute[0]
        value = onnx.helper.get_attribute_value(attribute)
        if attribute.name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value)
        elif attribute.name in ("value_float", "value_floats"):
            tensor = onnx.numpy_helper.from_array(np.array(value, dtype=np.float32))
        elif attribute.name in ("value_int", "value_ints"):
            tensor = onnx.numpy_helper.from_array(np.array(value, dtype=np.int64))
        else:
            kept.append(node)
            continue
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
    del graph.node[:]
    graph.node.extend(kept)


def to_fp16(model_proto: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and arithmetic for the CUDA provider, fp32 input and output (keep_io_types); the head,
    softmax and annealed mean (or tanh) stay fp32. onnxconverter-common 1.16 needs steering: its default
    op block list holds every Resize; a blocked node that writes a graph output turns that output fp16
    despite keep_io_types; it converts Resize's `scales` (which must stay float32) with the weights;
    and blocking Cast by op type sends it into an endless loop. So the block list is ours alone."""
    import warnings

    from onnxconverter_common import float16

    constants_to_initializers(model_proto)
    graph_outputs = {value.name for value in model_proto.graph.output}
    decode = set(decode_nodes(model_proto))

    def keep_fp32(node):
        resize_by_scales = node.op_type == "Resize" and len(node.input) > 2 and node.input[2] != ""
        return (node.name in decode and node.op_type != "Resize") or resize_by_scales

    nodes = model_proto.graph.node
    blocked = [node.name for node in nodes if keep_fp32(node) and not graph_outputs.intersection(node.output)]
    # It also stores the weights that only blocked nodes use (the temperature among them) as fp16 plus a Cast back:
    # keep their float32 originals (the Cast is then float32 -> float32, a no-op).
    consumers = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    originals = {}
    for init in model_proto.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and set(consumers.get(init.name, [None])) <= set(blocked):
            originals[init.name] = onnx.TensorProto()
            originals[init.name].CopyFrom(init)
    with warnings.catch_warnings():  # it warns once per tiny weight it rounds up to fp16's smallest step
        warnings.simplefilter("ignore", UserWarning)
        fp16 = float16.convert_float_to_float16(
            model_proto, keep_io_types=True, op_block_list=[], node_block_list=blocked
        )
    for init in fp16.graph.initializer:
        if init.name in originals and init.data_type == onnx.TensorProto.FLOAT16:
            init.CopyFrom(originals[init.name])
    for value in fp16.graph.value_info:
        if value.name in originals:
            value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    for value in [*fp16.graph.input, *fp16.graph.output]:
        elem_type = value.type.tensor_type.elem_type
        if elem_type != onnx.TensorProto.FLOAT:
            raise RuntimeError(f"fp16 conversion made {value.name} {onnx.TensorProto.DataType.Name(elem_type)}")
    return fp16


def calibration_paths(folder, count: int) -> list[Path]:
    """A data root -> an evenly spaced sample of Flowers-102's seed train subset and, when the root has it, the
    general set's train split (half each); any other folder -> a sample of its images."""
    try:
        datasets.flowers_dir(folder)
    except datasets.DataError:
        return datasets.find_images(folder, limit=count)
    if not datasets.has_general(folder):
        return datasets.flowers_subset(folder, "train", "seed", limit=count)[0]
    half = max(1, count // 2)
    return (datasets.flowers_subset(folder, "train", "seed", limit=half)[0]
            + datasets.general_subset(folder, "train", limit=count - half)[0])


def calibration_lightness(path, info: contract.ModelInfo) -> np.ndarray:
    """One photo -> L* [1,1,h,w] as the runtime feeds it (contract.model_input of what cv2 reads)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise datasets.DataError(f"cannot read calibration image {path}")
    return contract.model_input(bgr, info)


def to_int8(model_proto: onnx.ModelProto, paths, info: contract.ModelInfo) -> onnx.ModelProto:
    """Static QDQ quantisation: per-channel int8 weights, uint8 activations, MinMax ranges from real
    images (the calibrator adds ReduceMin/Max outputs, so memory does not grow with the image count).
    The head and decode (see decode_nodes) are left fp32: quantising the logits before a
    temperature-sharpened softmax shifts every colour."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from tqdm import tqdm

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(tqdm(paths, desc="calibrate", unit="img", leave=False, disable=None))

        def get_next(self):
            path = next(self.batches, None)
            return None if path is None else {contract.INPUT: calibration_lightness(path, info)}

    with tempfile.TemporaryDirectory() as tmp:
        fp32_path, pre_path, int8_path = (os.path.join(tmp, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model_proto, fp32_path)
        quant_pre_process(fp32_path, pre_path, skip_symbolic_shape=True)
        pre = onnx.load(pre_path)  # after pre-processing, which fuses and renames nodes
        excluded = input_nodes(pre) + decode_nodes(pre)
        quantize_static(
            pre_path,
            int8_path,
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            # 7-bit weights: x86 CPUs without VNNI (AVX2, e.g. AMD Zen 2/3) multiply u8 x s8 through 16-bit sums that
            # saturate at full range; measured there, full-range weights cost 0.6 dB on Flowers-102 test
            reduce_range=True,
            nodes_to_exclude=excluded,
        )
        return onnx.load(int8_path)


def export(model, meta: dict, source_sha256: str, precision: str = "fp32", opset: int = DEFAULT_OPSET,
           calibration: list | None = None) -> onnx.ModelProto:
    """A loaded colorizer -> the checked ModelProto; calibration is the list of image paths int8 needs."""
    info = model.info(meta, precision, source_sha256)  # the temperature the graph holds, so metadata and graph agree
    model_proto = export_fp32(model, opset)
    # before conversion: int8's pre-processing would otherwise fold the temperature into the head's weights
    expose_temperature(model_proto)
    if precision == "fp16":
        model_proto = to_fp16(model_proto)
    elif precision == "int8":
        model_proto = to_int8(model_proto, calibration, info)
    if precision == "fp32":
        store_weights_fp16(model_proto)
    del model_proto.metadata_props[:]
    info = dataclasses.replace(info, graph_sha256=graph_sha256(model_proto))
    onnx.helper.set_model_props(model_proto, info.to_metadata())
    onnx.checker.check_model(model_proto, full_check=True)
    return model_proto


def graph_sha256(model_proto: onnx.ModelProto) -> str:
    """sha256 of the graph (nodes and weights, not the metadata), serialised deterministically: recorded at export,
    recomputed by verify, so a file whose weights were changed afterwards is told from the exported one."""
    return hashlib.sha256(model_proto.graph.SerializeToString(deterministic=True)).hexdigest()


def load_colorizer_or_fail(path):
    """-> (model, meta), or one `error:` line (exit 2) for a missing, damaged or foreign file or another model."""
    try:
        return load_colorizer(path)
    except CheckpointError as exc:
        fail(first_line(exc), code=2)


def save_atomic(model_proto: onnx.ModelProto, out: Path) -> None:
    write_bytes_atomic(out, model_proto.SerializeToString(deterministic=True))


def get_args_parser():
    parser = argparse.ArgumentParser(description="Export a colorizer checkpoint to ONNX", prog="python -m export.onnx")
    parser.add_argument("--checkpoint", type=Path, required=True, help="colorizer .pt (train.colorizer fit)")
    parser.add_argument("--out", type=Path, required=True,
                        help="the .onnx file to write; an existing file is replaced only with --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    parser.add_argument("--calibration", type=Path, help="int8: a Flowers-102 root (seed train subset) or image folder")
    parser.add_argument("--calibration-images", type=int, default=128, help="int8: how many calibration images")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    return parser


def check_out(args) -> None:
    """One `error:` line (exit 2) for an --out that is no .onnx name, the checkpoint, a folder, or an existing
    file without --overwrite: nothing the user has is replaced by accident."""
    if not args.checkpoint.is_file():
        fail(f"checkpoint not found: {args.checkpoint}", code=2)
    if args.out.resolve() == args.checkpoint.resolve():
        fail("--out is the checkpoint itself; choose another file", code=2)
    if args.out.is_dir():
        fail(f"--out {args.out} is a folder; give the .onnx file to write", code=2)
    if args.out.suffix != ".onnx":
        fail(f"--out {args.out}: not an .onnx file name (the exporter writes ONNX files only)", code=2)
    if args.out.exists() and not args.overwrite:
        fail(f"{args.out} exists; pass --overwrite to replace it", code=2)


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    check_out(args)
    if not DEFAULT_OPSET <= args.opset <= onnx.defs.onnx_opset_version():
        fail(f"--opset must be between {DEFAULT_OPSET} and {onnx.defs.onnx_opset_version()} (this exporter and onnx)",
             code=2)
    calibration = None
    if args.precision == "int8":
        if args.calibration is None:
            fail("--precision int8 needs --calibration DIR (a data root or a folder of images)", code=2)
        if args.calibration_images < 1:
            fail("--calibration-images must be at least 1", code=2)
        try:
            calibration = calibration_paths(args.calibration, args.calibration_images)
        except datasets.DataError as exc:
            fail(first_line(exc), code=2)
    model, meta = load_colorizer_or_fail(args.checkpoint)
    bad, total = non_finite_count(model.state_dict())
    if bad:
        fail(f"{args.checkpoint}: {bad} of {total} weights are not finite (NaN or inf); not exported", code=2)
    print(f"exporting {args.checkpoint} ({args.precision}, opset {args.opset})", file=sys.stderr)
    try:
        with interruptible():  # SIGTERM too ends in the cleanup that removes the temp file
            model_proto = export(model, meta, file_sha256(args.checkpoint), args.precision, args.opset, calibration)
            with signals_deferred():  # a signal waits for the save to finish or fail and remove its temp file
                save_atomic(model_proto, args.out)
    except datasets.DataError as exc:  # a calibration image that cannot be read
        fail(first_line(exc), code=2)
    except OSError as exc:  # a full disk, here or in int8's temporary folder; write_atomic removed its temp file
        fail(f"cannot write {args.out}: {exc.strerror or first_line(exc)} (nothing written)", code=1)
    except KeyboardInterrupt as exc:
        fail("interrupted; nothing written", code=interrupt_code(exc))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
