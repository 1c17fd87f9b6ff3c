"""What every training script shares: device and precision choice, torchrun/DDP, seeding,
atomic checkpoints, resumable state and the per-epoch JSON log."""

import contextlib
import hashlib
import math
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from train.data import DataError


# ---------------------------------------------------------------- device, precision, distribution
def distributed_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) as torchrun sets them; (0, 1, 0) when run plainly."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def setup_device(requested: str = "auto") -> torch.device:
    """Pick cuda, mps or cpu and, under torchrun, join the process group (nccl on CUDA, gloo on CPU)."""
    rank, world_size, local_rank = distributed_env()
    if requested == "auto":
        if torch.cuda.is_available():
            requested = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            requested = "mps"
        else:
            requested = "cpu"
    device = torch.device(f"cuda:{local_rank}" if requested == "cuda" else requested)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def autocast_dtype(device: torch.device, amp: str):
    """The autocast dtype for --amp: bf16 on CPUs with native bf16 (AMX/AVX512-BF16) and on modern
    GPUs, fp16 on older GPUs; None means full fp32."""
    if amp == "off" or device.type == "mps":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def cpu_has_fast_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def autocast(device: torch.device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, dtype):
    """Loss scaling is only needed for fp16."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")


def seed_everything(seed: int) -> None:
    rank, _, _ = distributed_env()
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def wrap_distributed(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if not dist.is_initialized():
        return model
    if device.type == "cuda":
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return torch.nn.parallel.DistributedDataParallel(model)


def param_groups(model: torch.nn.Module, weight_decay: float):
    """No weight decay on norms and biases: it only fights their scale."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(optimizer, total_steps: int, warmup_steps: int):
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_loader(dataset, batch_size: int, workers: int, seed: int):
    """A shuffling loader; under torchrun a DistributedSampler gives each process its share of the global batch.
    -> (loader, sampler or None; call sampler.set_epoch(epoch) every epoch)."""
    _, world_size, _ = distributed_env()
    sampler = DistributedSampler(dataset, seed=seed, drop_last=True) if world_size > 1 else None
    per_rank_batch = max(1, batch_size // world_size)
    loader = DataLoader(
        dataset,
        batch_size=per_rank_batch,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=len(dataset) >= per_rank_batch * world_size,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    return loader, sampler


# ---------------------------------------------------------------- the training loop
class TrainingError(Exception):
    """Training cannot go on (a non-finite loss); the message is shown to the user as one line."""


def train_one_epoch(model, loader, compute_loss, optimizer, scheduler, scaler, device, amp_dtype, epoch: int,
                    epochs: int, sampler=None) -> dict:
    """One pass over loader, shared by every training script. compute_loss(model, batch) -> (loss, batch size,
    {name: sum over the batch}); the loss is checked before the optimiser step, so a NaN never reaches the
    weights. -> {"train_loss": mean, name: mean for each extra}."""
    model.train()
    if sampler is not None:
        sampler.set_epoch(epoch)
    sums, seen = {"train_loss": 0.0}, 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not is_main_process())
    for batch in bar:
        with autocast(device, amp_dtype):
            loss, size, extra = compute_loss(model, batch)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingError(f"loss is {value} at epoch {epoch + 1}; lower --lr (the saved weights are unchanged)")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        seen += size
        sums["train_loss"] += value * size
        for name, total in extra.items():
            sums[name] = sums.get(name, 0.0) + float(total)
        bar.set_postfix({k: f"{v / seen:.4f}" for k, v in sums.items()})
    return {k: v / max(seen, 1) for k, v in sums.items()}


# ---------------------------------------------------------------- files
def atomic_save(obj, path) -> None:
    """torch.save through runtime.fileio.write_atomic: a kill never leaves half a file."""
    from runtime.fileio import write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


class CheckpointError(Exception):
    """A checkpoint that is missing, damaged or of the wrong kind; the message is shown as one line."""


def load_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise CheckpointError(f"{path} is not a checkpoint of this project (no model state dict)")
    return checkpoint


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_training_state(path, model, optimizer, scheduler, scaler, epoch: int, args, **extra) -> None:
    """Everything --resume needs, written atomically (rank 0 calls this once per epoch)."""
    atomic_save(
        {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "rng": rng_state(),
            "args": vars_for_checkpoint(args),
            **extra,
        },
        path,
    )


def resume_training_state(path, model, optimizer, scheduler, scaler) -> dict | None:
    """Load what save_training_state wrote into the live objects; -> the state dict (epoch, extras) or None."""
    path = Path(path)
    if not path.is_file():
        return None
    state = load_checkpoint(path)
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"])
    if is_main_process():
        print(f"resumed from {path} at epoch {state['epoch'] + 2}", file=sys.stderr)
    return state


def run_command(args, usage_errors: tuple = ()) -> None:
    """What every training CLI's main does: run args.func, turn the errors library code raises into one line and
    an exit code (2: data, checkpoint or usage; 1: training stopped; 130: interrupted, resumable)."""
    from runtime.fileio import fail, first_line

    try:
        args.func(args)
    except (DataError, CheckpointError, FileNotFoundError, *usage_errors) as exc:
        fail(first_line(exc), code=2)
    except TrainingError as exc:
        fail(str(exc), code=1)
    except KeyboardInterrupt:
        fail("interrupted; run again with --resume to continue", code=130)


def half_state_dict(model: torch.nn.Module) -> dict:
    """Float tensors in fp16 for shipping: half the size, and load_state_dict casts back."""
    return {k: (v.half() if v.is_floating_point() else v) for k, v in unwrap(model).state_dict().items()}


def rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "python": list(random.getstate()[1]),
    }


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))


class EpochLog:
    """One JSON object per epoch appended to a .jsonl file (rank 0 only)."""

    def __init__(self, path):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        if not is_main_process():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start


def vars_for_checkpoint(args) -> dict:
    """argparse namespace -> a dict of plain values that weights_only loading accepts."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
