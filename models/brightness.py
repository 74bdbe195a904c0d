#!/usr/bin/env python3
"""Whether our networks shift brightness, and what that shift is worth on the held-out split.

Two measurements, printed as tables:
- flat: the level each network gives a flat grey picture (20, 60, 130, 200, 240), less the
  grey: a network that learnt no bias gives 0;
- shifted: held-out PSNR (the papers' MATLAB luma, as measure.py) with the output's luma
  lowered by 0, 0.5 and 1 level, on clean pictures, after libx264 CRF 18 made with swscale's
  rounding (as cameras' encoders do not darken) and as measure.py makes it (swscale's
  default, which rounds BGR-to-YUV down), and on short pans made small and compressed with
  swscale's rounding.

    UPSCALE_MODEL_DIR=../shared/models python models/brightness.py --scales 2 4
"""

import argparse

import numpy as np

import measure
import srdata

GREYS = (20, 60, 130, 200, 240)
SHIFTS = (0.0, 0.5, 1.0)
ROUNDED = ("-vf", "scale=flags=accurate_rnd")


def flat_offsets(nets):
    """{label: [level out - level in, for each of GREYS]}."""
    return {label: [int(net.upscale(np.full((64, 64, 3), g, np.uint8))[64, 64, 0]) - g
                    for g in GREYS] for label, net in nets.items()}


def shifted_psnr(truth, test, border):
    """[PSNR with test's MATLAB luma lowered by each of SHIFTS]."""
    a = np.round(srdata.matlab_y(truth))[border:-border, border:-border]
    y = srdata.matlab_y(test)[border:-border, border:-border]
    return [10 * np.log10(255.0 ** 2 / np.mean((a - np.round(y - c)) ** 2)) for c in SHIFTS]


def pairs(hr, scale, protocol, ffmpeg):
    """[(truth, low-resolution picture)] of one held-out image under a protocol."""
    if protocol == "pan":
        frames = measure.pan_frames(hr, scale)[:4]
        h, w = frames[0].shape[:2]
        lows = srdata.h264_frames(frames, 18, ffmpeg, (
            "-vf", f"scale={w // scale}:{h // scale}:flags=bicubic+accurate_rnd"))
        return list(zip(frames, lows))
    low = srdata.low_resolution(hr, scale)
    if protocol != "clean":
        low = srdata.h264_frames([low], 18, ffmpeg, ROUNDED if protocol == "crf18" else ())[0]
    return [(hr, low)]


def shifted(nets, scale, protocols, limit):
    """{(protocol, label): [mean PSNR for each of SHIFTS]} over the held-out images."""
    ffmpeg = srdata.find_ffmpeg()
    names = srdata.image_names("validation")[:limit or None]
    out = {}
    for protocol in protocols:
        for name in names:
            hr = srdata.modcrop(srdata.read_bgr(name), 2 * scale)
            found = pairs(hr, scale, protocol, ffmpeg)
            for label, net in nets.items():
                out.setdefault((protocol, label), []).append(np.mean(
                    [shifted_psnr(t, net.upscale(low), scale) for t, low in found], axis=0))
    return {key: np.mean(values, axis=0) for key, values in out.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=["fast", "hq", "fsrcnn"])
    parser.add_argument("--protocols", nargs="+",
                        default=["clean", "crf18", "crf18-down", "pan"])
    parser.add_argument("--limit", type=int, default=0, help="held-out images (0: all)")
    args = parser.parse_args()
    for scale in args.scales:
        nets = measure.networks(scale, args.methods, {})
        print(f"x{scale}, flat grey {GREYS}: level out - level in")
        for label, offsets in flat_offsets(nets).items():
            print(f"  {label:8s} {offsets}")
        print(f"x{scale}, held-out PSNR with the output lowered by {SHIFTS} levels")
        for (protocol, label), figures in shifted(nets, scale, args.protocols,
                                                  args.limit).items():
            print(f"  {protocol:10s} {label:8s} " + " ".join(f"{x:.3f}" for x in figures))


if __name__ == "__main__":
    main()
