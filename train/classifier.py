"""Train and evaluate the ResNet-18 flower classifier on the L channel of Flowers-102.

    python -m train.classifier fit --data ../shared/data --epochs 40
    python -m train.classifier evaluate --checkpoint checkpoints/classifier.pt --data ../shared/data --subset valid --json
    torchrun --nproc_per_node=2 -m train.classifier fit --data ../shared/data     # DistributedDataParallel

Only L reaches the network: images are converted to Lab after augmentation and a, b are dropped.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from tqdm import tqdm

from train import data as flowers
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


def load_subset(args, subset: str, image_size: int):
    paths, labels = flowers.flowers_subset(args.data, subset, args.split, limit=args.limit)
    images = flowers.load_image_array(paths, stored_size(image_size), args.cache_dir, desc=f"decoding {subset}")
    return images, torch.tensor(labels)


@torch.no_grad()
def evaluate_model(model, images, labels, image_size, device, amp_dtype, batch_size=128, progress=False):
    """-> dict(top1, top5, images) over the whole subset."""
    model.eval()
    loader = DataLoader(ImageArrayDataset(images, labels, eval_transform(image_size)), batch_size=batch_size)
    correct1 = correct5 = total = 0
    for batch, target in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        with engine.autocast(device, amp_dtype):
            logits = model(lightness_input(batch, device)).float()
        target = target.to(device)
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += (top5[:, 0] == target).sum().item()
        correct5 += (top5 == target[:, None]).any(dim=1).sum().item()
        total += target.numel()
    return {"top1": correct1 / max(total, 1), "top5": correct5 / max(total, 1), "images": total}


def fit(args):
    device = engine.setup_device(args.device)
    _, world_size, _ = engine.distributed_env()
    engine.seed_everything(args.seed)
    amp_dtype = engine.autocast_dtype(device, args.amp)
    run_dir = Path(args.run_dir)
    state_path, log = run_dir / "last.pt", engine.EpochLog(run_dir / "log.jsonl")

    if args.download and engine.is_main_process():
        flowers.download_flowers(args.data)
    engine.barrier()
    train_images, train_labels = load_subset(args, "train", args.image_size)
    valid_images, valid_labels = load_subset(args, "valid", args.image_size)

    train_set = ImageArrayDataset(train_images, train_labels, train_transform(args.image_size))
    loader, sampler = engine.train_loader(train_set, args.batch_size, args.workers, args.seed)

    model = resnet18_gray(num_classes=102).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        engine.param_groups(model, args.weight_decay), lr=args.lr, momentum=0.9, nesterov=True
    )
    steps_per_epoch = max(1, len(loader))
    scheduler = engine.warmup_cosine(optimizer, args.epochs * steps_per_epoch, args.warmup_epochs * steps_per_epoch)
    scaler = engine.make_grad_scaler(device, amp_dtype)
    start_epoch, best_top1 = 0, -1.0

    state = engine.resume_training_state(state_path, model, optimizer, scheduler, scaler) if args.resume else None
    if state is not None:
        start_epoch, best_top1 = state["epoch"] + 1, state["best_top1"]
    elif state_path.is_file() and engine.is_main_process():
        print(f"note: {state_path} exists; starting over (pass --resume to continue it)", file=sys.stderr)

    ddp_model = engine.wrap_distributed(model, device)
    for epoch in range(start_epoch, args.epochs):
        timer = engine.Timer()
        ddp_model.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
        loss_sum = correct = seen = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False, disable=not engine.is_main_process())
        for images, target in bar:
            inputs = lightness_input(images, device, jitter=True)
            target = target.to(device, non_blocking=True)
            with engine.autocast(device, amp_dtype):
                logits = ddp_model(inputs)
                loss = F.cross_entropy(logits.float(), target, label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if not math.isfinite(loss.item()):
                engine.fail(f"loss is {loss.item()} at epoch {epoch + 1}; lower --lr", code=1)
            loss_sum += loss.item() * target.numel()
            correct += (logits.argmax(1) == target).sum().item()
            seen += target.numel()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")

        if engine.is_main_process():
            metrics = evaluate_model(model, valid_images, valid_labels, args.image_size, device, amp_dtype)
            record = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / max(seen, 1),
                "train_top1": correct / max(seen, 1),
                "valid_top1": metrics["top1"],
                "valid_top5": metrics["top5"],
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": round(timer.seconds(), 1),
                "world_size": world_size,
            }
            log.append(record)
            print(json.dumps(record), file=sys.stderr)
            if metrics["top1"] > best_top1:
                best_top1 = metrics["top1"]
                engine.atomic_save(shipped_checkpoint(model, args, epoch + 1, metrics), args.out)
            engine.save_training_state(state_path, model, optimizer, scheduler, scaler, epoch, args, best_top1=best_top1)
        engine.barrier()
    if engine.is_main_process():
        print(f"best valid top-1 {best_top1:.4f}; model at {args.out}; log at {log.path}", file=sys.stderr)
    engine.cleanup_distributed()


def shipped_checkpoint(model, args, epoch: int, valid_metrics: dict) -> dict:
    """The slim file we ship: fp16 weights plus what is needed to use them."""
    return {
        "model": engine.half_state_dict(model),
        "meta": {
            "arch": "resnet18, conv1 Conv2d(1, 64, 7, 2, 3, bias=False), 102 classes",
            "input": "L channel of CIE Lab, normalised as (L - l_center) / l_scale",
            "l_center": L_CENTER,
            "l_scale": L_SCALE,
            "image_size": args.image_size,
            "eval_resize": stored_size(args.image_size),
            "split": args.split,
            "epochs_trained": epoch,
            "epochs_planned": args.epochs,
            "valid_top1": valid_metrics["top1"],
            "valid_top5": valid_metrics["top5"],
            "args": engine.vars_for_checkpoint(args),
        },
    }


def evaluate(args):
    device = engine.setup_device(args.device)
    checkpoint = engine.load_checkpoint(args.checkpoint)
    meta = checkpoint.get("meta", {})
    image_size = args.image_size or meta.get("image_size") or checkpoint.get("args", {}).get("image_size", 112)
    model = resnet18_gray(num_classes=102)
    model.load_state_dict(checkpoint["model"])
    model = model.to(device, memory_format=torch.channels_last)
    images, labels = load_subset(args, args.subset, image_size)
    result = evaluate_model(
        model, images, labels, image_size, device, engine.autocast_dtype(device, args.amp), progress=True
    )
    if args.json:
        print(json.dumps({**result, "subset": args.subset, "split": args.split, "image_size": image_size}))
    else:
        print(f"{args.subset}: top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}  ({result['images']} images)")


def get_args_parser():
    parser = argparse.ArgumentParser(description="L-channel ResNet-18 flower classifier", prog="python -m train.classifier")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--data", required=True, type=Path, help="folder that holds flowers-102/")
        p.add_argument("--split", default="seed", choices=["seed", "official"])
        p.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
        p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
        p.add_argument("--cache-dir", type=Path, default=flowers.default_cache_dir(), help="decoded-image cache")
        p.add_argument("--limit", type=int, default=None, help="use only this many images per subset (smoke tests)")

    f = sub.add_parser("fit", help="train from scratch (or --resume)")
    common(f)
    f.add_argument("--epochs", type=int, default=40)
    f.add_argument("--image-size", type=int, default=112)
    f.add_argument("--batch-size", type=int, default=64, help="global batch, split across torchrun processes")
    f.add_argument("--lr", type=float, default=0.1)
    f.add_argument("--weight-decay", type=float, default=5e-4)
    f.add_argument("--label-smoothing", type=float, default=0.1)
    f.add_argument("--warmup-epochs", type=int, default=2)
    f.add_argument("--workers", type=int, default=1)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", type=Path, default=Path("checkpoints/classifier.pt"), help="best-on-valid model (shipped)")
    f.add_argument("--run-dir", type=Path, default=Path("runs/classifier"), help="resumable state and log.jsonl")
    f.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    f.add_argument("--download", action="store_true", help="opt-in: fetch Flowers-102 with torchvision (internet)")
    f.set_defaults(func=fit)

    e = sub.add_parser("evaluate", help="top-1 / top-5 of a checkpoint on one subset")
    common(e)
    e.add_argument("--checkpoint", required=True, type=Path)
    e.add_argument("--subset", default="valid", choices=list(flowers.SUBSETS))
    e.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's")
    e.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    e.set_defaults(func=evaluate)
    return parser


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    try:
        args.func(args)
    except (flowers.DataError, FileNotFoundError) as exc:
        engine.fail(str(exc))
    except KeyboardInterrupt:
        engine.fail("interrupted; run again with --resume to continue", code=130)


if __name__ == "__main__":
    main()
