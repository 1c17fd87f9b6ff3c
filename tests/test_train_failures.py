"""Nothing the user owns is touched and nothing wrong is called success, for train.colorizer / train.classifier fit
and export.onnx: one row per case (issue 20). Each row builds its files, runs the command (in this process, or in a
subprocess where the point is a signal or a file size limit) and states the exit code and the lines that must
appear; every row also checks that no traceback is printed, that no temp file (`.NAME.partial-…`) is left, and,
where the command is refused, that every file that was there is byte for byte unchanged.

Rows that train to the end or export are marked slow; the refusals (which must come before any work) are fast."""

import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from export import onnx as export_onnx
from runtime import fileio
from tests.conftest import REPO
from train import classifier, colorizer

FAST = ["--batch-size", "8", "--image-size", "32", "--workers", "0", "--amp", "off", "--valid-images", "0"]
SHIPPED = REPO / "checkpoints" / "colorizer.pt"


# ---------------------------------------------------------------- running the commands

@dataclass
class Result:
    code: int
    err: str

    def lines(self) -> list[str]:
        """Lines as a terminal shows them (progress bars redraw with carriage returns)."""
        return [line.strip() for line in re.split(r"[\r\n]+", self.err) if line.strip()]


@dataclass
class Ctx:
    tmp: Path
    capfd: pytest.CaptureFixture
    data: Path  # the tiny Flowers-102 + general root (shared, read only)
    done_run: Path  # a finished 1-epoch seed-colorizer run folder (shared, read only: rows copy it)
    frozen: dict = field(default_factory=dict)

    @property
    def images(self) -> Path:
        return self.data / "flowers-102" / "jpg"

    def freeze(self) -> None:
        """Remember every file under tmp: a refused command must leave them all as they are."""
        self.frozen = {p: p.read_bytes() for p in self.tmp.rglob("*") if p.is_file()}

    def run_folder(self) -> Path:
        """A copy of the finished run, as the user's own."""
        return Path(shutil.copytree(self.done_run, self.tmp / "run"))


def in_process(ctx: Ctx, main, *args) -> Result:
    ctx.capfd.readouterr()
    try:
        code = main([str(a) for a in args]) or 0
    except SystemExit as exit_:
        code = exit_.code
    return Result(code, ctx.capfd.readouterr().err)


def partials(folder: Path) -> list[Path]:
    """Temp files of runtime.fileio's naming anywhere under folder."""
    return [p for p in folder.rglob("*") if fileio.PARTIAL_MARK in p.name]


def subprocess_run(ctx: Ctx, module: str, *args, file_size_limit: int | None = None) -> Result:
    """With file_size_limit, a write past it fails with EFBIG (SIGXFSZ ignored), as a full disk fails with ENOSPC."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    result = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ctx.tmp, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)},
                            preexec_fn=limit if file_size_limit else None)
    return Result(result.returncode, result.stderr)


def colorizer_fit(ctx: Ctx, *extra, epochs=1, preset="seed", limit=8) -> list:
    """A tiny fit: --limit 8 images at batch 8 is one step per epoch."""
    return ["fit", "--images", ctx.images, "--encoder-init", "none", "--preset", preset, "--limit", limit,
            "--epochs", epochs, *FAST, *extra]


def fit(ctx: Ctx, *extra, **options) -> Result:
    return in_process(ctx, colorizer.main, *colorizer_fit(ctx, *extra, **options))


def resume(ctx: Ctx, *extra, **options) -> Result:
    """--resume of a copy of the finished run, with files frozen after the copy."""
    folder = ctx.run_folder()
    ctx.freeze()
    return fit(ctx, "--run-dir", folder, "--resume", *extra, **options)


def frozen(action: Callable[[Ctx], Result], setup: Callable[[Ctx], None] | None = None):
    """Run setup, freeze the files, run the action."""
    def run(ctx):
        if setup is not None:
            setup(ctx)
        ctx.freeze()
        return action(ctx)
    return run


def precious(name: str):
    def make(ctx):
        (ctx.tmp / name).write_bytes(b"the user's own file")
    return make


def shipped_in_checkpoints(ctx: Ctx) -> None:
    """The repo layout a user runs from: checkpoints/colorizer.pt (here a small stand-in)."""
    (ctx.tmp / "checkpoints").mkdir()
    (ctx.tmp / "checkpoints" / "colorizer.pt").write_bytes(b"shipped weights")


def strict_log(path: Path) -> list[dict]:
    """log.jsonl as strict JSON (a bare NaN or Infinity fails)."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def nan_checkpoint(ctx: Ctx) -> Path:
    checkpoint = torch.load(ctx.done_run / "model.pt", weights_only=True)
    next(v for v in checkpoint["model"].values() if v.is_floating_point()).view(-1)[0] = float("nan")
    torch.save(checkpoint, ctx.tmp / "nan.pt")
    return ctx.tmp / "nan.pt"


