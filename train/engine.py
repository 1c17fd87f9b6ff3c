"""What every training script shares: device and precision choice, torchrun/DDP, seeding, the run folder
(where fit writes, what --resume may continue), checked atomic checkpoints, resumable state and the per-epoch
JSON log.

A run folder (--run-dir) holds last.pt (everything --resume needs), log.jsonl (one JSON object per epoch) and, by
default, model.pt (the model fit ships). fit never replaces a file that is not from its own run without
--overwrite, never saves non-finite weights, and --resume continues only a training state of the same kind
trained with the same shape-relevant arguments."""

import argparse
import contextlib
import hashlib
import io
import math
import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from runtime.fileio import first_line
from train.data import DataError, default_cache_dir


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
    """Rank 0, also before the process group is joined (torchrun's RANK), so start_run speaks once."""
    return dist.get_rank() == 0 if dist.is_initialized() else distributed_env()[0] == 0


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


# ---------------------------------------------------------------- command-line values
def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (a NaN or infinite --lr trains garbage without a word)."""
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number, 0 or more."""
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


# ---------------------------------------------------------------- the training loop
class TrainingError(Exception):
    """Training cannot go on (a non-finite loss or weights); the message is shown to the user as one line."""


def train_one_epoch(model, loader, compute_loss, optimizer, scheduler, scaler, device, amp_dtype, epoch: int,
                    epochs: int, sampler=None) -> dict:
    """One pass over loader, shared by every training script. compute_loss(model, batch) -> (loss, batch size,
    {name: sum over the batch}); the loss is checked before the optimiser step, so a NaN never reaches the
    weights. -> {"train_loss": mean, name: mean for each extra}."""
    model.train()
    if sampler is not None:
        sampler.set_epoch(epoch)
    sums, seen = {"train_loss": 0.0}, 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
               disable=None if is_main_process() else True)  # None: no bar when stderr is not a terminal
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


def non_finite_count(state_dict: dict) -> tuple[int, int]:
    """(NaN or infinite values, all values) over the floating-point tensors of a state dict."""
    bad = total = 0
    for tensor in state_dict.values():
        if torch.is_tensor(tensor) and tensor.is_floating_point():
            bad += int(tensor.numel() - torch.isfinite(tensor).sum())
            total += tensor.numel()
    return bad, total


def check_weights(model: torch.nn.Module, epoch: int, args) -> None:
    """TrainingError when a weight is NaN or infinite (a finite loss does not prove finite weights: the last
    step of an epoch is never followed by a loss); call it before an epoch's log line and files. The message
    names the run's files that stay as the last good epoch left them."""
    bad, total = non_finite_count(half_state_dict(model))  # as saved: fp16 turns weights beyond 65504 into inf
    if bad:
        kept = [str(path) for path in (Path(args.out), Path(args.run_dir) / STATE_FILE) if path.is_file()]
        raise TrainingError(f"{bad} of {total} weights are not finite after epoch {epoch + 1} (lower --lr); nothing "
                            f"of this epoch was saved{': ' + ' and '.join(kept) + ' are unchanged' if kept else ''}")


# ---------------------------------------------------------------- files
class OutputError(Exception):
    """An output could not be written (a full disk, no permission); the file there, if any, is unchanged."""


def write_output(path, data) -> None:
    """Bytes to path through runtime.fileio.write_atomic: a kill or a full disk never leaves half a file, and the
    temp file is removed; OutputError (one line) when the write fails."""
    from runtime.fileio import write_atomic

    path = Path(path)

    def write(temp: str) -> None:
        with open(temp, "wb") as handle:
            handle.write(data)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with signals_deferred():
            write_atomic(path, write)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or type(exc).__name__} (the file there, if any, "
                          "is unchanged)") from None


