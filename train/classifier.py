"""Train and evaluate the L-channel ResNet-18 classifier: Flowers-102's 102 classes plus, when the data root holds
general/, the classes of its labelled sources (caltech101, intel-scenes, houses): 211 in all.

    python -m train.classifier fit --data ../shared/data --epochs 40 [--sources flowers] [--init OLD.pt]
    python -m train.classifier evaluate --checkpoint checkpoints/classifier.pt --data ../shared/data --subset valid --json
    torchrun --nproc_per_node=2 -m train.classifier fit --data ../shared/data     # DistributedDataParallel

Only L reaches the network: images are converted to Lab after augmentation and a, b are dropped.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from tqdm import tqdm

from train import data as datasets
from runtime.cli import positive_int
from runtime.fileio import first_line
from train import engine
from train.data import ImageArrayDataset
from train.lab import L_CENTER, L_SCALE, normalize_l, uint8_rgb_to_lab
from train.models.classifier import resnet18_gray

CROP_RATIO = 0.875  # evaluation: shorter side to size / 0.875, centre crop to size (the ImageNet habit)


def stored_size(image_size: int) -> int:
    return int(round(image_size / CROP_RATIO))


def train_transform(image_size: int):
    return v2.Compose([v2.RandomResizedCrop(image_size, scale=(0.25, 1.0), antialias=True), v2.RandomHorizontalFlip()])


def eval_transform(image_size: int):
    return v2.CenterCrop(image_size)


def lightness_input(images_uint8: torch.Tensor, device, jitter: bool = False) -> torch.Tensor:
    """uint8 RGB batch -> normalised L [N, 1, H, W]; with jitter, random per-image contrast and brightness on L."""
    lightness = uint8_rgb_to_lab(images_uint8.to(device, non_blocking=True))[:, :1]
    if jitter:
        n = lightness.shape[0]
        contrast = torch.empty(n, 1, 1, 1, device=device).uniform_(0.7, 1.3)
        brightness = torch.empty(n, 1, 1, 1, device=device).uniform_(-10.0, 10.0)
        mean = lightness.mean(dim=(2, 3), keepdim=True)
        lightness = ((lightness - mean) * contrast + mean + brightness).clamp(0.0, 100.0)
    return normalize_l(lightness).contiguous(memory_format=torch.channels_last)


def load_subset(args, subset: str, image_size: int, general: bool = True):
    """-> (uint8 images, labels tensor, source of each image, class names)."""
    paths, labels, groups, names = datasets.labelled_subset(args.data, subset, args.split, args.limit, general)
    images = datasets.load_image_array(paths, stored_size(image_size), args.cache_dir, desc=f"decoding {subset}")
    return images, torch.tensor(labels), groups, names


@torch.no_grad()
def evaluate_model(model, images, labels, groups, image_size, device, batch_size=128, progress=False):
    """Top-1 counts over the whole subset, in fp32 and in a fixed order, so one checkpoint gives one number on
    any machine: -> {correct, images, top1, top5, per source {correct, images}, flowers_102way {correct, images}}.
    flowers_102way scores flower images among the 102 flower classes only (comparable with a flower-only model)."""
    model.eval()
    loader = DataLoader(ImageArrayDataset(images, labels, eval_transform(image_size)), batch_size=batch_size)
    hits1, hits5, hits_flower = [], [], []
    for batch, target in tqdm(loader, desc="evaluate", leave=False, disable=None if progress else True):
        logits = model(lightness_input(batch, device)).float()
        target = target.to(device)
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits1.append((top5[:, 0] == target).cpu())
        hits5.append((top5 == target[:, None]).any(dim=1).cpu())
        hits_flower.append((logits[:, : datasets.FLOWER_CLASSES].argmax(1) == target).cpu())
    hits1, hits5, hits_flower = torch.cat(hits1), torch.cat(hits5), torch.cat(hits_flower)
    total = len(hits1)
    per_source = {}
    for i, group in enumerate(groups):
        entry = per_source.setdefault(group, {"correct": 0, "images": 0})
        entry["correct"] += int(hits1[i])
        entry["images"] += 1
    is_flower = torch.tensor([g == "flowers" for g in groups], dtype=torch.bool)
    return {
        "correct": int(hits1.sum()),
        "images": total,
        "top1": int(hits1.sum()) / max(total, 1),
        "top5": int(hits5.sum()) / max(total, 1),
        "per_source": per_source,
        "flowers_102way": {"correct": int(hits_flower[is_flower].sum()), "images": int(is_flower.sum())},
    }


def describe(result: dict) -> str:
    lines = [f"all: top-1 {result['top1']:.4f} ({result['correct']}/{result['images']})  top-5 {result['top5']:.4f}"]
    f = result["flowers_102way"]
    if f["images"]:
        lines.append(f"flowers, 102-way: top-1 {f['correct'] / f['images']:.4f} ({f['correct']}/{f['images']})")
    for source, entry in result["per_source"].items():
        lines.append(f"{source}: top-1 {entry['correct'] / entry['images']:.4f} ({entry['correct']}/{entry['images']})")
    return "\n".join(lines)


def warm_start(model, path, class_names: list[str]) -> None:
    """Initialise from another classifier checkpoint: every layer but fc, and the fc rows of the classes both
    know (a flower-only checkpoint's 102 rows are the flower classes)."""
    checkpoint = engine.load_checkpoint(path)
    state = {k: v.float() for k, v in checkpoint["model"].items()}
    old_names = checkpoint.get("meta", {}).get("classes") or [f"flowers/{i + 1:03d}" for i in range(state["fc.weight"].shape[0])]
    weight, bias = model.fc.weight.detach().clone(), model.fc.bias.detach().clone()
    index = {name: i for i, name in enumerate(old_names)}
    for row, name in enumerate(class_names):
        if name in index:
            weight[row], bias[row] = state["fc.weight"][index[name]], state["fc.bias"][index[name]]
    state["fc.weight"], state["fc.bias"] = weight, bias
    model.load_state_dict(state)


def fit(args):
    """Train (or --resume; engine.start_run checked where it writes); --out is the best epoch on valid."""
    device = engine.setup_device(args.device)
    _, world_size, _ = engine.distributed_env()
    engine.seed_everything(args.seed)
    amp_dtype = engine.autocast_dtype(device, args.amp)
    state_path, log = args.run_dir / engine.STATE_FILE, engine.EpochLog(args.run_dir / engine.LOG_FILE)
    eval_size = args.eval_image_size or args.image_size

    if args.download and engine.is_main_process():
        datasets.download_flowers(args.data)
    engine.barrier()
    general = args.sources == "all"
    train_images, train_labels, _, class_names = load_subset(args, "train", args.image_size, general)
    valid = load_subset(args, "valid", eval_size, general)[:3]

    train_set = ImageArrayDataset(train_images, train_labels, train_transform(args.image_size))
    loader, sampler = engine.train_loader(train_set, args.batch_size, args.workers, args.seed)

    model = resnet18_gray(num_classes=len(class_names))
    if args.init:
        warm_start(model, args.init, class_names)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        engine.param_groups(model, args.weight_decay), lr=args.lr, momentum=0.9, nesterov=True
    )
    steps_per_epoch = max(1, len(loader))
    scheduler = engine.warmup_cosine(optimizer, args.epochs * steps_per_epoch, args.warmup_epochs * steps_per_epoch)
    scaler = engine.make_grad_scaler(device, amp_dtype)
    state = engine.resume_training_state(state_path, model, optimizer, scheduler, scaler) if args.resume else None
    start_epoch, best_top1 = (state["epoch"] + 1, state["best_top1"]) if state is not None else (0, -1.0)

    def compute_loss(net, batch):
        images, target = batch
        target = target.to(device, non_blocking=True)
        logits = net(lightness_input(images, device, jitter=True))
        loss = F.cross_entropy(logits.float(), target, label_smoothing=args.label_smoothing)
        return loss, target.numel(), {"train_top1": (logits.argmax(1) == target).sum().item()}

    ddp_model = engine.wrap_distributed(model, device)
    for epoch in range(start_epoch, args.epochs):
        timer = engine.Timer()
        record = engine.train_one_epoch(ddp_model, loader, compute_loss, optimizer, scheduler, scaler, device,
                                        amp_dtype, epoch, args.epochs, sampler)
        engine.check_weights(model, epoch, args)  # on every rank: DDP keeps their weights equal
        if engine.is_main_process():
            metrics = score_epoch(model, class_names, valid, eval_size, device)
            record.update(epoch=epoch + 1, lr=optimizer.param_groups[0]["lr"], seconds=round(timer.seconds(), 1),
                          world_size=world_size)
            line = epoch_record(record, metrics)
            log.append(line)
            print(engine.strict_json(line), file=sys.stderr)
            if metrics["top1"] > best_top1:
                best_top1 = metrics["top1"]
                engine.atomic_save(shipped_checkpoint(model, args, epoch + 1, metrics, class_names, eval_size), args.out)
            engine.save_training_state(state_path, model, optimizer, scheduler, scaler, epoch, args, best_top1=best_top1)
        engine.barrier()
    if engine.is_main_process():
        print(f"best valid top-1 {best_top1:.4f}; model at {args.out}; log at {log.path}", file=sys.stderr)
    engine.cleanup_distributed()