def stale_partial(folder: Path, name: str = "last.pt") -> Path:
    """What a save killed by SIGKILL leaves: a temp file of runtime.fileio's naming whose writer is gone."""
    code = ("import os, sys; from runtime.fileio import write_atomic\n"
            "def write(temp):\n    open(temp, 'wb').write(b'half a checkpoint'); print(temp, flush=True); os._exit(9)\n"
            f"write_atomic(sys.argv[1], write)")
    out = subprocess.run([sys.executable, "-c", code, str(folder / name)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.strip()
    assert Path(out).is_file(), out
    return Path(out)


# ---------------------------------------------------------------- rows that need more than one call

def default_out_colorizer(ctx):
    shipped_in_checkpoints(ctx)
    ctx.freeze()
    return fit(ctx)


def default_out_classifier(ctx):
    shipped_in_checkpoints(ctx)
    (ctx.tmp / "checkpoints" / "classifier.pt").write_bytes(b"shipped weights")
    ctx.freeze()
    return in_process(ctx, classifier.main, "fit", "--data", ctx.data, "--epochs", "1", "--batch-size", "8",
                      "--image-size", "32", "--workers", "0", "--amp", "off")


def check_default_out(kind: str):
    def check(ctx, result):
        model = ctx.tmp / "runs" / kind / "model.pt"
        assert torch.load(model, weights_only=True)["model"]  # a real checkpoint, in the run folder
        assert (ctx.tmp / "checkpoints" / f"{kind}.pt").read_bytes() == b"shipped weights"
        assert any(line.startswith("writing runs/") for line in result.lines())
    return check


def overwrite_out(ctx):
    precious("mine.pt")(ctx)
    return fit(ctx, "--run-dir", ctx.tmp / "r", "--out", ctx.tmp / "mine.pt", "--overwrite")


def check_replaced(ctx, result):
    assert torch.load(ctx.tmp / "mine.pt", weights_only=True)["meta"]["preset"] == "seed"


def nan_weights_fresh(ctx):
    ctx.freeze()
    return fit(ctx, "--run-dir", ctx.tmp / "r", "--lr", "1e30")


def nan_weights_on_resume(ctx):
    return resume(ctx, "--lr", "1e30", epochs=2)


def classifier_nan_weights(ctx):
    """One step per epoch (8 images a subset at batch 8): the step that breaks the weights is the epoch's last,
    so no loss sees it; the weights check must."""
    args = ["fit", "--data", ctx.data, "--sources", "flowers", "--limit", "8", "--batch-size", "8", "--image-size",
            "32", "--workers", "0", "--amp", "off", "--run-dir", ctx.tmp / "r"]
    first = in_process(ctx, classifier.main, *args, "--epochs", "1")
    assert first.code == 0, first.err
    ctx.freeze()
    return in_process(ctx, classifier.main, *args, "--epochs", "2", "--resume", "--lr", "1e30")


def shipped_as_state(ctx):
    (ctx.tmp / "run").mkdir()
    shutil.copyfile(SHIPPED, ctx.tmp / "run" / "last.pt")
    ctx.freeze()
    return fit(ctx, "--run-dir", ctx.tmp / "run", "--resume", epochs=2)


def model_as_state(ctx):
    folder = ctx.run_folder()
    shutil.copyfile(folder / "model.pt", folder / "last.pt")
    ctx.freeze()
    return fit(ctx, "--run-dir", folder, "--resume", epochs=2)


def colorizer_state_for_classifier(ctx):
    folder = ctx.run_folder()
    ctx.freeze()
    return in_process(ctx, classifier.main, "fit", "--data", ctx.data, "--run-dir", folder, "--resume", "--epochs",
                      "3", "--image-size", "32", "--batch-size", "8")


def resume_more_epochs_cosine(ctx):
    """A default-preset (cosine) run planned for 1 epoch of 4 steps ends at lr 0; resumed to 3 epochs it goes on
    at the rate the cosine over 3 epochs gives after 4 steps."""
    first = fit(ctx, "--run-dir", ctx.tmp / "r", preset="default", limit=16, epochs=1)
    assert first.code == 0, first.err
    return fit(ctx, "--run-dir", ctx.tmp / "r", "--resume", preset="default", limit=16, epochs=3)


def check_cosine_replanned(ctx, result):
    steps, warmup, total = 2, 2, 6  # 16 images at batch 8; warmup steps_per_epoch // 2 + 1; 3 epochs
    factor = 0.5 * (1 + math.cos(math.pi * (steps - warmup) / (total - warmup)))
    resumed = next(line for line in result.lines() if line.startswith("resumed from"))
    assert float(resumed.rsplit(" ", 1)[1]) == pytest.approx(5e-4 * factor, rel=1e-3), resumed
    assert [r["epoch"] for r in strict_log(ctx.tmp / "r" / "log.jsonl")] == [1, 2, 3]


def resume_removes_partials(ctx):
    folder = ctx.run_folder()
    stale_partial(folder)
    stale_partial(folder, "model.pt")
    return fit(ctx, "--run-dir", folder, "--resume", epochs=2)


def check_partials_removed(ctx, result):
    notes = [line for line in result.lines() if re.fullmatch(r"note: removed .*, left by a save that was killed", line)]
    assert len(notes) == 2, result.lines()
    assert sorted(p.name for p in (ctx.tmp / "run").iterdir()) == ["last.pt", "log.jsonl", "model.pt"]


def resume_repairs_log(ctx):
    """An older version's log: a bare NaN and epoch 2 twice (a kill between the log line and the state)."""
    folder = ctx.run_folder()
    record = json.loads((folder / "log.jsonl").read_text())
    (folder / "log.jsonl").write_text(json.dumps({**record, "train_loss": float("nan")}) + "\n"
                                      + json.dumps({"epoch": 2, "stale": True}) + "\n" * 2)
    return fit(ctx, "--run-dir", folder, "--resume", epochs=2)


def check_log(ctx, result):
    log = strict_log(ctx.tmp / "run" / "log.jsonl")
    assert [r["epoch"] for r in log] == [1, 2] and "stale" not in log[1]
    assert all(math.isfinite(r["train_loss"]) for r in log[1:]) and log[0]["train_loss"] is None


def export_args(ctx, checkpoint, out, *extra):
    return ["--checkpoint", checkpoint, "--out", out, *extra]


def export_existing(ctx):
    (ctx.tmp / "model.onnx").write_bytes(b"an earlier export the user keeps")
    ctx.freeze()
    return in_process(ctx, export_onnx.main, *export_args(ctx, ctx.done_run / "model.pt", ctx.tmp / "model.onnx"))


def export_nan(ctx):
    checkpoint = nan_checkpoint(ctx)
    ctx.freeze()
    return in_process(ctx, export_onnx.main, *export_args(ctx, checkpoint, ctx.tmp / "m.onnx"))


def export_full_disk(ctx):
    return subprocess_run(ctx, "export.onnx", *export_args(ctx, ctx.done_run / "model.pt", ctx.tmp / "m.onnx"),
                          file_size_limit=1 << 20)


def fit_full_disk(ctx):
    """The first save (25 MB of fp16 weights) passes a 1 MB file size limit: EFBIG, as a full disk gives ENOSPC."""
    return subprocess_run(ctx, "train.colorizer", *colorizer_fit(ctx, "--run-dir", ctx.tmp / "r"),
                          file_size_limit=1 << 20)


def interrupted_fit(signum: int):
    """Send signum to a long fit while it saves (a temp file of ours in the run folder), or after 3 epochs."""
    def run(ctx):
        folder = ctx.tmp / "r"
        process = subprocess.Popen(
            [sys.executable, "-m", "train.colorizer", *map(str, colorizer_fit(ctx, "--run-dir", folder, epochs=500))],
            cwd=ctx.tmp, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 300
            while not (partials(folder) or len(read_lines(folder / "log.jsonl")) >= 3):
                assert process.poll() is None and time.monotonic() < deadline, "no save seen"
                time.sleep(0.001)
            process.send_signal(signum)
            err = process.communicate(timeout=120)[1]
        finally:
            process.kill()
        return Result(process.returncode, err)
    return run


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


# ---------------------------------------------------------------- the table

@dataclass
class Row:
    name: str
    run: Callable[[Ctx], Result]
    code: int
    err: list[str] = field(default_factory=list)  # regular expressions, each matching one whole line
    absent: list[str] = field(default_factory=list)  # paths under tmp that must not exist
    unchanged: bool = False  # every file there before the command is byte for byte the same
    check: Callable[[Ctx, Result], None] | None = None
    slow: bool = False




NOT_POSITIVE = r".*error: argument --{}: must be (positive|above 0|a finite number).*"
ROWS = [
    # where fit writes
    Row("default-out-colorizer", default_out_colorizer, 0, [r"colorizer \(seed\) at runs/colorizer/model\.pt;.*"],
        check=check_default_out("colorizer"), slow=True),
    Row("default-out-classifier", default_out_classifier, 0, [r".*model at runs/classifier/model\.pt;.*"],
        check=check_default_out("classifier"), slow=True),
    Row("out-exists", frozen(lambda c: fit(c, "--run-dir", c.tmp / "r", "--out", c.tmp / "mine.pt"),
                             precious("mine.pt")),
        2, [r"error: .*mine\.pt exists and is not this run's output; pass --overwrite to replace it.*"],
        absent=["r"], unchanged=True),
    Row("out-not-pt", frozen(lambda c: fit(c, "--run-dir", c.tmp / "r", "--out", c.tmp / "precious.jpg"),
                             precious("precious.jpg")),
        2, [r"error: --out .*precious\.jpg: not a \.pt file name.*"], absent=["r"], unchanged=True),
    Row("out-is-the-state", frozen(lambda c: fit(c, "--run-dir", c.tmp / "r", "--out", c.tmp / "r" / "last.pt")),
        2, [r"error: --out .*last\.pt is the run's own last\.pt.*"], absent=["r"]),
    Row("out-overwrite", overwrite_out, 0, check=check_replaced, slow=True),
    Row("run-folder-in-use", lambda c: (c.run_folder(), c.freeze(), fit(c, "--run-dir", c.tmp / "run"))[-1], 2,
        [r"error: .*run holds a run \(last\.pt\); pass --resume to continue it, --overwrite to start over.*"],
        unchanged=True),
    # values that cannot train
    Row("epochs-0", frozen(lambda c: fit(c, "--run-dir", c.tmp / "r", epochs=0)), 2, [NOT_POSITIVE.format("epochs")],
        absent=["r"]),
    Row("epochs-negative", frozen(lambda c: fit(c, "--run-dir", c.tmp / "r", epochs=-3)), 2,
        [NOT_POSITIVE.format("epochs")], absent=["r"]),
    *[Row(f"lr-{value}", frozen(lambda c, v=value: fit(c, "--run-dir", c.tmp / "r", "--lr", v)), 2,
          [NOT_POSITIVE.format("lr")], absent=["r"]) for value in ("nan", "inf", "0", "-1")],
    Row("batch-size-0", frozen(lambda c: fit(c, "--run-dir", c.tmp / "r", "--batch-size", "0")), 2,
        [NOT_POSITIVE.format("batch-size")], absent=["r"]),
    Row("classifier-lr-nan", frozen(lambda c: in_process(c, classifier.main, "fit", "--data", c.data, "--lr", "nan")),
        2, [NOT_POSITIVE.format("lr")], absent=["runs"]),
    Row("nan-weights-fresh", nan_weights_fresh, 1,
        [r"error: \d+ of \d+ weights are not finite after epoch 1 \(lower --lr\); nothing of this epoch was saved"],
        absent=["r/model.pt", "r/last.pt", "r/log.jsonl"], slow=True),
    Row("nan-weights-on-resume", nan_weights_on_resume, 1,
        [r"error: \d+ of \d+ weights are not finite after epoch 2 \(lower --lr\); nothing of this epoch was saved: "
         r".*run/model\.pt and .*run/last\.pt are unchanged"],
        unchanged=True, slow=True),
    Row("classifier-nan-weights-on-resume", classifier_nan_weights, 1,
        [r"error: \d+ of \d+ weights are not finite after epoch 2 \(lower --lr\); nothing of this epoch was saved: "
         r".*r/model\.pt and .*r/last\.pt are unchanged"], unchanged=True, slow=True),
    # resume
    Row("resume-nothing-left", lambda c: resume(c), 0,
        [r"nothing left to do: 1 of 1 epochs done in .*run \(pass a larger --epochs to train on\)"], unchanged=True),
    Row("resume-nothing-there", frozen(lambda c: fit(c, "--run-dir", c.tmp / "r", "--resume")), 2,
        [r"error: --resume: no .*r/last\.pt \(nothing to resume.*"], absent=["r"]),
    Row("resume-changed-image-size", lambda c: resume(c, "--image-size", "64", epochs=2), 2,
        [r"error: --resume: .*last\.pt was trained with --image-size 32 \(now 64\); resume with the run's values"],
        unchanged=True),
    Row("resume-changed-preset", lambda c: resume(c, preset="default", epochs=2), 2,
        [r"error: --resume: .*was trained with --preset seed \(now default\).*"], unchanged=True),
    Row("resume-changed-batch-size", lambda c: resume(c, "--batch-size", "4", epochs=2), 2,
        [r"error: --resume: .*was trained with --batch-size 8 \(now 4\).*"], unchanged=True),
    Row("resume-from-shipped", shipped_as_state, 2,
        [r"error: .*last\.pt is not a training state \(no optimizer\): --resume continues a run folder's last\.pt.*"],
        unchanged=True),
    Row("resume-from-model-file", model_as_state, 2, [r"error: .*last\.pt is not a training state.*"],
        unchanged=True),
    Row("resume-other-kind", colorizer_state_for_classifier, 2,
        [r"error: .*last\.pt is a colorizer training state, not a classifier one"], unchanged=True),
    Row("resume-more-epochs-replans-cosine", resume_more_epochs_cosine, 0,
        [r"note: .*r was planned with --epochs 1; the learning-rate schedule now spans --epochs 3 from the 1 done",
         r"resumed from .*"],
        check=check_cosine_replanned, slow=True),
    Row("resume-removes-stale-partials", resume_removes_partials, 0, check=check_partials_removed, slow=True),
    Row("resume-repairs-the-log", resume_repairs_log, 0, check=check_log, slow=True),
    # export
    Row("export-out-not-onnx", frozen(lambda c: in_process(c, export_onnx.main, *export_args(
        c, c.done_run / "model.pt", c.tmp / "precious.jpg")), precious("precious.jpg")),
        2, [r"error: --out .*precious\.jpg: not an \.onnx file name.*"], unchanged=True),
    Row("export-out-exists", export_existing, 2, [r"error: .*model\.onnx exists; pass --overwrite to replace it"],
        unchanged=True),
    Row("export-non-finite-weights", export_nan, 2,
        [r"error: .*nan\.pt: 1 of \d+ weights are not finite \(NaN or inf\); not exported"], absent=["m.onnx"],
        unchanged=True),
    # full disk, signals
    Row("export-full-disk", export_full_disk, 1, [r"error: cannot write .*m\.onnx: File too large \(nothing written\)"],
        absent=["m.onnx"], slow=True),
    Row("fit-full-disk", fit_full_disk, 1,
        [r"error: cannot write .*r/model\.pt: File too large \(the file there, if any, is unchanged\)"],
        absent=["r/model.pt", "r/last.pt"], slow=True),
    Row("fit-sigterm", interrupted_fit(signal.SIGTERM), 143,
        [r"error: interrupted; run again with --resume to continue"],
        slow=True),
    Row("fit-sigint", interrupted_fit(signal.SIGINT), 130, [r"error: interrupted; run again with --resume to continue"],
        slow=True),
]


@pytest.fixture(scope="module")
def shared(tiny_data, tmp_path_factory):
    """The tiny data and a finished 1-epoch seed run (in this process: a subprocess would add seconds of imports)."""
    data = tiny_data
    done = tmp_path_factory.mktemp("done") / "run"
    colorizer.main([str(a) for a in ["fit", "--images", data / "flowers-102" / "jpg", "--encoder-init", "none",
                                     "--preset", "seed", "--limit", "8", "--epochs", "1", *FAST, "--run-dir", done]])
    assert {p.name for p in done.iterdir()} == {"last.pt", "log.jsonl", "model.pt"}
    return data, done


def marks(row: Row) -> list:
    return [pytest.mark.slow] if row.slow else []


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name, marks=marks(r)) for r in ROWS])
def test_training_and_export_failures(row: Row, shared, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    ctx = Ctx(tmp_path, capfd, *shared)
    result = row.run(ctx)
    lines = result.lines()
    assert result.code == row.code, result.err[-3000:]
    for pattern in row.err:
        assert any(re.fullmatch(pattern, line) for line in lines), (pattern, lines[-8:])
    if row.code != 0:
        assert [line for line in lines if "error:" in line] == [lines[-1]], lines[-8:]  # one, the last
    for name in row.absent:
        assert not (tmp_path / name).exists(), name
    if row.unchanged:
        assert ctx.frozen and all(p.is_file() and p.read_bytes() == data for p, data in ctx.frozen.items())
        assert {p for p in tmp_path.rglob("*") if p.is_file()} >= set(ctx.frozen)
    assert "Traceback" not in result.err
    assert not partials(tmp_path)
    if row.check is not None:
        row.check(ctx, result)


def test_no_checkpoint_holds_non_finite_weights(tmp_path):
    """The last guard, below fit's own check: atomic_save refuses a model state with a NaN and writes nothing."""
    import torch

    from train import engine

    target = tmp_path / "model.pt"
    with pytest.raises(engine.TrainingError, match=r"1 of 3 weights are not finite.*was not written"):
        engine.atomic_save({"model": {"w": torch.tensor([1.0, float("nan"), 2.0])}}, target)
    assert list(tmp_path.iterdir()) == []
