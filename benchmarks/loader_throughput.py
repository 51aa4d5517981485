"""Data-loader throughput (images/s) at crop 512 with 0, 1 and 2 worker processes.

    python benchmarks/loader_throughput.py                       # CityScapes-sized stand-ins
    python benchmarks/loader_throughput.py --data data/prepared/cityscapes --split train

Without --data it synthesizes CityScapes-like images at the real resolution
(2048x1024 PNGs) into a temporary folder and prepares them. Each loader runs
the training transform of the WACV search (random scale 0.7-1.4 clamped to a
longer side of 1024, mirror, random 512x512 crop padded with the ignore index,
ImageNet normalisation), batch size 8 by default. The figure reported is the
steady state: images per second after the first batch (worker start-up is
shown separately).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nasseg.data import (AugmentParams, PreparedDataset, make_loader, prepare_dataset,  # noqa: E402
                         synthesize_dataset, train_transform)


def measure(dataset: PreparedDataset, workers: int, batch_size: int, batches: int,
            seed: int) -> dict:
    loader = make_loader(dataset, batch_size, train=True, workers=workers, seed=seed,
                         drop_last=True)
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - t0
    n = 0
    t1 = time.perf_counter()
    while n < batches:
        try:
            x, _ = next(it)
        except StopIteration:
            it = iter(loader)  # persistent workers: no restart cost
            continue
        n += 1
    elapsed = time.perf_counter() - t1
    del it, loader
    return {"workers": workers, "images_per_s": round(n * batch_size / elapsed, 2),
            "first_batch_s": round(first, 2), "batch_shape": list(x.shape)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="a prepared dataset")
    parser.add_argument("--split", default="train")
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--resize-side", type=int, default=1024)
    parser.add_argument("--shorter", action="store_true",
                        help="clamp the shorter side instead of the longer one")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per setting")
    parser.add_argument("--num-images", type=int, default=24)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            t = time.perf_counter()
            raw, root = Path(tmp) / "raw", Path(tmp) / "prepared"
            synthesize_dataset("cityscapes", raw, num_images=args.num_images, seed=args.seed,
                               height=args.height, width=args.width)
            prepare_dataset("cityscapes", raw, root)
            print(f"synthesized and prepared {args.num_images} images of {args.width}x"
                  f"{args.height} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        aug = AugmentParams(crop_size=args.crop, resize_side=args.resize_side,
                            scale_range=(0.7, 1.4), resize_longer=not args.shorter)
        base = PreparedDataset(root, args.split)
        dataset = PreparedDataset(root, args.split, train_transform(aug, base.target_fill))
        h, w = base.load(0)[1].shape
        results = [measure(dataset, n, args.batch_size, args.batches, args.seed)
                   for n in args.workers]
    info = {"images": f"{w}x{h} PNG", "crop": args.crop, "resize_side": args.resize_side,
            "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "results": results}
    print(f"| workers | images/s | first batch (s) |  ({w}x{h} PNG, crop {args.crop}, "
          f"batch {args.batch_size})")
    print("|---:|---:|---:|")
    for r in results:
        print(f"| {r['workers']} | {r['images_per_s']:.1f} | {r['first_batch_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
