#!/usr/bin/env python3
"""Measure our networks (and OpenCV's FSRCNN) on the held-out split of ../shared/datasets,
as upscale.py runs them, and print the figures the README quotes.

Three protocols, on images no training step saw (srdata.image_names("validation")):
- clean: the papers' low-resolution image (MATLAB-style antialiased bicubic);
- crf18, crf23: that image after libx264 at CRF 18 or 23;
- video: short pans over the same images, made small the way the tool's users' clips are
  (ffmpeg's scale filter, then libx264 CRF 18), read back with OpenCV (x4 only by default).
PSNR is the papers' (MATLAB luma, a border as wide as the scale cut off), averaged over
images. "bicubic" is MATLAB's bicubic upscaling, "cubic" cv2.resize's (the tool's
baseline).

    UPSCALE_MODEL_DIR=../shared/models python models/measure.py
    python models/measure.py --scales 4 --limit 10 --methods fast \
        --candidate 'new=fast:runs/fast-x{scale}.pb'

Needs only what upscale.py needs (OpenCV, NumPy, imageio-ffmpeg); no TensorFlow.
"""

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

import srdata

import upscale  # noqa: E402  (srdata put the project root on the path)

PROTOCOLS = ("clean", "crf18", "crf23", "video")
PAN_FRAMES, PAN_STEP = 12, 3          # video protocol: frames per pan, pixels moved a frame


# Our shipped networks and the official FSRCNN, as upscale.py names them.
DEFAULT_METHODS = ("fast", "hq", "fsrcnn", "fsrcnn-opencv")
BASELINES = ("bicubic", "cubic")


def networks(scale, methods, candidates):
    """{label: upscaler} at one scale: each named method that has this scale, and each
    candidate file ("label": (method name, path pattern)) run as that method's network."""
    nets = {}
    for name in methods:
        method = upscale.METHODS[name]
        if scale in method.scales:
            nets[name] = upscale.NetworkUpscaler(
                method, scale, upscale.locate_model(method, scale))
    for label, (name, pattern) in candidates.items():
        path = Path(pattern.format(scale=scale)).expanduser()
        if path.is_file():
            nets[label] = upscale.NetworkUpscaler(upscale.METHODS[name], scale, path)
    return nets


def upscaled(low, scale, nets):
    """{label: upscaled BGR image} for each method."""
    out = {"bicubic": srdata.imresize(low, scale),
           "cubic": cv2.resize(low, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)}
    out.update({label: net.upscale(low) for label, net in nets.items()})
    return out


def still_pairs(hr, scale, protocol, ffmpeg):
    """[(truth, low-resolution image)] for one image and a still-image protocol."""
    low = srdata.low_resolution(hr, scale)
    if protocol != "clean":
        low = srdata.h264_frames([low], int(protocol[3:]), ffmpeg)[0]
    return [(hr, low)]


def pan_frames(image, scale):
    """A short pan over the image (at most 320x240): frames of a window moving right and
    down."""
    return srdata.pan_windows(image, PAN_FRAMES, PAN_STEP, 2 * scale, (240, 320))


def video_pairs(hr, scale, ffmpeg):
    """[(truth frame, frame as the tool reads it)]: the pan made small by ffmpeg's scale
    filter and libx264 CRF 18, as the seed's inputs were made."""
    frames = pan_frames(hr, scale)
    h, w = frames[0].shape[:2]
    lows = srdata.h264_frames(frames, 18, ffmpeg, ("-vf", f"scale={w // scale}:{h // scale}"))
    return list(zip(frames, lows))


def measure(scales, protocols, methods, candidates, limit, split="validation"):
    """{(scale, protocol, method): mean PSNR} over the held-out images (or, split "train",
    over the training images: how much better a network does on what it learnt from)."""
    ffmpeg = srdata.find_ffmpeg()
    names = srdata.image_names(split)[:limit or None]
    results = {}
    started, total, done = time.monotonic(), len(scales) * len(protocols) * len(names), 0
    for scale in scales:
        nets = networks(scale, methods, candidates)
        for protocol in protocols:
            figures = {}
            for name in names:
                hr = srdata.modcrop(srdata.read_bgr(name), 2 * scale)
                pairs = video_pairs(hr, scale, ffmpeg) if protocol == "video" else \
                    still_pairs(hr, scale, protocol, ffmpeg)
                per_image = {}
                for truth, low in pairs:
                    for label, image in upscaled(low, scale, nets).items():
                        per_image.setdefault(label, []).append(
                            srdata.psnr_y(truth, image, scale))
                for label, values in per_image.items():
                    figures.setdefault(label, []).append(np.mean(values))
                done += 1
                srdata.progress(done, total, started, "measuring")
            for label, values in figures.items():
                results[scale, protocol, label] = float(np.mean(values))
    return results, len(names), split


def report(results, count, split, out=sys.stdout):
    """Print the figures: PSNR of every method, then each network's gain over cubic."""
    labels = list(BASELINES) + sorted({m for _, _, m in results} - set(BASELINES),
                                      key=lambda m: -results.get((4, "clean", m), 0))
    keys = sorted({(s, p) for s, p, _ in results}, key=lambda k: (k[0], PROTOCOLS.index(k[1])))
    width = max(15, *(len(x) for x in labels))          # "29.91 (+1.04)"
    which = "held-out" if split == "validation" else "training"
    print(f"PSNR (dB, MATLAB luma, border = scale) on {count} {which} images; "
          "in brackets: the gain over cubic", file=out)
    print(f"{'scale':>5} {'protocol':<8} " + " ".join(f"{x:>{width}}" for x in labels), file=out)
    for scale, protocol in keys:
        cubic = results[scale, protocol, "cubic"]
        cells = []
        for label in labels:
            value = results.get((scale, protocol, label))
            text = "" if value is None else f"{value:.2f}" if label in BASELINES else \
                f"{value:.2f} ({value - cubic:+.2f})"
            cells.append(f"{text:>{width}}")
        print(f"{'x%d' % scale:>5} {protocol:<8} " + " ".join(cells), file=out)


def candidate_arg(text):
    """label=METHOD:PATTERN, e.g. new-fast=fast:runs/fast-x{scale}.pb"""
    label, _, rest = text.partition("=")
    name, _, pattern = rest.partition(":")
    if not label or name not in upscale.METHODS or not pattern:
        raise argparse.ArgumentTypeError("expected LABEL=METHOD:FILE-PATTERN")
    return label, (name, pattern)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    parser.add_argument("--limit", type=int, default=0, help="only the first N images")
    parser.add_argument("--split", choices=("validation", "train"), default="validation",
                        help="the held-out images (default), or those trained on")
    parser.add_argument("--methods", nargs="*", default=list(DEFAULT_METHODS),
                        choices=[n for n, m in upscale.METHODS.items() if m.is_network],
                        help="upscale.py networks to measure (default: %(default)s)")
    parser.add_argument("--candidate", type=candidate_arg, action="append", default=[],
                        help="also measure a model file as one method's network, e.g. "
                        "new-fast=fast:runs/fast-x{scale}.pb ({scale} filled in)")
    args = parser.parse_args()
    report(*measure(args.scales, args.protocols, args.methods, dict(args.candidate),
                    args.limit, args.split))


if __name__ == "__main__":
    main()