def score_epoch(model, class_names, valid, eval_size, device) -> dict:
    """Score the weights as shipped (fp16), so the counts recorded are the ones `evaluate` reproduces."""
    shipped = resnet18_gray(num_classes=len(class_names))
    shipped.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in engine.half_state_dict(model).items()})
    shipped = shipped.to(device, memory_format=torch.channels_last)
    return evaluate_model(shipped, *valid, eval_size, device)


def epoch_record(record: dict, metrics: dict) -> dict:
    """train_one_epoch's record and the valid scores -> the log line (epoch first)."""
    flower = metrics["flowers_102way"]
    return {"epoch": record["epoch"], **{k: v for k, v in record.items() if k != "epoch"},
            "valid_top1": metrics["top1"], "valid_top5": metrics["top5"],
            "valid_flowers_102way": flower["correct"] / max(flower["images"], 1),
            "valid_per_source": metrics["per_source"]}


def shipped_checkpoint(model, args, epoch: int, valid: dict, class_names: list[str], eval_size: int) -> dict:
    """The slim file we ship: fp16 weights plus what is needed to use them, and the valid counts that
    `evaluate` reproduces (fp32, fixed order) at eval_image_size."""
    return {
        "model": engine.half_state_dict(model),
        "meta": {
            "arch": f"resnet18, conv1 Conv2d(1, 64, 7, 2, 3, bias=False), {len(class_names)} classes",
            "input": "L channel of CIE Lab, normalised as (L - l_center) / l_scale",
            "l_center": L_CENTER,
            "l_scale": L_SCALE,
            "classes": class_names,
            "image_size": args.image_size,
            "eval_image_size": eval_size,
            "split": args.split,
            "epochs_trained": epoch,
            "epochs_planned": args.epochs,
            "valid_top1": valid["top1"],
            "valid_top5": valid["top5"],
            "valid_correct": valid["correct"],
            "valid_images": valid["images"],
            "valid_per_source": valid["per_source"],
            "valid_flowers_102way": valid["flowers_102way"],
            "args": engine.vars_for_checkpoint(args),
        },
    }


