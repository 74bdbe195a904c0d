#!/usr/bin/env python3
"""Carry train.py's data caches to a machine that lacks the training images (a GPU machine
that takes a limited upload), and rebuild them there, bit for bit.

The caches hold every training image's 8-bit luma and its low-resolution versions at each
scale (about 140 megapixels for x2-x4). Packed, each picture is a lossless WebP file: the
full high-resolution luma once (each scale's cache holds a crop of it) and every
low-resolution one; the held-out crops that training reports on go with the first part.
Two parts, so that each fits an upload of about 60 MB:

    python carry.py pack --cache ../cache --out carry-hr --part hr
    python carry.py pack --cache ../cache --out carry-lr --part lr
    # there:
    python carry.py unpack --from carry-hr carry-lr --cache ../cache

With --scales (both ways), the low-resolution part holds only those scales: the high-resolution
part and x4's fit one upload together.

The packed index holds a SHA-256 of each cache's arrays, and unpack checks the rebuilt
files against it.
"""

import argparse
import concurrent.futures
import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np

import srdata
import train

SCALES = (2, 3, 4)


def digest(path):
    """SHA-256 of a cache's arrays (names, types, shapes, values): the .npz file's own bytes
    hold the time it was written."""
    h = hashlib.sha256()
    with np.load(path, allow_pickle=False) as data:
        for name in sorted(data.files):
            value = data[name]
            h.update(f"{name} {value.dtype} {value.shape}".encode())
            h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def encode(args):
    path, image = args
    ok, data = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])   # lossless
    if not ok:
        raise SystemExit(f"cannot encode {path}")
    Path(path).write_bytes(data.tobytes())


def decode(path):
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise SystemExit(f"cannot read {path}")
    return image


def pack(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index = {"degradation": args.degradation, "caches": {}}
    jobs = []
    if args.part == "hr":
        names = srdata.image_names("train")
        index["count"] = len(names)
        jobs = [(out / f"hr{i:04d}.webp", srdata.luma(srdata.read_bgr(name)))
                for i, name in enumerate(names)]
        for scale in SCALES:            # the held-out crops train.py reports on
            train.validation_set(scale, args.cache)
            (out / f"validation_x{scale}.npz").write_bytes(
                train.validation_path(args.cache, scale).read_bytes())
    for scale in args.scales:
        cache = train.cache_path(args.cache, scale, args.degradation)
        pairs = train.training_pairs(scale, args.degradation, args.cache)
        index["caches"][str(scale)] = {"sha256": digest(cache), "count": len(pairs),
                                       "variants": [len(lows) for _, lows in pairs]}
        if args.part == "lr":
            jobs += [(out / f"x{scale}_{i:04d}_{j}.webp", low)
                     for i, (_, lows) in enumerate(pairs) for j, low in enumerate(lows)]
    with concurrent.futures.ThreadPoolExecutor() as pool:
        list(pool.map(encode, jobs))
    (out / f"index-{args.part}.json").write_text(json.dumps(index, indent=1))
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{out}: {len(jobs)} pictures, {size / 1e6:.1f} MB")


def unpack(args):
    folders = [Path(f) for f in args.sources]
    index = json.loads(next(p for f in folders for p in f.glob("index-*.json")).read_text())

    def find(name):
        for folder in folders:
            if (folder / name).exists():
                return folder / name
        raise SystemExit(f"{name} is in none of {', '.join(map(str, folders))}")

    for scale in SCALES:
        path = train.validation_path(args.cache, scale)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(find(path.name).read_bytes())
    with concurrent.futures.ThreadPoolExecutor() as pool:
        hrs = list(pool.map(decode, [find(f"hr{i:04d}.webp") for i in range(index["count"])]))
        for scale in args.scales:
            held = index["caches"][str(scale)]
            cache = train.cache_path(args.cache, scale, index["degradation"])
            lows = list(pool.map(lambda i: [decode(find(f"x{scale}_{i:04d}_{j}.webp"))
                                            for j in range(held["variants"][i])],
                                 range(held["count"])))
            pairs = [(train.target(srdata.modcrop(hr, 2 * scale), scale, index["degradation"], i),
                      low) for i, (hr, low) in enumerate(zip(hrs, lows))]
            train.save_pairs(cache, pairs)
            if digest(cache) != held["sha256"]:
                cache.unlink()
                raise SystemExit(f"x{scale}: the rebuilt cache differs from the packed one")
            print(f"{cache}: rebuilt, SHA-256 as packed")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--part", choices=("hr", "lr"), required=True)
    p.add_argument("--degradation", choices=train.DEGRADATIONS, default="mix")
    u = sub.add_parser("unpack")
    u.add_argument("--from", dest="sources", nargs="+", required=True)
    u.add_argument("--cache", required=True)
    for sub_parser in (p, u):
        sub_parser.add_argument("--scales", type=int, nargs="+", choices=SCALES,
                                default=list(SCALES), help="the scales to carry (default all)")
    args = parser.parse_args()
    (pack if args.command == "pack" else unpack)(args)


if __name__ == "__main__":
    sys.exit(main())
