"""PyTorch eager latency of a colorizer checkpoint, for runtime.benchmark's comparison column.

runtime.benchmark runs this in a separate process (the runtime never imports torch or train/):
    python -m train.eager_benchmark --checkpoint checkpoints/colorizer.pt --sizes 224,256 --batches 1,8 --json
"""

import argparse
import json
import statistics
import time

import torch

from train.models import load_colorizer


def median_ms(run, repeat: int, budget: float) -> tuple[float, int]:
    run()  # warm-up
    times, start = [], time.perf_counter()
    while len(times) < repeat:
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
        if len(times) >= 3 and time.perf_counter() - start > budget:
            break
    return statistics.median(times) * 1000.0, len(times)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m train.eager_benchmark")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--sizes", default="224,256,512")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--budget", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = load_colorizer(args.checkpoint)
    rng = torch.Generator().manual_seed(0)
    rows = []
    with torch.inference_mode():
        for size in map(int, args.sizes.split(",")):
            for batch in map(int, args.batches.split(",")):
                inputs = torch.rand(batch, 1, size, size, generator=rng) * 100.0
                ms, runs = median_ms(lambda: model.forward_ab(inputs), args.repeat, args.budget)
                rows.append({"size": size, "batch": batch, "median_ms": ms, "img_per_s": batch * 1000.0 / ms, "runs": runs})
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "latency": rows}))


if __name__ == "__main__":
    main()