def load_classifier(path):
    """-> (model on CPU in eval mode, meta) from a classifier checkpoint; CheckpointError if it is not one."""
    checkpoint = engine.load_checkpoint(path)
    state = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise engine.CheckpointError(f"{path} is not a classifier checkpoint (no fc layer)")
    model = resnet18_gray(num_classes=state["fc.weight"].shape[0])
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (RuntimeError, AttributeError) as exc:
        raise engine.CheckpointError(f"{path}: its weights do not fit the L-channel ResNet-18 "
                                     f"({first_line(exc)})") from None
    meta = checkpoint.get("meta")
    return model.eval(), meta if isinstance(meta, dict) else {}


def evaluate(args):
    device = engine.setup_device(args.device)
    model, meta = load_classifier(args.checkpoint)
    image_size = args.image_size or meta.get("eval_image_size") or meta.get("image_size", 112)
    general = model.fc.out_features > datasets.FLOWER_CLASSES
    images, labels, groups, names = load_subset(args, args.subset, image_size, general)
    known = meta.get("classes")
    if known and list(known[: len(names)]) != names:  # the labels would index other classes: wrong counts
        raise engine.CheckpointError(f"{args.checkpoint} was trained on other classes than {args.data} holds "
                                     f"({len(known)} classes, the data {len(names)})")
    model = model.to(device, memory_format=torch.channels_last)
    result = evaluate_model(model, images, labels, groups, image_size, device, progress=True)
    result.update(subset=args.subset, split=args.split, image_size=image_size)
    print(describe(result), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result))


def get_args_parser():
    parser = argparse.ArgumentParser(description="L-channel ResNet-18 flower classifier", prog="python -m train.classifier")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--data", required=True, type=Path, help="data root: the folder that holds flowers-102/ "
                       "(and general/, whose labelled sources are used when present)")
        engine.add_common_arguments(p, "use only this many images per subset (smoke tests)")

    f = sub.add_parser("fit", help="train from scratch (or --resume)")
    common(f)
    f.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"], help="training only; "
                   "evaluation is always fp32")
    f.add_argument("--sources", default="all", choices=["all", "flowers"],
                   help="all: Flowers-102 and the labelled general sources (if general/ is there); flowers: 102 classes")
    f.add_argument("--init", type=Path, help="warm start from this classifier checkpoint (fc rows kept per class)")
    f.add_argument("--eval-image-size", type=positive_int, default=None, help="valid evaluation size (default: --image-size)")
    f.add_argument("--epochs", type=positive_int, default=40)
    f.add_argument("--image-size", type=positive_int, default=112)
    f.add_argument("--batch-size", type=positive_int, default=64, help="global batch, split across torchrun processes")
    f.add_argument("--lr", type=engine.positive_float, default=0.1)
    f.add_argument("--weight-decay", type=engine.non_negative_float, default=5e-4)
    f.add_argument("--label-smoothing", type=engine.non_negative_float, default=0.1)
    f.add_argument("--warmup-epochs", type=int, default=2)
    f.add_argument("--workers", type=int, default=1)
    f.add_argument("--seed", type=int, default=0)
    engine.add_run_arguments(f, "classifier", "the best-on-valid model")
    f.add_argument("--download", action="store_true", help="opt-in: fetch Flowers-102 with torchvision (internet)")
    f.set_defaults(func=fit)

    e = sub.add_parser("evaluate", help="top-1 / top-5 of a checkpoint on one subset")
    common(e)
    e.add_argument("--checkpoint", required=True, type=Path)
    e.add_argument("--subset", default="valid", choices=list(datasets.SUBSETS))
    e.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's")
    e.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    e.set_defaults(func=evaluate)
    return parser


def main(argv=None):
    engine.run_command(get_args_parser().parse_args(argv), fit_kind="classifier")


if __name__ == "__main__":
    main()
