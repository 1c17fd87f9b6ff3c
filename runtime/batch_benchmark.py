"""Photos per second of runtime.batch (Ray Data) against runtime.colorize: same photos, same model, same cores,
run back to back, each in a fresh process.

    python -m runtime.batch_benchmark                               # the examples, 40 copies each (280 photos)
    python -m runtime.batch_benchmark --photos /data/scans --count 500 --model colorizer

Rates are taken from the outputs' modification times: the steady rate is (photos - 1) / (last - first output), the
start-up is process start to the first output (for runtime.batch: Python and Ray start, actors and model sessions).
runtime.batch runs once per --layouts entry, WORKERSxTHREADS (actors x ONNX Runtime threads each).
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.model import default_threads

REPO = Path(__file__).resolve().parent.parent


def get_args_parser():
    parser = argparse.ArgumentParser(description="runtime.batch against runtime.colorize, photos per second.")
    parser.add_argument("--photos", default=str(REPO / "examples"), help="folder of photos (default: examples/)")
    parser.add_argument("--count", type=int, default=280, help="photos to colour (the folder's, repeated)")
    parser.add_argument("--model", default="colorizer-int8")
    cores = default_threads()
    parser.add_argument("--layouts", default=f"1x{cores},{cores}x1",
                        help=f"runtime.batch actor layouts WORKERSxTHREADS (default: 1x{cores},{cores}x1)")
    parser.add_argument("--batch-size", type=int, default=16)
    return parser


def copy_photos(source: Path, count: int, folder: Path) -> None:
    photos = sorted(path for path in source.iterdir() if path.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        raise SystemExit(f"error: {source}: no jpg or png photos")
    folder.mkdir()
    for index in range(count):
        original = photos[index % len(photos)]
        shutil.copyfile(original, folder / f"{index:06d}-{original.name}")


def timed_run(command: list[str], out: Path, count: int) -> dict:
    start = time.time()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.time() - start
    times = sorted(path.stat().st_mtime for path in out.glob("*_color.*"))
    if result.returncode != 0 or len(times) != count:
        raise SystemExit(f"error: {' '.join(command[2:4])} exited {result.returncode} with {len(times)} of {count} "
                         f"outputs: {result.stderr.strip().splitlines()[-1:]}")
    return {"wall": wall, "startup": times[0] - start, "steady": (count - 1) / max(times[-1] - times[0], 1e-9),
            "overall": count / wall}


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    cores = default_threads()
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        photos = Path(temp) / "photos"
        copy_photos(Path(args.photos), args.count, photos)
        out = Path(temp) / "colorize"
        rows.append((f"runtime.colorize (1 process, {cores} threads)",
                     timed_run([sys.executable, "-m", "runtime.colorize", str(photos), "-o", str(out), "--model",
                                args.model], out, args.count)))
        for layout in args.layouts.split(","):
            workers, threads = (int(part) for part in layout.split("x"))
            out = Path(temp) / f"batch-{layout}"
            rows.append((f"runtime.batch ({workers} actor(s) x {threads} thread(s))",
                         timed_run([sys.executable, "-m", "runtime.batch", str(photos), "-o", str(out), "--model",
                                    args.model, "--workers", str(workers), "--threads", str(threads),
                                    "--batch-size", str(args.batch_size)], out, args.count)))
    base = rows[0][1]["steady"]
    print(f"{args.count} photos from {args.photos}, model {args.model}, {cores} cores")
    print(f"{'':48s} {'wall s':>7s} {'start s':>8s} {'photos/s':>9s} {'steady':>7s} {'x colorize':>10s}")
    for name, row in rows:
        print(f"{name:48s} {row['wall']:7.1f} {row['startup']:8.1f} {row['overall']:9.1f} {row['steady']:7.1f} "
              f"{row['steady'] / base:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
