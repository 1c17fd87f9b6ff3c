"""Train and evaluate the colorizers.

    python -m train.colorizer fit --data ../shared/data --classifier checkpoints/classifier.pt [--preset default|seed]
    python -m train.colorizer fit --images ~/my-photos --classifier checkpoints/classifier.pt     # your own domain
    python -m train.colorizer evaluate --checkpoint checkpoints/colorizer.pt --data ../shared/data --subset test --json
    python -m train.colorizer evaluate --onnx checkpoints/colorizer.onnx --data ../shared/data --grid grid.png \
        --grid-with checkpoints/seed-colorizer.onnx

--data trains on Flowers-102's train subset and the general set's train split together (one pass over each per
epoch; --sources flowers|general for one). Presets: `seed` is the student project's model #1 (MSE, SGD 0.01
Nesterov, constant rate; full-range tanh head instead of its Sigmoid); `default` is ours (skip-connected decoder,
rebalanced classification over ab bins plus smooth-L1 on the annealed mean, annealed-mean decoding). Both start from
the classifier's encoder unless --encoder-init none.
"""

import argparse
import importlib.metadata
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.transforms import v2
from torch.utils.data import DataLoader
from tqdm import tqdm

from train import data as datasets
from runtime import contract
from runtime.cli import positive_int
from runtime.fileio import fail
from runtime.model import ColorizerModel, ModelError, ProviderError
from train import engine, evaluation, losses
from train.lab import AB_SCALE, L_CENTER, L_SCALE, normalize_l, uint8_rgb_to_lab
from train.models import build_colorizer, load_colorizer

try:  # the package's own version (pyproject.toml), written into every checkpoint and ONNX file
    VERSION = importlib.metadata.version("flower-colorization")
except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0+unknown"
STORED_RATIO = 1.25  # images are cached with shorter side image_size * 1.25 and randomly cropped to image_size

PRESET_DEFAULTS = {
    # the seed's recipe, as written in its notebook
    "seed": {"optimizer": "sgd", "lr": 0.01, "weight_decay": 1e-5, "schedule": "constant"},
    "default": {"optimizer": "adamw", "lr": 5e-4, "weight_decay": 1e-4, "schedule": "cosine"},
}


def lab_batch(batch, device):
    """(uint8 RGB [N,3,H,W], damaged L* [N,1,H,W] or NaN where the crop is clean) -> (normalised L channels-last,
    true ab [N,2,H,W]): the network sees the damaged L*, the target stays the clean photo's ab."""
    images, damaged = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
    lab = uint8_rgb_to_lab(images)
    lightness = torch.where(torch.isnan(damaged), lab[:, :1], damaged)
    return normalize_l(lightness).contiguous(memory_format=torch.channels_last), lab[:, 1:]


def probability(text: str) -> float:
    value = engine.non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def parse_mix(text: str) -> dict[str, float]:
    """'flowers=0.5,general=1,photos=0.2,photos/cars=1' -> {set or set/source: passes per epoch}."""
    mix = {}
    for part in filter(None, text.split(",")):
        name, equals, value = part.partition("=")
        if not equals:
            raise argparse.ArgumentTypeError(f"wants SET=PASSES pairs, got {part!r}")
        mix[name.strip()] = engine.non_negative_float(value)
    return mix


def training_sets(args) -> list[tuple[str, list]]:
    """The training sets in the mix, (name, image paths) each: Flowers-102's train subset and general's train split
    from --data, the staged photos' train split from --photos, every image under --images."""
    sets = []
    if args.data and args.sources in ("all", "flowers"):
        sets.append(("flowers", datasets.flowers_subset(args.data, "train", args.split, limit=args.limit)[0]))
    if args.data and args.sources in ("all", "general") and (datasets.has_general(args.data) or args.sources == "general"):
        sets += split_sources("general", *datasets.general_subset(args.data, "train", limit=args.limit)[:2], args.mix)
    if args.photos:
        folder = datasets.photos_dir(args.photos)
        sets += split_sources("photos", *datasets.indexed_subset(folder, "train", limit=args.limit)[:2], args.mix)
    if args.images:
        sets.append(("images", datasets.find_images(args.images, limit=args.limit)))
    unknown = set(args.mix) - {name for name, _ in sets}
    if unknown:
        raise engine.UsageError(f"--mix names {', '.join(sorted(unknown))}, which this run does not train on")
    return sets