@contextlib.contextmanager
def signals_deferred():
    """SIGINT and SIGTERM that arrive within the block (a save) are held until it ends and then sent again, to the
    handler that was there before (runtime.cli.interruptible's, which raises Interrupted and tells its watchdog the
    signal was taken): a save is never cut between creating its temp file and renaming it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = {number: signal.signal(number, lambda signum, frame: held.append(signum))
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if held:
        signal.raise_signal(held[0])


def atomic_save(obj, path) -> None:
    """torch.save, atomically (write_output). Model weights that are not finite are refused (TrainingError), so no
    checkpoint ever holds them."""
    path = Path(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        bad, total = non_finite_count(obj["model"])
        if bad:
            raise TrainingError(f"{bad} of {total} weights are not finite (lower --lr); {path} was not written, "
                                "the files of the last good epoch are unchanged")
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # in memory first: torch's own file writer reports a full disk as an opaque RuntimeError
    write_output(path, buffer.getbuffer())


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


# ---------------------------------------------------------------- the run folder
STATE_FILE, LOG_FILE, MODEL_FILE = "last.pt", "log.jsonl", "model.pt"
STATE_KEYS = ("optimizer", "scheduler", "scaler", "epoch", "rng", "args")
# what --resume must find unchanged: the arguments that shape the model, its input or its batches
FIXED_ON_RESUME = {"colorizer": ("preset", "image_size", "batch_size", "temperature"),
                   "classifier": ("image_size", "batch_size", "sources")}


def add_common_arguments(parser, limit_help: str = "use only this many images (smoke tests)") -> None:
    """The options every training subcommand shares: the Flowers-102 split, the device, the image cache, --limit."""
    parser.add_argument("--split", default="seed", choices=["seed", "official"])
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="decoded-image cache")
    parser.add_argument("--limit", type=int, default=None, help=limit_help)


def add_run_arguments(parser, kind: str, model: str = "the model") -> None:
    """fit's --run-dir, --out, --resume and --overwrite (start_run applies them)."""
    fixed = ", ".join(f"--{name.replace('_', '-')}" for name in FIXED_ON_RESUME[kind])
    parser.add_argument("--run-dir", type=Path, default=Path(f"runs/{kind}"),
                        help=f"the run folder: {STATE_FILE} (resumable state), {LOG_FILE} and, by default, the model "
                        f"(default: runs/{kind} under the current folder)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"{model}, a .pt file (default: RUN_DIR/{MODEL_FILE}); an existing file that is not "
                        "this run's output is replaced only with --overwrite")
    parser.add_argument("--resume", action="store_true",
                        help=f"continue RUN_DIR/{STATE_FILE} with the same {fixed}; a changed --epochs or --lr "
                        "re-plans the learning-rate schedule")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in a run folder that holds a run, and replace an existing --out")


class UsageError(Exception):
    """What the command line asks cannot be done safely (a file that is not this run's, a run folder in use, a
    changed argument on --resume); shown as one line, exit 2."""


class RunComplete(Exception):
    """--resume of a run whose epochs are all done: the message is said and the command exits 0."""


def start_run(args, kind: str) -> None:
    """Before any work: where fit writes, checked and said. --out defaults to RUN_DIR/model.pt (set in args, so
    the files record where it went). Refused (UsageError, exit 2): an --out that is no .pt name, a folder or a run
    file; a run folder holding a run, or an existing --out that is not this run's output, without --overwrite or
    (for the run's own files) --resume; --resume that fails load_training_state (FIXED_ON_RESUME[kind]). A
    resumed run with every epoch done raises RunComplete. Temp files of a killed save, in the run folder and beside
    --out, are removed."""
    folder = Path(args.run_dir)
    args.out, args.kind = Path(args.out) if args.out is not None else folder / MODEL_FILE, kind
    check_out_name(args.out, folder)
    remove_stale_partials(folder, args.out.parent)
    state_path, state = folder / STATE_FILE, None
    if args.resume:
        state = load_training_state(state_path, kind, args, FIXED_ON_RESUME[kind])
        done, planned = state["epoch"] + 1, state["args"].get("epochs", args.epochs)
        if done >= args.epochs:
            raise RunComplete(f"nothing left to do: {done} of {max(planned, done)} epochs done in {folder} "
                              "(pass a larger --epochs to train on)")
        if is_main_process() and planned != args.epochs:
            print(f"note: {folder} was planned with --epochs {planned}; the learning-rate schedule now spans "
                  f"--epochs {args.epochs} from the {done} done", file=sys.stderr)
    elif state_path.is_file() and not args.overwrite:
        raise UsageError(f"{folder} holds a run ({STATE_FILE}); pass --resume to continue it, --overwrite to start "
                         "over, or another --run-dir")
    # this run's output: the run folder's own model file, or the --out the resumed state recorded
    own = state is not None and args.out.resolve() in ((folder / MODEL_FILE).resolve(),
                                                      Path(state["args"].get("out") or folder).resolve())
    if args.out.exists() and not (own or args.overwrite):
        raise UsageError(f"{args.out} exists and is not this run's output; pass --overwrite to replace it, or "
                         "another --out")
    if is_main_process():
        print(f"writing {args.out}; training state and {LOG_FILE} in {folder}", file=sys.stderr)


def check_out_name(out: Path, folder: Path) -> None:
    if out.suffix != ".pt":
        raise UsageError(f"--out {out}: not a .pt file name (fit writes a PyTorch checkpoint)")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give the .pt file to write")
    if out.resolve() in ((folder / STATE_FILE).resolve(), (folder / LOG_FILE).resolve()):
        raise UsageError(f"--out {out} is the run's own {out.name}; choose another file")


def remove_stale_partials(*folders) -> None:
    """runtime.fileio's temp files left by a killed save (their writer is gone), each said in a note."""
    from runtime import fileio

    if not is_main_process():
        return
    for folder in dict.fromkeys(Path(f).resolve() for f in folders):
        for path in fileio.remove_stale_partials(folder):
            print(f"note: removed {path}, left by a save that was killed", file=sys.stderr)


