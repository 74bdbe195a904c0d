#!/usr/bin/env python3
"""Measure FSRCNN weights on the held-out split of ../shared/datasets, as upscale.py runs
them, and print the figures the README quotes.

Three protocols, on images no training step saw (srdata.image_names("validation")):
- clean: the papers' low-resolution image (MATLAB-style antialiased bicubic);
- crf18, crf23: that image after libx264 at CRF 18 or 23;
- video: short pans over the same images, made small the way the tool's users' clips are
  (ffmpeg's scale filter, then libx264 CRF 18), read back with OpenCV (x4 only by default).
PSNR is the papers' (MATLAB luma, a border as wide as the scale cut off), averaged over
images. "bicubic" is MATLAB's bicubic upscaling, "cubic" cv2.resize's (the tool's
baseline).

    UPSCALE_MODEL_DIR=../shared/models python models/measure.py
    python models/measure.py --scales 4 --limit 10 --ours 'runs/x{scale}.pb'

Needs only what upscale.py needs (OpenCV, NumPy, imageio-ffmpeg); no TensorFlow.
"""

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

import srdata

sys.path.insert(0, str(srdata.HERE.parent))
import upscale  # noqa: E402

PROTOCOLS = ("clean", "crf18", "crf23", "video")
PAN_FRAMES, PAN_STEP = 12, 3          # video protocol: frames per pan, pixels moved a frame


def networks(scale, ours_pattern):
    """{label: upscaler} of the networks to measure at one scale."""
    ours = Path(ours_pattern.format(scale=scale)) if ours_pattern else \
        upscale.locate_model(upscale.METHODS["fsrcnn"], scale, quiet=True)
    official = upscale.locate_model(upscale.METHODS["fsrcnn-opencv"], scale, quiet=True)
    method = upscale.METHODS["fsrcnn"]
    return {"ours": upscale.NetworkUpscaler(method, scale, ours),
            "official": upscale.NetworkUpscaler(method, scale, official)}


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
    """A short pan over the image: frames of a window moving right and down."""
    h, w = image.shape[:2]
    side_h = (min(h, 240) - PAN_FRAMES * PAN_STEP) // (2 * scale) * 2 * scale
    side_w = (min(w, 320) - PAN_FRAMES * PAN_STEP) // (2 * scale) * 2 * scale
    return [image[i * PAN_STEP:i * PAN_STEP + side_h, i * PAN_STEP:i * PAN_STEP + side_w]
            for i in range(PAN_FRAMES)]


def video_pairs(hr, scale, ffmpeg):
    """[(truth frame, frame as the tool reads it)]: the pan made small by ffmpeg's scale
    filter and libx264 CRF 18, as the seed's inputs were made."""
    frames = pan_frames(hr, scale)
    h, w = frames[0].shape[:2]
    lows = srdata.h264_frames(frames, 18, ffmpeg, ("-vf", f"scale={w // scale}:{h // scale}"))
    return list(zip(frames, lows))


def measure(scales, protocols, ours, limit):
    """{(scale, protocol, method): mean PSNR} over the held-out images."""
    ffmpeg = srdata.find_ffmpeg()
    names = srdata.image_names("validation")[:limit or None]
    results = {}
    started, total, done = time.monotonic(), len(scales) * len(protocols) * len(names), 0
    for scale in scales:
        nets = networks(scale, ours)
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
    return results, len(names)


def report(results, count, out=sys.stdout):
    labels = ("bicubic", "cubic", "official", "ours")
    keys = sorted({(s, p) for s, p, _ in results}, key=lambda k: (k[0], PROTOCOLS.index(k[1])))
    print(f"PSNR (dB, MATLAB luma, border = scale) on {count} held-out images", file=out)
    print(f"{'scale':>5} {'protocol':<8} " + " ".join(f"{x:>9}" for x in labels) +
          "   ours-bicubic  ours-official  ours-cubic", file=out)
    for scale, protocol in keys:
        row = [results[scale, protocol, x] for x in labels]
        print(f"{'x%d' % scale:>5} {protocol:<8} " + " ".join(f"{v:9.2f}" for v in row) +
              f"   {row[3] - row[0]:+12.2f}  {row[3] - row[2]:+13.2f}  {row[3] - row[1]:+10.2f}",
              file=out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    parser.add_argument("--limit", type=int, default=0, help="only the first N images")
    parser.add_argument("--ours", help="model files to measure as ours, {scale} filled in "
                        "(default: the files upscale.py ships)")
    args = parser.parse_args()
    report(*measure(args.scales, args.protocols, args.ours, args.limit))


if __name__ == "__main__":
    main()