def split_sources(name: str, paths, sources, mix) -> list[tuple[str, list]]:
    """An indexed set as one mix entry, less the sources --mix weighs on their own ('photos/cars=1'), which become
    entries of their own: a source the model gets wrong can be seen more often without its whole set."""
    own = sorted({key.partition("/")[2] for key in mix if key.startswith(name + "/")} & set(sources))
    rest = [p for p, s in zip(paths, sources) if s not in own]
    apart = [(f"{name}/{s}", [p for p, t in zip(paths, sources) if t == s]) for s in own]
    return ([(name, rest)] if rest else []) + apart


def describe_mix(sets, mix, images=None) -> str:
    """For the model card: each set, its size and its passes per epoch."""
    labels = {"images": f"images under {images}"}
    return " + ".join(f"{labels.get(name, name + ' train')} ({len(paths)}, x{mix.get(name, 1.0):g}/epoch)"
                      for name, paths in sets)


def validation_sets(args) -> list[tuple[str, list, list, int | None]]:
    """The valid images scored after each epoch, (set, paths, groups, size) for each set that training uses,
    args.valid_images in all."""
    if not args.data or args.valid_images <= 0:
        return []
    names = [n for n in evaluation.available_sets(args.data, args.photos) if args.sources in ("all", n) or n == "photos"]
    return [(n, *evaluation.subset_images(args.data, n, "valid", args.split, limit=args.valid_images // len(names),
                                          photos=args.photos)) for n in names]


def compute_loss(model, preset, inputs, true_ab, regression_weight: float = 0.0, overshoot_weight: float = 0.0):
    """seed: the seed's MSE. default: the rebalanced bin cross-entropy (vivid, but it may pick a wrong vivid
    colour) plus regression_weight x smooth-L1 on the decoded annealed mean (pulls that mean to the truth) plus
    overshoot_weight x the hinge on chroma beyond the truth's (confident wrong colour); -> (loss, {part: value})."""
    output = model(inputs)
    if preset == "seed":
        loss = losses.seed_mse(output, true_ab)
        return loss, {}
    core = engine.unwrap(model)
    bins = losses.rebalanced_bin_loss(output, true_ab, core.bins, core.bin_weights)
    if regression_weight <= 0 and overshoot_weight <= 0:
        return bins, {}
    mean_ab = core.decode(output, output.shape[-2:])
    regression = losses.annealed_mean_l1(mean_ab, true_ab)
    loss, parts = bins + regression_weight * regression, {"bin_loss": bins.item(), "mean_l1": regression.item()}
    if overshoot_weight > 0:
        overshoot = losses.chroma_overshoot(mean_ab, true_ab)
        loss, parts["overshoot"] = loss + overshoot_weight * overshoot, overshoot.item()
    return loss, parts


def recipe_of(args) -> dict:
    """The optimiser recipe: the preset's, with --lr and the regression weight applied."""
    recipe = {**PRESET_DEFAULTS[args.preset], **({"lr": args.lr} if args.lr is not None else {})}
    if args.preset == "default":
        recipe["regression_weight"] = args.regression_weight
        if args.overshoot_weight > 0:  # absent from 0.4's recipe: its checkpoints keep their meta
            recipe["overshoot_weight"] = args.overshoot_weight
    return recipe


def encoder_start(args) -> tuple[dict | None, dict]:
    """-> (the classifier's weights for the encoder or None, what the model card records about it)."""
    if args.encoder_init != "classifier" or args.init:
        return None, {}
    if args.classifier is None:
        raise engine.UsageError("--encoder-init classifier needs --classifier PATH (or pass --encoder-init none)")
    classifier = engine.load_checkpoint(args.classifier)
    if "fc.weight" not in classifier["model"]:
        raise engine.CheckpointError(f"{args.classifier} is not a classifier checkpoint (no fc layer)")
    state = {k: v.float() for k, v in classifier["model"].items()}
    keys = ("valid_top1", "valid_flowers_102way", "image_size", "eval_image_size", "epochs_trained")
    meta = {k: classifier.get("meta", {}).get(k) for k in keys}
    meta.update(classes=int(state["fc.weight"].shape[0]), sha256=engine.file_sha256(args.classifier))
    return state, meta