def load_training_state(path, kind: str, args, fixed: tuple[str, ...]) -> dict:
    """The state --resume continues, checked before any work: a training state (not a shipped model) of this
    kind, trained with the same `fixed` arguments (those that shape the model, its input or its batches);
    CheckpointError / UsageError (one line, exit 2) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--resume: no {path} (nothing to resume; leave out --resume to start a run there)")
    state = load_checkpoint(path)
    missing = [key for key in STATE_KEYS if key not in state]
    if missing or not isinstance(state["args"], dict) or not isinstance(state["epoch"], int):
        raise CheckpointError(f"{path} is not a training state (no {(missing or ['args'])[0]}): --resume continues "
                              f"a run folder's {STATE_FILE}, not a shipped model")
    saved = state["args"]
    saved_kind = saved.get("kind") or ("colorizer" if "preset" in saved else "classifier")
    if saved_kind != kind:
        raise CheckpointError(f"{path} is a {saved_kind} training state, not a {kind} one")
    now = vars_for_checkpoint(args)
    changed = [f"--{name.replace('_', '-')} {saved[name]} (now {now.get(name)})"
               for name in fixed if name in saved and saved[name] != now.get(name)]
    if changed:
        raise UsageError(f"--resume: {path} was trained with {', '.join(changed)}; resume with the run's values")
    return state


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
    """Load what save_training_state wrote into the live objects; -> the state dict (epoch, extras) or None. The
    learning rate follows the scheduler as built for this run (continue_schedule), not the saved one."""
    path = Path(path)
    if not path.is_file():
        return None
    state = load_checkpoint(path)
    try:
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        steps = int(state["scheduler"]["last_epoch"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} does not fit this model ({first_line(exc)})") from None
    restore_rng_state(state["rng"])
    lr = continue_schedule(scheduler, optimizer, steps)
    if is_main_process():
        print(f"resumed from {path} at epoch {state['epoch'] + 2}, learning rate {lr:.4g}", file=sys.stderr)
    return state


def continue_schedule(scheduler, optimizer, steps: int) -> float:
    """Put a LambdaLR built for this run (its --epochs, its --lr) at `steps` optimiser steps done and give the
    optimiser the rate it says there: the saved rate would be that of the schedule the run was planned with (0 at
    its end), the same where nothing changed. -> the learning rate of the first parameter group."""
    scheduler.last_epoch = steps
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(steps)
    return optimizer.param_groups[0]["lr"]


TRAINING_SIGNAL_GRACE = 60.0  # s: a training step or an evaluation batch on a busy 2-core CPU can take several


def run_command(args, usage_errors: tuple = (), fit_kind: str | None = None) -> None:
    """What every training CLI's main does: for fit, start_run(args, fit_kind); run args.func;
    turn the errors library code raises into one line and an exit code: 2 data, checkpoint or usage; 1 training
    stopped or an output not written; 0 for a resumed run with nothing left to do; 130 / 143 interrupted by SIGINT
    / SIGTERM (temp files removed, fit resumable)."""
    from runtime.cli import interrupt_code, interruptible
    from runtime.fileio import fail

    try:
        with interruptible(TRAINING_SIGNAL_GRACE, "error: interrupted while busy in native code; run again with "
                           "--resume to continue"):
            if fit_kind is not None and args.command == "fit":
                start_run(args, fit_kind)
            args.func(args)
    except RunComplete as exc:
        if is_main_process():
            print(exc, file=sys.stderr)
    except (DataError, CheckpointError, UsageError, FileNotFoundError, *usage_errors) as exc:
        fail(first_line(exc), code=2)
    except (TrainingError, OutputError) as exc:
        fail(str(exc), code=1)
    except OSError as exc:  # reading or writing something else (a cache folder, a data file)
        fail(f"{exc.filename}: {exc.strerror}" if exc.filename else first_line(exc), code=1)
    except KeyboardInterrupt as exc:
        hint = "; run again with --resume to continue" if args.command == "fit" else ""
        fail(f"interrupted{hint}", code=interrupt_code(exc))


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
    """One JSON object per epoch in a .jsonl file (rank 0 only), strict JSON (a non-finite number is null). A
    record for epoch N replaces those of epochs N and later (left by a run that was resumed or started over), so
    each epoch is there once; the file is rewritten atomically."""

    def __init__(self, path):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        if not is_main_process():
            return
        kept = [r for r in self.read() if r.get("epoch", 0) < record["epoch"]]
        write_output(self.path, "".join(strict_json(r) + "\n" for r in [*kept, record]).encode())

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)  # json reads the bare NaN older logs hold
            except ValueError:  # a line cut short by a kill (older versions appended in place)
                continue
            if isinstance(record, dict) and isinstance(record.get("epoch", 0), int):
                records.append(record)
        return records


def strict_json(value) -> str:
    """One line of strict JSON: NaN and infinities (not JSON) become null."""
    return json.dumps(finite_or_none(value), allow_nan=False)


def finite_or_none(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start


def vars_for_checkpoint(args) -> dict:
    """argparse namespace -> a dict of plain values that weights_only loading accepts."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