def build_model(args, encoder_state, images):
    """-> (the colorizer, its model_kwargs): from the classifier's encoder, or warm-started from --init (a colorizer
    checkpoint of the same preset); the default preset's class rebalancing comes from this run's images."""
    model_kwargs = {"temperature": args.temperature} if args.preset == "default" else {}
    if args.init:
        model, init_meta = load_colorizer(args.init)
        if init_meta["preset"] != args.preset:
            raise engine.CheckpointError(f"--init {args.init} is a {init_meta['preset']} colorizer, not {args.preset}")
        model_kwargs = dict(init_meta.get("model_kwargs", {}))
    else:
        model = build_colorizer(args.preset, encoder_state, **model_kwargs)
    if args.preset == "default":
        model_kwargs["num_bins"] = len(model.bins)
        model.bin_weights.copy_(class_rebalancing(images, model.bins, args.batch_size))
    return model.train(), model_kwargs


def make_optimizer(model, recipe, args, steps_per_epoch: int):
    if recipe["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(), lr=recipe["lr"], momentum=0.9, nesterov=True, weight_decay=recipe["weight_decay"]
        )
    else:
        optimizer = torch.optim.AdamW(engine.param_groups(model, recipe["weight_decay"]), lr=recipe["lr"])
    if recipe["schedule"] == "cosine":
        scheduler = engine.warmup_cosine(optimizer, args.epochs * steps_per_epoch, steps_per_epoch // 2 + 1)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return optimizer, scheduler


def training_data(args):
    """-> (uint8 image array of every set, one after another; the mixture loader; its sampler; description)."""
    sets = training_sets(args)
    size = int(round(args.image_size * STORED_RATIO))
    arrays = [datasets.load_image_array(paths, size, args.cache_dir, desc=f"decoding {name}") for name, paths in sets]
    images = datasets.ConcatImages(arrays)
    transform = v2.Compose(
        [v2.RandomResizedCrop(args.image_size, scale=(0.4, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    )
    dataset = datasets.DamagedCrops(images, transform, args.damage)
    sampler = datasets.MixtureSampler([len(a) for a in arrays], [args.mix.get(n, 1.0) for n, _ in sets], args.seed)
    loader = DataLoader(dataset, batch_size=sampler.per_rank_batch(args.batch_size), sampler=sampler, drop_last=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0)
    return images, loader, sampler, describe_mix(sets, args.mix, args.images)


def training_meta(args, recipe, model_kwargs, amp_dtype, classifier_meta, description) -> dict:
    """What the checkpoint records about how it was made (the model card's source)."""
    domain = "general" if datasets.has_general(args.data) and args.sources != "flowers" else "flowers"
    return {
        "preset": args.preset,
        "model_kwargs": model_kwargs,
        "version": VERSION,
        "domain": "custom" if args.images and not args.data else domain,
        "input_size": args.input_size or int(round(args.image_size * STORED_RATIO)),
        "training_data": description,
        "train_image_size": args.image_size,
        "encoder_init": str(args.init) if args.init else args.encoder_init,
        "classifier": classifier_meta,
        "damage": args.damage,
        "recipe": {**recipe, "batch_size": args.batch_size, "epochs": args.epochs, "amp": str(amp_dtype),
                   "mix": args.mix},
        "l_center": L_CENTER,
        "l_scale": L_SCALE,
        "ab_scale": AB_SCALE,
    }


def validate(model, meta, valid_sets, device) -> dict:
    """Per-epoch valid figures on the runtime's image path, clean and (for the everyday sets) damaged."""
    record = {}
    predict_ab, info = evaluation.torch_predictor(model, device), model.info(meta)
    for name, paths, groups, size in valid_sets:
        for damaged in (False, True):
            result = evaluation.evaluate_colorizer(predict_ab, info, paths, groups, size, progress=False,
                                                   damage=damaged)
            prefix = f"valid_{name}_damaged" if damaged else f"valid_{name}"
            record.update({f"{prefix}_{k}": result[k] for k in ("psnr", "colorfulness_ratio", "auc", "false_colour")})
            record[f"{prefix}_gray_psnr"] = result["gray"]["psnr"]
    model.train().to(memory_format=torch.channels_last)
    return record


def fit(args):
    device = engine.setup_device(args.device)
    engine.seed_everything(args.seed)
    amp_dtype = engine.autocast_dtype(device, args.amp)
    recipe = recipe_of(args)
    state_path, log = args.run_dir / engine.STATE_FILE, engine.EpochLog(args.run_dir / engine.LOG_FILE)
    encoder_state, classifier_meta = encoder_start(args)
    images, loader, sampler, description = training_data(args)
    valid_sets = validation_sets(args)
    model, model_kwargs = build_model(args, encoder_state, images)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer, scheduler = make_optimizer(model, recipe, args, max(1, len(loader)))
    scaler = engine.make_grad_scaler(device, amp_dtype)
    state = engine.resume_training_state(state_path, model, optimizer, scheduler, scaler) if args.resume else None
    start_epoch = state["epoch"] + 1 if state is not None else 0
    ddp_model = engine.wrap_distributed(model, device)
    meta = training_meta(args, recipe, model_kwargs, amp_dtype, classifier_meta, description)

    def batch_loss(net, batch):
        inputs, true_ab = lab_batch(batch, device)
        loss, parts = compute_loss(net, args.preset, inputs, true_ab, args.regression_weight,
                                   args.overshoot_weight)
        return loss, inputs.shape[0], {k: v * inputs.shape[0] for k, v in parts.items()}

    for epoch in range(start_epoch, args.epochs):
        timer = engine.Timer()
        record = engine.train_one_epoch(ddp_model, loader, batch_loss, optimizer, scheduler, scaler, device,
                                        amp_dtype, epoch, args.epochs, sampler)
        engine.check_weights(model, epoch, args)
        if engine.is_main_process():
            record = {"epoch": epoch + 1, **record, "lr": optimizer.param_groups[0]["lr"],
                      **validate(model, meta, valid_sets, device), "seconds": round(timer.seconds(), 1)}
            log.append(record)
            print(engine.strict_json(record), file=sys.stderr)
            meta.update(epochs_trained=epoch + 1, valid=record)
            engine.atomic_save({"model": engine.half_state_dict(model), "meta": dict(meta)}, args.out)
            engine.save_training_state(state_path, model, optimizer, scheduler, scaler, epoch, args)
        engine.barrier()
    if engine.is_main_process():
        print(f"colorizer ({args.preset}) at {args.out}; log at {log.path}", file=sys.stderr)
    engine.cleanup_distributed()


def class_rebalancing(images, bins, batch_size, most: int = 8000) -> torch.Tensor:
    """Rebalancing weights from the ab distribution of the training images (at 1/4 resolution, like the logits),
    from at most `most` of them, evenly spaced."""
    chosen = np.linspace(0, len(images) - 1, min(most, len(images))).round().astype(int)

    def ab_batches():
        for start in tqdm(range(0, len(chosen), batch_size * 4), desc="colour prior", leave=False, disable=None):
            batch = np.stack([images[i] for i in chosen[start : start + batch_size * 4]])
            batch = torch.from_numpy(batch).permute(0, 3, 1, 2)
            ab = uint8_rgb_to_lab(batch)[:, 1:]
            yield torch.nn.functional.avg_pool2d(ab, 4)

    return losses.rebalancing_weights(ab_batches(), bins)


def load_predictor(path, device, temperature=None, onnx: bool | None = None, input_size=None):
    """A .pt checkpoint or an .onnx file -> (predict_ab, ModelInfo, label), with the overrides applied through
    ModelInfo.resolve. An .onnx file runs in the runtime's own ColorizerModel (ONNX Runtime), so its figures are the
    runtime's. onnx: which of the two the file is meant to be (None: by its suffix)."""
    path = Path(path)
    if (path.suffix == ".onnx") if onnx is None else onnx:
        provider = "cuda" if device.type == "cuda" else "cpu"
        model = ColorizerModel(path, provider=provider, size=input_size, temperature=temperature)
        return model.predict_ab, model.info, path.stem
    model, meta = load_colorizer(path)
    info = model.info(meta).resolve(input_size, temperature if model.has_temperature else None)
    if info.temperature is not None:
        model.set_temperature(info.temperature)
    return evaluation.torch_predictor(model, device), info, meta["preset"]


def evaluation_sets(args) -> list[str]:
    """--sets, or every set the given folders hold; DataError for a set that is unknown or not given."""
    given = evaluation.available_sets(args.data, args.photos)
    names = args.sets if args.sets is not None else given
    unknown = [name for name in names if name not in evaluation.SETS]
    if unknown or not names:
        raise engine.UsageError(f"unknown --sets {','.join(unknown)!r}; choose from {', '.join(evaluation.SETS)}")
    missing = [name for name in names if name not in given]
    if missing:
        raise engine.UsageError(f"--sets {','.join(missing)}: not under {args.data} (general needs general/index.csv "
                                 "there, photos needs --photos DIR)")
    return names


def evaluate(args):
    names = evaluation_sets(args)
    if args.grid and args.grid.exists() and not args.overwrite:  # before the work, not after it
        raise engine.UsageError(f"{args.grid} exists; pass --overwrite to replace it")
    device = engine.setup_device(args.device)
    predict_ab, info, label = load_predictor(args.checkpoint or args.onnx, device, args.temperature,
                                             onnx=args.onnx is not None, input_size=args.input_size)
    results = {"model": str(args.checkpoint or args.onnx), "preset": label, "subset": args.subset}
    grid_rows = []
    for name in names:
        paths, groups, size = evaluation.subset_images(args.data, name, args.subset, args.split, args.limit,
                                                       photos=args.photos)
        keep = args.grid_images if args.grid else 0
        result = evaluation.evaluate_colorizer(predict_ab, info, paths, groups, size, keep=keep, damage=args.damage)
        grid_rows += result.pop("pairs", [])
        results[name] = result
        protocol = ", damaged old-print protocol" if args.damage else ""
        title = f"{name} {args.subset} ({result['images']} images, {size or 'own'} px{protocol})"
        print(f"{title}\n{evaluation.format_table(result, label)}\n", file=sys.stderr if args.json else sys.stdout)
    if args.grid:
        write_comparison_grid(args, grid_rows, (predict_ab, info, Path(args.checkpoint or args.onnx).name), device)
    if args.json:
        print(evaluation.json_line(results))


def tune(args):
    """Choose the inference input size and (default preset) the annealed-mean temperature on the valid subsets:
    the highest mean PSNR over the sets whose colourfulness ratio reaches --min-colorfulness on every set. Writes
    the choice into the checkpoint (in place unless --out), with the table it was chosen from."""
    device = engine.setup_device(args.device)
    checkpoint = engine.load_checkpoint(args.checkpoint)
    model, meta = load_colorizer(args.checkpoint)
    names = evaluation.available_sets(args.data, args.photos)
    sets = [(n, *evaluation.subset_images(args.data, n, "valid", args.split, limit=args.limit, photos=args.photos))
            for n in names]
    temperatures = args.temperatures if model.has_temperature else [None]
    predict_ab = evaluation.torch_predictor(model, device)
    table = []
    for input_size in args.input_sizes:
        for temperature in temperatures:
            info = model.info(meta).resolve(input_size, temperature)
            if temperature is not None:
                model.set_temperature(temperature)
            row = {"input_size": input_size, "temperature": temperature}
            for name, paths, groups, size in sets:
                result = evaluation.evaluate_colorizer(predict_ab, info, paths, groups, size)
                row.update({f"{name}_{k}": round(result[k], 4) for k in ("psnr", "colorfulness_ratio", "auc")})
            row["psnr"] = round(float(np.mean([row[f"{n}_psnr"] for n in names])), 4)
            table.append(row)
            print(json.dumps(row), file=sys.stderr)
    eligible = [r for r in table if all(r[f"{n}_colorfulness_ratio"] >= args.min_colorfulness for n in names)] or table
    best = max(eligible, key=lambda r: r["psnr"])
    meta = dict(meta, input_size=best["input_size"], tuning={"subset": "valid", "limit": args.limit,
                "min_colorfulness": args.min_colorfulness, "chosen": best, "table": table})
    state = dict(checkpoint["model"])
    if best["temperature"] is not None:
        state["temperature"] = torch.tensor(float(best["temperature"]))
        meta["model_kwargs"] = dict(meta.get("model_kwargs", {}), temperature=best["temperature"])
    engine.atomic_save({"model": state, "meta": meta}, args.out or args.checkpoint)
    print(f"chosen on valid: {json.dumps(best)} -> {args.out or args.checkpoint}")


def write_comparison_grid(args, pairs, model, device):
    """gray input | --grid-with model | this model (predict_ab, info, label) | ground truth, one row per kept image.
    With --damage the input is the damaged print and both models colour the print itself, its damage included (what
    a user who scans it gets; the scores judge the same colours merged with the clean L*)."""
    if args.grid.exists() and not args.overwrite:
        raise engine.UsageError(f"{args.grid} exists; pass --overwrite to replace it")
    names, truths = [name for name, _, _ in pairs], [truth for _, truth, _ in pairs]
    predict_ab, info, label = model
    if args.damage:
        inputs = [cv2.cvtColor(evaluation.damaged_print(t, n), cv2.COLOR_GRAY2BGR) for n, t in zip(names, truths)]
        columns = [("damaged print", inputs), (label, [contract.colorize(predict_ab, p, info) for p in inputs])]
    else:
        inputs = truths
        columns = [("gray input", [contract.gray_baseline(t) for t in truths]),
                   (label, [output for _, _, output in pairs])]
    if args.grid_with:
        other, other_info, _ = load_predictor(args.grid_with, device)
        other_label = Path(args.grid_with).name  # file names: two checkpoints of one preset stay apart
        columns.insert(1, (other_label, [contract.colorize(other, image, other_info) for image in inputs]))
    columns.append(("ground truth", truths))
    evaluation.write_grid(args.grid, columns)
    print(f"grid written to {args.grid}", file=sys.stderr)


def get_args_parser():
    parser = argparse.ArgumentParser(description="Train and evaluate the colorizers", prog="python -m train.colorizer")
    sub = parser.add_subparsers(dest="command", required=True)

    common = engine.add_common_arguments
    f = sub.add_parser("fit", help="train a colorizer (or --resume)")
    common(f)
    add_fit_arguments(f)
    f.set_defaults(func=fit)

    e = sub.add_parser("evaluate", help="PSNR, SSIM, colourfulness and AuC on a subset, against the gray baseline")
    common(e)
    source = e.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path)
    source.add_argument("--onnx", type=Path)
    e.add_argument("--data", type=Path, required=True, help="data root: the folder that holds flowers-102/ and general/")
    e.add_argument("--subset", default="test", choices=list(datasets.SUBSETS))
    e.add_argument("--photos", type=Path, help="staged everyday photos (index.csv + jpg/): the set 'photos'")
    e.add_argument("--sets", type=lambda s: s.split(","), default=None,
                   help="comma-separated: flowers (scored at 256x256), general (at its own 144 px), photos (at their "
                        "own 192 px, needs --photos); default: all that are given")
    e.add_argument("--damage", action="store_true", help="the old-print protocol: the model sees damaged L* "
                   "(train.degrade, a fixed seed per file), colour is judged with the clean L*")
    e.add_argument("--overwrite", action="store_true", help="let --grid replace an existing file")
    e.add_argument("--input-size", type=int, default=None, help="model input size (default: the model's own)")
    e.add_argument("--temperature", type=float, default=None, help="override the annealed-mean temperature")
    e.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    e.add_argument("--grid", type=Path, help="write gray | --grid-with | model | truth for a few images")
    e.add_argument("--grid-with", type=Path, help="a second model (.pt or .onnx) for the grid, e.g. the seed preset")
    e.add_argument("--grid-images", type=int, default=6)
    e.set_defaults(func=evaluate)

    t = sub.add_parser("tune", help="choose input size and temperature on the valid subset; store them")
    common(t)
    t.add_argument("--checkpoint", type=Path, required=True)
    t.add_argument("--data", type=Path, required=True, help="data root (flowers-102/ and, if there, general/)")
    t.add_argument("--photos", type=Path, help="staged everyday photos (index.csv + jpg/): tuned on as well")
    t.add_argument("--input-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[128, 160, 224])
    t.add_argument("--temperatures", type=lambda s: [float(v) for v in s.split(",")], default=[0.38])
    t.add_argument("--min-colorfulness", type=float, default=0.6,
                   help="colourfulness ratio the choice must reach on every set")
    t.add_argument("--out", type=Path, help="default: update the checkpoint in place")
    t.set_defaults(func=tune)
    return parser


def add_fit_arguments(f) -> None:
    """fit's own options (get_args_parser adds the common ones)."""
    f.add_argument("--data", type=Path, help="data root: the folder that holds flowers-102/ and general/ (train on "
                   "their train subsets)")
    f.add_argument("--sources", default="all", choices=["all", "flowers", "general"],
                   help="with --data: which sets to train on (all: both, each once per epoch)")
    f.add_argument("--photos", type=Path, help="staged everyday photos (index.csv + jpg/, ../shared/tools/"
                   "stage_photos.py): their train split joins the mix")
    f.add_argument("--images", type=Path, help="any folder of photos, recursive, no labels (your own domain); joins "
                   "the mix as the set 'images'")
    f.add_argument("--mix", type=parse_mix, default={}, metavar="SET=PASSES,...",
                   help="passes per epoch of each set (flowers, general, photos, images; default 1 each), e.g. "
                        "flowers=0.5,general=1,photos=1; SET/SOURCE weighs one source of general or photos on its "
                        "own, e.g. photos=0.2,photos/cars=1")
    f.add_argument("--damage", type=probability, default=0.0, metavar="P",
                   help="share of crops the network sees as damaged old prints (train.degrade); the target stays "
                        "the clean colour (0.4's recipe: 0.5)")
    f.add_argument("--init", type=Path, help="warm start from a colorizer checkpoint of the same preset (its "
                   "weights; the schedule starts afresh)")
    f.add_argument("--classifier", type=Path, help="classifier checkpoint whose encoder initialises the colorizer")
    f.add_argument("--preset", default="default", choices=sorted(PRESET_DEFAULTS))
    f.add_argument("--encoder-init", default="classifier", choices=["classifier", "none"])
    f.add_argument("--epochs", type=positive_int, default=30)
    f.add_argument("--image-size", type=positive_int, default=128, help="training crop size")
    f.add_argument("--input-size", type=positive_int, default=None,
                   help="preferred inference size (default 1.25 x crop)")
    f.add_argument("--batch-size", type=positive_int, default=32)
    f.add_argument("--lr", type=engine.positive_float, default=None, help="default: the preset's")
    f.add_argument("--temperature", type=engine.positive_float, default=0.38,
                   help="annealed-mean temperature (default preset)")
    f.add_argument("--regression-weight", type=engine.non_negative_float, default=10.0,
                   help="default preset: weight of the smooth-L1 loss on the decoded annealed mean (0: bins only)")
    f.add_argument("--overshoot-weight", type=engine.non_negative_float, default=0.0,
                   help="default preset: weight of the hinge on predicted chroma beyond the truth's + 10 (against "
                        "confident wrong colour, evaluate's false-colour figure; 0: off, 0.4's recipe)")
    f.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    f.add_argument("--workers", type=int, default=1)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--valid-images", type=int, default=200, help="valid images scored after each epoch (0: none)")
    engine.add_run_arguments(f, "colorizer", "the model to write")


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if args.command == "fit" and not (args.data or args.images or args.photos):
        fail("fit needs --data (Flowers-102 and general), --photos (staged photos) or --images (a folder of photos)",
             code=2)
    engine.run_command(args, usage_errors=(contract.ContractError, ModelError, ProviderError, ValueError),
                       fit_kind="colorizer")


if __name__ == "__main__":
    main()
