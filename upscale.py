#!/usr/bin/env python3
"""upscale.py - make low-resolution video sharper and bigger with deep-learning super-resolution.

Each frame of the source is read with OpenCV, enlarged by a super-resolution network run
through OpenCV's dnn (our own fast and hq networks and FSRCNN weights, or OpenCV's
official FSRCNN, FSRCNN-small, ESPCN, LapSRN, EDSR) or a classic interpolation baseline,
brought to the size asked for, written to a temporary file, and finally muxed by ffmpeg with
the source's audio, subtitles, chapters and metadata. The finished file appears under its
final name only when it is complete.

Usage:
    python upscale.py clip.mp4                       # fast network, x4 -> clip_fast_x4.mp4
    python upscale.py clip720.mp4 --height 1080      # -> clip720_fast_1080p.mp4
    python upscale.py clip.mp4 --model espcn --scale 2
    python upscale.py IMG_0001.HEIC                  # a photo -> IMG_0001_fast_x2.jpg
    python upscale.py videos/ --output-dir out/      # every video and picture inside videos/
    for f in clips/*.mp4; do python upscale.py "$f" --scale 2; done
    python upscale.py --compare clip.mp4 --scale 4   # which method is best, measured
    python upscale.py clip.mp4 --benchmark           # each stage's speed, side by side
    python upscale.py film.mkv --part 3/8            # a share of one video (then: no --part)

A video is worked through in segments kept in a hidden work folder beside the output, so a
run stopped by anything (kill -9 included) goes on where it stopped when run again, and
--part K/N shares one video among processes or machines.

How to read this file: its sections follow a frame from input to output.
  1. Constants and tables: one row per model (METHODS), codec (CODECS), container.
  2. Errors and console output: UpscaleError is the one error path; `console` prints.
  3. Settings, sizes and output names: what was asked, the size each frame becomes
     (plan_frames), and the name the result gets.
  4. Files on disk: temporary files beside the output, stale ones removed, publishing.
  5. ffmpeg: the one place that starts it, and probing a file from its report.
  6. Model files: found, downloaded, verified.
  7. Upscalers, one class per kind (UPSCALER_KINDS): resize, network, a network fitted
     to a size, ffmpeg's scaler (whole files).
  8. Reading frames (cv2.VideoCapture; ffmpeg through a pipe for what OpenCV cannot decode
     or would change: AV1, interlaced video, deinterlaced on the way, HDR and wide gamut,
     kept, in 16 bits for 10-bit HDR) and the pipeline: a reader thread, workers that
     upscale and encode in order.
  9. Segments: the work folder, resume, --part.
 10. Timing and muxing: the frames' own times put back, the source's other streams added
     (what the output's muxer would refuse found by a trial mux before any work), its
     creation time written into MP4 headers, its subtitle files copied beside the output.
 11. One file end to end: a Job (probe, orientation, size plan, output path) through
     steps 7-10, and the same for pictures (an animated PNG, WebP or AVIF frame by
     frame).
 12. Many files: inputs expanded, runs one by one or by --jobs children, progress.
 13. Benchmark and compare, which measure the same pipeline.
 14. Appendix: the luma networks' graphs rewritten into faster equivalents, and into ONNX
     models for OpenCV 5.1, which reads no TensorFlow graphs (self-contained).
 15. Command line: the parser, its checks into Settings, and main().

Our own weights (the default fast network, hq and FSRCNN, trained by models/train.py) ship in
models/ beside this script. The official model files (.pb) are looked up in --model-dir,
then $UPSCALE_MODEL_DIR, then models/, and downloaded on demand from their official
repositories (SHA-256 checked).
ffmpeg is $UPSCALE_FFMPEG, else imageio-ffmpeg's pinned build, else the first on PATH.
Run `python upscale.py --help` for every option.
"""

import argparse
import codecs
import collections
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import datetime
import errno
import fractions
import functools
import hashlib
import http.client
import itertools
import json
import math
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

# OpenCV's own log lines (an ERROR and a WARN while loading ESPCN under OpenCV 5, decoder
# chatter from its bundled FFmpeg) are noise to the user; they must be silenced before import.
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

__version__ = "1.0.0"


# ---------------------------------------------------------------------------------------------
# Constants and tables
# ---------------------------------------------------------------------------------------------

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
# Signals that stop a run, each cleaned up after like Ctrl-C; the exit status is 128 + signal
# (a closed terminal or ssh session sends SIGHUP).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))

# An animated GIF is a video here (each frame's delay kept; the output is MP4), or, with -o
# naming an animated picture's format (ANIMATED_PICTURES), a picture that keeps its
# transparency.
VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .wmv .flv .mpg .mpeg .ts .m2ts .mts .3gp .ogv .gif "
    ".vob .mod .tod .dv .mxf .asf .divx .f4v .3g2 .m2v .rm .rmvb .y4m".split())
IMAGE_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .bmp .tif .tiff .webp .avif .heic .heif .jp2 .ppm .pgm .pnm".split())
# ffmpeg's codec names for pictures whose usual extension is not the codec's name.
PICTURE_CODEC_EXTENSIONS = {"mjpeg": "jpg", "jpeg2000": "jp2"}
# A picture's output format: JPEG, WebP and AVIF stay themselves (at high quality); HEIC and
# HEIF (a phone's photos) become JPEG; the rest (PNG, BMP, TIFF, JPEG 2000, PPM/PGM) PNG,
# lossless and small.
PICTURE_OUTPUTS = {".jpg": ".jpg", ".jpeg": ".jpg", ".webp": ".webp", ".avif": ".avif",
                   ".heic": ".jpg", ".heif": ".jpg"}
# Pictures OpenCV cannot decode, and ffmpeg (7.1 or newer, as imageio-ffmpeg's) can: HEIC
# and HEIF, whose tile grids and rotation it puts together. Any other picture OpenCV fails
# on is tried with ffmpeg too.
FFMPEG_PICTURES = (".heic", ".heif")
PICTURE_WRITES = (".png", ".jpg", ".jpeg", ".webp", ".avif")  # what -o may name for one
PICTURE_QUALITY = 95
# An animated PNG, WebP or AVIF stays animated, in its own format, each frame shown as long
# as it was. OpenCV encodes an animation whole in memory (imencodeanimation), so one whose
# upscaled frames would take more than ANIMATION_MEMORY is refused before any work.
ANIMATED_PICTURES = (".png", ".webp", ".avif")
ANIMATION_MEMORY = 4 << 30
# The outputs a picture's ICC colour profile and EXIF are written into: added to the encoded
# bytes, or (a still AVIF) given to the encoder (cv2.imencodeWithMetadata).
METADATA_PICTURES = (".png", ".jpg", ".webp")
ENCODER_METADATA_PICTURES = (".avif",)
# The outputs a 16-bit picture (PNG, TIFF: scans, developed raw photos) stays 16-bit in.
DEEP_PICTURES = (".png",)

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = HERE / "models"
MODEL_URL_ENV = "UPSCALE_MODEL_URL"     # overrides every official base URL (mirrors, tests)
MODEL_DIR_ENV = "UPSCALE_MODEL_DIR"

FSRCNN_URL = "https://raw.githubusercontent.com/Saafke/FSRCNN_Tensorflow/master/models"
ESPCN_URL = "https://raw.githubusercontent.com/fannymonori/TF-ESPCN/master/export"
LAPSRN_URL = "https://raw.githubusercontent.com/fannymonori/TF-LapSRN/master/export"
EDSR_URL = "https://raw.githubusercontent.com/Saafke/EDSR_Tensorflow/master/models"


@dataclass(frozen=True)
class Method:
    """One way of enlarging frames: a dnn_superres network, cv2.resize, or ffmpeg's scaler."""
    name: str
    scales: tuple
    runs: str                  # "luma" / "bgr" network, "resize" or "ffmpeg"
    algo: str = ""             # dnn_superres algorithm name
    file_pattern: str = ""     # official file name, {scale} filled in
    # Official folder the file is downloaded from; "": the file ships in models/ (our own
    # weights, see models/README.md).
    url: str = ""
    official: str = ""         # the method with the official weights of the same network
    interpolation: int = cv2.INTER_CUBIC
    about: str = ""
    features: int = 0          # widest feature map, channels: memory per input pixel
    reach: int = 0             # input pixels a tile needs around it to come out seamless
    cache_tile: int = 0        # tiles that keep feature maps in the CPU cache (cache_tile())
    streams: int = 1           # networks run side by side (see inference_streams)
    # Whole-run seconds per megapixel of (input, network output) a frame costs on a 2-core
    # x86-64 machine, fitted to whole runs: the light networks work at the input size,
    # LapSRN and EDSR up to the output size (EDSR: reported ~3 s per 192x128 frame at x4 on
    # a desktop CPU). Only for up-front estimates and segment lengths.
    cost: tuple = (0.0, 0.0)
    # OpenCV 5 DNN engine for the rewritten graph (see fast_graph): "new" ran FSRCNN's 12%
    # faster on a 2-core x86-64; "classic" ran ESPCN's 5% faster and parses the originals.
    engine: str = "classic"
    # Its graph translates to ONNX (onnx_model): it runs on OpenCV 5.1 and later, which read
    # no TensorFlow files. LapSRN's and EDSR's hold operations the translation leaves out.
    onnx: bool = False

    @property
    def is_network(self):
        return self.runs in ("luma", "bgr")

    @property
    def kind(self):
        """The class of upscaler that runs this method (UPSCALER_KINDS)."""
        return UPSCALER_KINDS[self.runs]

    def file_name(self, scale):
        return self.file_pattern.format(scale=scale)


ANY_SCALE = tuple(range(2, 9))

METHODS = {m.name: m for m in (
    # Our own networks (models/train.py, models/nets.py); they ship in models/, so they
    # need no download. fast: a plain 3x3 network at about FSRCNN's cost, trained with
    # collapsible linear blocks; the default.
    # Its cost: FSRCNN's input term times 0.83, the whole-run time ratio measured side by
    # side (tests/model_speeds.py: 0.85 at 640x360 x2, 0.81 on the sample at x4).
    Method("fast", (2, 3, 4), "luma", "fsrcnn", "fast-upscalepy_x{scale}.pb",
           about="sharpest at its speed (default; ours, shipped)", official="fsrcnn-opencv",
           features=16, reach=8, streams=2, engine="new", cache_tile=128, onnx=True,
           cost=(0.165, 0.008)),
    # hq: the same family twice as wide and up to twice as deep (about 7x FSRCNN's
    # multiply-adds), trained from fast's weights (models/README.md); for those who can
    # wait. Its cost: fast's times 3.4, the whole-run time ratio measured side by side
    # (tests/model_speeds.py: 3.4 / 3.6 / 3.3 at 640x360 / 1280x720 / 1920x1080 x2; a
    # later run: 3.0 / 2.8 / 3.0).
    # Tiles of 128 ran it 2.2x (640x360) and 1.7x (1280x720) faster than whole frames.
    Method("hq", (2, 3, 4), "luma", "fsrcnn", "hq-upscalepy_x{scale}.pb",
           about="sharpest; about 3x fast's time (ours, shipped)", official="fsrcnn-opencv",
           features=32, reach=9, streams=2, engine="new", cache_tile=128, onnx=True,
           cost=(0.56, 0.008)),
    # FSRCNN: the official network with our own weights.
    Method("fsrcnn", (2, 3, 4), "luma", "fsrcnn", "FSRCNN-upscalepy_x{scale}.pb",
           about="FSRCNN with our weights (shipped)", official="fsrcnn-opencv",
           features=56, reach=8, streams=2, engine="new", cache_tile=128, onnx=True,
           cost=(0.2, 0.008)),
    Method("fsrcnn-opencv", (2, 3, 4), "luma", "fsrcnn", "FSRCNN_x{scale}.pb", FSRCNN_URL,
           about="FSRCNN with OpenCV's official weights", features=56, reach=8, streams=2,
           engine="new", cache_tile=128, onnx=True, cost=(0.2, 0.008)),
    Method("fsrcnn-small", (2, 3, 4), "luma", "fsrcnn", "FSRCNN-small_x{scale}.pb", FSRCNN_URL,
           about="fastest network", features=32, reach=8, streams=2, engine="new",
           cache_tile=128, onnx=True, cost=(0.08, 0.006)),
    Method("espcn", (2, 3, 4), "luma", "espcn", "ESPCN_x{scale}.pb", ESPCN_URL,
           about="fast, good", features=64, reach=8, streams=2, cache_tile=128, onnx=True,
           cost=(0.24, 0.005)),
    Method("lapsrn", (2, 4, 8), "luma", "lapsrn", "LapSRN_x{scale}.pb", LAPSRN_URL,
           about="slow (~100x FSRCNN), x8 capable", features=64, reach=32, cost=(0.0, 1.4)),
    Method("edsr", (2, 3, 4), "bgr", "edsr", "EDSR_x{scale}.pb", EDSR_URL,
           about="very slow, best quality", features=256, reach=80, cost=(0.0, 7.7)),
    Method("nearest", ANY_SCALE, "resize", interpolation=cv2.INTER_NEAREST,
           about="baseline: cv2.resize nearest"),
    Method("linear", ANY_SCALE, "resize", interpolation=cv2.INTER_LINEAR,
           about="baseline: cv2.resize bilinear"),
    Method("cubic", ANY_SCALE, "resize", interpolation=cv2.INTER_CUBIC,
           about="baseline: cv2.resize bicubic"),
    Method("area", ANY_SCALE, "resize", interpolation=cv2.INTER_AREA,
           about="baseline: cv2.resize area"),
    Method("lanczos", ANY_SCALE, "resize", interpolation=cv2.INTER_LANCZOS4,
           about="baseline: cv2.resize Lanczos-4"),
    Method("ffmpeg", ANY_SCALE, "ffmpeg", about="baseline: ffmpeg's bicubic scaler"),
)}

DEFAULT_METHOD = "fast"

# Every file is pinned: ours (made by models/train.py, committed in models/) and the official
# ones. EDSR's files could not be fetched where this was written, so they are pinned by their
# git blob ids in the official repository (sha1 of "blob <size>\0" + content), which identify
# the bytes just as well.
MODEL_CHECKSUMS = {
    "fast-upscalepy_x2.pb":
        "sha256:dab282fd758cb329ac836002686b6cd88c4deb4f0787e4b77a7ba98828074cc7",
    "fast-upscalepy_x3.pb":
        "sha256:02fd78ebc091e5ce5ba2bcf794711dbd7ce59f335358e241d83f7b27992d09a9",
    "fast-upscalepy_x4.pb":
        "sha256:543143f15afcbfb483eabb2814b13c916a146cca5b61c6ec7525a3de0e22a166",
    "hq-upscalepy_x2.pb":
        "sha256:181c9da6bd17dc1047cb52ea33e2afe97898d8cb118d51ed55eda477e4f9a38e",
    "hq-upscalepy_x3.pb":
        "sha256:724e84478b68fb5e7b3d12c0febe9817e8ea49a76c77644d4893f4d859c8be08",
    "hq-upscalepy_x4.pb":
        "sha256:51f2689febb9233e4c31cce2136eeeeb297227674a5400454fb1bc7b4e6fed70",
    "FSRCNN-upscalepy_x2.pb":
        "sha256:ec087c7a4bd3f1e6c7ca7c469d21190034b0d829d62089e1d2f0d2c6130f600f",
    "FSRCNN-upscalepy_x3.pb":
        "sha256:3ff050b0cdc2a48db82ba9a109f04f7784873c393b4194eda55b32f8d56d8a2f",
    "FSRCNN-upscalepy_x4.pb":
        "sha256:51b96ae4bf51c3179d70c82771fff0fda55bca68765b5c379b0b250781d59ec4",
    "ESPCN_x2.pb": "sha256:59f77351e1d7c0057bf6fe088b4a8a07e42c468c8c8aebb674a6b4ea1823221d",
    "ESPCN_x3.pb": "sha256:0e667db7a431d14c32568ed79bf21701a64df8b1d162e48ca1f8800affe2c2b3",
    "ESPCN_x4.pb": "sha256:e403f06309229cf36009cd8fb0da032ba7643fae9f15cf94fe562e8edf8fef47",
    "FSRCNN-small_x2.pb":
        "sha256:429e4793d049c1ae16ddbbc322fd11c3c08831c0c20137390b4d098976a2b0d9",
    "FSRCNN-small_x3.pb":
        "sha256:58e72d0c4231b8e754180e787d7348f45ae6230ee3c5af7dc12b558467f593f7",
    "FSRCNN-small_x4.pb":
        "sha256:92a9f57c28494813b4dc073b51a300cb909401454d77541bcdc96b4d55901d02",
    "FSRCNN_x2.pb": "sha256:366b33f0084c7b3f2bf6724f0a2c77bca94fcec9d7b6d72389d330073b380d5c",
    "FSRCNN_x3.pb": "sha256:efd38655a815908c6c8954db6052f128e76a735f1de657894c477d0dc0b64481",
    "FSRCNN_x4.pb": "sha256:5c68d18db561aed8ead4ffedf1b897ea615baaf60ebf6c35f8e641f8fa4a21bf",
    "LapSRN_x2.pb": "sha256:f59c86e6835bbca646dbd81588f07820dfe3bd09e3702976ae2d90b5fc0f0b21",
    "LapSRN_x4.pb": "sha256:d3e95c93cafae5ce5a8ed57ce9abf07f2de58da8c5d6d656b766774969835ee2",
    "LapSRN_x8.pb": "sha256:a00211938b2b4c7d23691525a9267d9d0bbb345cdb9f38a7fc917414a5a1884f",
    "EDSR_x2.pb": "gitblob:7087df167eae8865b25b4f6032c819aacde25b8a",
    "EDSR_x3.pb": "gitblob:9b9082ceca0d5a2fc6d6bae7456e2c7934b3aa4d",
    "EDSR_x4.pb": "gitblob:09b872b26a6ba8d43abe433e65e65477ff8714ea",
}

# EDSR's mean of the DIV2K training set, subtracted before and added after the network.
EDSR_MEAN_BGR = (103.1545782, 111.561547, 114.35629928)


# x264's and x265's speed presets, fastest first (--preset); every encoder frames are piped
# to takes these names, each row of CODECS saying what they mean to its encoder.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")


@dataclass(frozen=True)
class Codec:
    """A video codec of the final file: what the temporary file holds and how ffmpeg ends it."""
    name: str
    temp_fourcc: str           # what cv2.VideoWriter writes ("": frames are piped to ffmpeg)
    ffmpeg_args: tuple         # the encoder's; () means the temporary stream is copied
    about: str
    encoder: str               # what encodes the frames, as --benchmark names it
    container: str = "mp4"     # the output's container when neither -o nor --format names one
    # Piped encoders only: --crf's default and highest value on the encoder's own scale,
    # and the encoder's options for each of X264_PRESETS (None: -preset NAME, as x264's).
    crf: int = 18
    crf_max: int = 51
    speeds: tuple = None
    # The container the segments are joined in: QuickTime's muxer (the MP4 layout that
    # rewrite_mp4_timing reads) where ffmpeg's MP4 muxer before 6.0 refuses the codec
    # (FFV1, with Debian 12's 5.1); MP4's where QuickTime's refuses it (AV1, VP9).
    joined_format: str = "mov"
    # What the encoder writes from frames of more than 8 bits (HDR kept: ffmpeg reads them
    # as 16-bit): its 10-bit format, or "" where players expect 8 bits (H.264's High 10
    # plays on few devices) or frames go through cv2.VideoWriter, which takes 8 bits.
    deep_pix_fmt: str = ""
    # Its encoder's option for HDR10's static metadata (mastering display, content light
    # level: HDR_METADATA_FORMATS), which piped raw frames lose; "" where it takes none.
    hdr_option: str = ""

    @property
    def piped(self):
        """Whether frames go straight to an ffmpeg encoder (no intermediate file): it
        converts BGR to YUV with the source's own matrix and range, and the temporary
        file holds the final stream, a few MB a minute rather than a lossless copy."""
        return not self.temp_fourcc

    @property
    def tuned(self):
        """Whether --crf and --preset apply: the encoders frames are piped to."""
        return self.piped

    def encoder_args(self, crf, preset, deep=False, hdr=None):
        """The ffmpeg options that encode with this codec at a CRF and speed preset; deep:
        from frames of more than 8 bits, kept in 10 where the codec can; hdr: the source's
        HDR10 static metadata (hdr_static_metadata), written where the encoder can."""
        speed = ("-preset", preset) if self.speeds is None else \
            self.speeds[X264_PRESETS.index(preset)]
        args = list(self.ffmpeg_args)
        if deep and self.deep_pix_fmt:
            args[args.index("-pix_fmt") + 1] = self.deep_pix_fmt
        if hdr and self.hdr_option:
            params = hdr_params(self.hdr_option, **hdr)
            if self.hdr_option in args:         # joined to the options already there
                at = args.index(self.hdr_option) + 1
                args[at] += ":" + params
            else:
                args += [self.hdr_option, params]
        return [*args, "-crf", str(crf), *speed]


@dataclass(frozen=True)
class HdrWriting:
    """How an encoder's options spell HDR10's static metadata."""
    mastering: str             # its option for the mastering display
    light: str                 # for the content light levels (MaxCLL, MaxFALL)
    xy: object                 # a chromaticity as it writes one
    nits: object               # a luminance (cd/m2) as it writes one


# x265 counts chromaticities in 0.00002 and luminance in 0.0001 cd/m2; SVT-AV1 takes numbers.
HDR_METADATA_FORMATS = {
    "-x265-params": HdrWriting("master-display", "max-cll", lambda v: str(round(v * 50000)),
                               lambda v: str(round(v * 10000))),
    "-svtav1-params": HdrWriting("mastering-display", "content-light", lambda v: f"{v:.4f}",
                                 lambda v: f"{v:.4f}"),
}


def hdr_params(option, primaries, white, luminance, light):
    """HDR10's static metadata (hdr_static_metadata) as the encoder option `option` takes
    it: `master-display=G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min):max-cll=CLL,FALL` for x265."""
    form = HDR_METADATA_FORMATS[option]

    def pair(a, b, spell):
        return f"({spell(a)},{spell(b)})"
    params = []
    if primaries:
        params.append(f"{form.mastering}=" + "".join(
            key.upper() + pair(*primaries[key], form.xy) for key in "gbr") +
            "WP" + pair(*white, form.xy) + "L" + pair(luminance[1], luminance[0], form.nits))
    if light:
        params.append(f"{form.light}={light[0]},{light[1]}")
    return ":".join(params)


# The frames' own times are written into the MP4's sample table after the encode
# (rewrite_mp4_timing), B-frames' (x264's 3, x265's 4) with their composition offsets: at
# the same PSNR they made the sample 11% smaller (README, "Default codec"). AV1 and VP9 need
# none: a frame coded ahead travels hidden inside the packet of the frame shown at its time.
CODECS = {c.name: c for c in (
    Codec("mp4v", "mp4v", (), "MPEG-4 Part 2 straight from OpenCV's writer (browsers and "
          "phones may refuse to play it)", "VideoWriter mp4v"),
    Codec("h264", "", ("-c:v", "libx264", "-pix_fmt", "yuv420p"),
          "H.264, plays everywhere including browsers", "x264"),
    Codec("h265", "", ("-c:v", "libx265", "-pix_fmt", "yuv420p", "-tag:v", "hvc1",
                       "-x265-params", "log-level=error"),
          "H.265/HEVC, smaller files; 10-bit from an HDR source", "x265",
          deep_pix_fmt="yuv420p10le", hdr_option="-x265-params"),
    # SVT-AV1 at CRF 20 kept what x264 at CRF 18 keeps (within 0.25 dB) in a sixth to all
    # of its bytes, as fast on 2 cores (README, "Default codec"). Presets 13 to 0.
    Codec("av1", "", ("-c:v", "libsvtav1", "-pix_fmt", "yuv420p"),
          "AV1 (SVT-AV1): smaller than H.264 at its quality, as fast; plays in current "
          "browsers and phones", "SVT-AV1", crf=20, crf_max=63,
          speeds=tuple(("-preset", str(n)) for n in (12, 11, 10, 9, 8, 7, 6, 4, 2, 0)),
          joined_format="mp4", deep_pix_fmt="yuv420p10le", hdr_option="-svtav1-params"),
    # libvpx's realtime modes for the fast presets: its "good" mode at its fastest took four
    # times x264 superfast's time. -b:v 0 makes -crf constant quality.
    Codec("vp9", "", ("-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-b:v", "0", "-row-mt",
                      "1"),
          "VP9 (libvpx), WebM's usual codec: smaller than H.264, plays in every browser",
          "libvpx VP9", container="webm", crf=22, crf_max=63,
          speeds=tuple(("-deadline", mode, "-cpu-used", str(n)) for mode, n in (
              ("realtime", 8), ("realtime", 7), ("realtime", 6), ("realtime", 5),
              ("good", 5), ("good", 4), ("good", 3), ("good", 2), ("good", 1), ("good", 0))),
          joined_format="mp4", deep_pix_fmt="yuv420p10le"),
    # Encoded from a lossless FFV1 temporary file.
    Codec("ffv1", "FFV1", ("-c:v", "ffv1", "-level", "3", "-pix_fmt", "yuv444p"),
          "lossless FFV1 (Matroska), for further editing", "VideoWriter FFV1", container="mkv"),
)}

# The output of a plain run: H.264 plays in browsers and on phones. Its preset and CRF were
# chosen from measurements on a 2-core machine (README, "Default codec"). An HDR source of
# more than 8 bits (phones record 10-bit HLG) becomes 10-bit H.265, as phones write it.
DEFAULT_CODEC, DEFAULT_PRESET = "h264", "superfast"
DEFAULT_DEEP_CODEC = "h265"

# Audio codecs MP4 can carry as they are; anything else is re-encoded to AAC there.
MP4_AUDIO_CODECS = frozenset("aac mp3 mp2 ac3 eac3 alac flac opus".split())
TEXT_SUBTITLE_CODECS = frozenset("subrip srt ass ssa webvtt mov_text text".split())
# The channel layouts libopus encodes (Vorbis order), to which others are remixed first: it
# refuses the 5.1(side) of most AC-3 and DTS tracks, 2.1, 4.0 and 7.1(wide) outright.
OPUS_LAYOUTS = "mono|stereo|3.0|quad|5.0|5.1|6.1|7.1"
# Subtitles Matroska carries as they are (ffmpeg's muxer refuses MP4's mov_text, teletext
# and closed captions, and would only say so as the output is written).
MATROSKA_SUBTITLE_CODECS = frozenset(
    "subrip srt ass ssa webvtt text hdmv_pgs_subtitle dvd_subtitle dvb_subtitle "
    "hdmv_text_subtitle".split())


@dataclass(frozen=True)
class Container:
    """An output container: how it is named, what ffmpeg calls it, what it carries."""
    name: str                  # --format
    extensions: tuple          # the first is the one outputs get
    ffmpeg_format: str
    audio: frozenset = None    # audio codecs carried as they are; None: any
    # Subtitles it carries as they are (None: any); other text ones become
    # text_subtitles_as, other picture ones are dropped.
    subtitles: frozenset = None
    text_subtitles_as: str = ""
    attachments: bool = False  # fonts and other attached files
    codecs: tuple = ()         # video codecs (CODECS) it may hold; (): any
    # What audio it cannot carry as it is becomes: (ffmpeg's encoder, its name, bitrate,
    # the channel layouts the encoder takes, "" for any it converts to by itself).
    audio_reencode: tuple = ("aac", "AAC", "256k", "")


CONTAINERS = {c.name: c for c in (
    Container("mp4", (".mp4", ".m4v"), "mp4", MP4_AUDIO_CODECS, frozenset(("mov_text",)),
              "mov_text", codecs=("mp4v", "h264", "h265", "av1", "vp9")),
    # QuickTime also carries uncompressed audio as it is (but not FLAC or Opus, nor AV1 or
    # VP9, to ffmpeg).
    Container("mov", (".mov",), "mov", MP4_AUDIO_CODECS - {"flac", "opus"} | {
        "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_f32le",
        "pcm_u8"}, frozenset(("mov_text",)), "mov_text", codecs=("mp4v", "h264", "h265")),
    Container("mkv", (".mkv",), "matroska", subtitles=MATROSKA_SUBTITLE_CODECS,
              text_subtitles_as="subrip", attachments=True),
    # The web's Matroska: VP9 or AV1, Opus or Vorbis, WebVTT subtitles.
    Container("webm", (".webm",), "webm", frozenset(("opus", "vorbis")),
              frozenset(("webvtt",)), "webvtt", codecs=("vp9", "av1"),
              audio_reencode=("libopus", "Opus", "192k", OPUS_LAYOUTS)),
)}


MAX_OUTPUT_PIXELS = 7680 * 4320       # 8K UHD: beyond it a frame no longer fits comfortably
SLOW_RUN_SECONDS = 600                # say how long a run will take when it exceeds this

PROGRESS_INTERVAL_TTY = 0.25      # seconds between redraws of the progress line
PROGRESS_INTERVAL_LOG = 10.0      # seconds between plain progress lines in logs
PROGRESS_INTERVAL_JOB = 2.0       # ... from a --jobs child whose parent writes to a terminal
QUEUE_DEPTH = 4                   # frames in flight between stages: bounds memory
# cv2.VideoWriter reports no write errors: a full disk would only show at the mux, after
# every frame. The writer looks at the free space this often instead, and stops below this.
DISK_CHECK_SECONDS = 1.0
DISK_RESERVE_BYTES = 16 << 20


# ---------------------------------------------------------------------------------------------
# Errors and console output: the tool's one error path (UpscaleError, describe) and the
#   one console every line the user reads goes through
# ---------------------------------------------------------------------------------------------

class UpscaleError(Exception):
    """An input failed; the message is one line for the user that says what to do."""


class UsageError(UpscaleError):
    """The command line itself is wrong: nothing is started."""


class OutputTaken(UpscaleError):
    """Another run made the output first: this run's work for it has no further use."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived; unwinds like KeyboardInterrupt so every cleanup runs."""

    def __init__(self, signum=signal.SIGTERM):
        super().__init__(signum)
        self.signum = signum


def show_bytes(err):
    """Codec error handler: a file name's bytes that are not UTF-8 (Python holds them as lone
    surrogates) written as \\xff, as one would type them; any other character the stream
    cannot take as \\uXXXX. What the tool prints stays valid text."""
    shown = [f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else
             c.encode("ascii", "backslashreplace").decode() for c in err.object[err.start:err.end]]
    return "".join(shown), err.end


BYTES_SHOWN = "upscale-bytes-shown"
codecs.register_error(BYTES_SHOWN, show_bytes)


class Console:
    """Everything the user reads on stderr goes through here: notes and progress lines,
    which --quiet silences, and warnings and errors, which nothing silences. The process
    has one, `console`; main() sets quiet from the command line."""

    def __init__(self, quiet=False):
        self.quiet = quiet

    def say(self, message, always=False):
        """A note, shown unless quiet (always: shown anyway, as a summary with failures)."""
        if always or not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def warn(self, message):
        print(f"upscale: warning: {message}", file=sys.stderr, flush=True)

    def error(self, message):
        """The one way an error reaches the user: one line on stderr."""
        print("upscale: error: " + " ".join(str(message).split()), file=sys.stderr,
              flush=True)

    @contextlib.contextmanager
    def muted(self):
        """Notes and progress silenced for a while (a run --benchmark times)."""
        saved, self.quiet = self.quiet, True
        try:
            yield
        finally:
            self.quiet = saved


console = Console()


def os_error_advice(exc):
    """What went wrong writing beside the output, and what to do, for an OSError: the
    folder the user chose (never a hidden work file), and the remedy that fits."""
    folder = Path(exc.filename).parent if exc.filename else None
    while folder is not None and folder.name.startswith("."):    # a work folder of ours
        folder = folder.parent
    if exc.errno == errno.ENAMETOOLONG:
        return (f"{exc.strerror}: the output's name, made from the input's, is longer than "
                "the file system allows; name the output with -o")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"{exc.strerror}: {folder or 'the output folder'} is read-only for this user; "
                "write the outputs elsewhere with --output-dir (or -o)")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"{exc.strerror} in {folder or 'the output folder'}; free some space, or write "
                "the outputs elsewhere with --output-dir")
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}; check the output folder and free space"


def describe(exc, source=None):
    """One line for an exception that ends a file's run: UpscaleError's own message;
    OpenCV's last line, or any other error's type and text, named with the file."""
    if isinstance(exc, UpscaleError):
        return str(exc)
    if isinstance(exc, OSError):          # disk full, permissions, a path that is a file...
        return f"{source}: cannot write the output: {os_error_advice(exc)}"
    lines = str(exc).strip().splitlines()
    if isinstance(exc, cv2.error):
        return f"{source}: OpenCV failed: {lines[-1].strip() if lines else exc}"
    return (f"{source}: {type(exc).__name__}: {lines[-1] if lines else ''} (an error in "
            "upscale.py itself; please report it with this line)")


# ---------------------------------------------------------------------------------------------
# Settings, sizes and output names: what a run was asked, and what each file's output becomes
# ---------------------------------------------------------------------------------------------

# Without a size asked for, a video's output stays within 4K UHD (either way round), and a
# picture's within 50 megapixels (a 12-megapixel phone photo at x2).
FIT_WITHIN = (3840, 2160)
PICTURE_FIT_PIXELS = 50_000_000
# --scale, as a number or as a height ("1080p"); --height and --width bounds.
MAX_SCALE = 8.0
MIN_SIDE, MAX_SIDE = 16, 7680


@dataclass(frozen=True)
class SizeRequest:
    """The output size asked for: a scale (any number from 1 to 8), a height or a width (the
    other side follows the source's display aspect ratio), or "fit" (nothing asked: the
    largest scale the model has whose output stays within 4K)."""
    kind: str = "fit"          # "scale", "height", "width" or "fit"
    value: float = 0.0
    why: str = ""              # for a resolved fit: why this scale ("to stay within 4K")

    def options(self):
        """The command-line options that ask for it (for the child processes of --jobs)."""
        return {"scale": ["--scale", f"{self.value:g}"], "height": ["--height", f"{self.value:g}"],
                "width": ["--width", f"{self.value:g}"], "fit": []}[self.kind]

    @property
    def label(self):
        """How output names and settings say it: x2, x1.5, 1080p, w1280."""
        return {"scale": f"x{self.value:g}", "height": f"{self.value:g}p",
                "width": f"w{self.value:g}", "fit": ""}[self.kind]


def fit_scale(method, width, height, pixels=None, within="within 4K"):
    """SizeRequest("scale", s) for the largest scale of the method's (at most 4) whose output
    stays within 4K either way round (FIT_WITHIN), or, given pixels, has at most that many
    (a picture's bound, which `within` words), saying so when the bound chose it;
    UpscaleError when even the smallest does not fit."""
    long_side, short_side = max(width, height), min(width, height)

    def fits(s):
        if pixels:
            return width * height * s * s <= pixels
        return long_side * s <= max(FIT_WITHIN) and short_side * s <= min(FIT_WITHIN)

    fitting = [s for s in method.scales if s <= 4 and fits(s)]
    if not fitting:
        example = "--height 2160 or --scale 1.5" if short_side < 2160 and not pixels \
            else "--scale 1.5"
        raise UpscaleError(f"is already {round(width)}x{round(height)}: even "
                           f"x{min(method.scales)} would not stay {within}; say the size "
                           f"wanted, e.g. {example}")
    largest = max(s for s in method.scales if s <= 4)
    return SizeRequest("scale", max(fitting),
                       f"to stay {within}" if max(fitting) < largest else "")


def picture_fit(frames):
    """(pixels, how it is worded) an output frame of a picture of that many frames may have
    when no size is asked: PICTURE_FIT_PIXELS, or fewer for an animation, all of whose
    frames must fit in ANIMATION_MEMORY (4 bytes a pixel)."""
    pixels = ANIMATION_MEMORY // (4 * frames)
    if pixels >= PICTURE_FIT_PIXELS:
        return PICTURE_FIT_PIXELS, f"within {PICTURE_FIT_PIXELS / 1e6:g} megapixels"
    return pixels, f"within {ANIMATION_MEMORY / 2**30:g} GB for its {frames} frames"


def codec_side(length, exact=False):
    """A side of the output: as given when exact (a side asked for, or a source's side times
    a whole scale; an odd one is padded when written), else the nearest even number, as
    4:2:0 codecs need."""
    if exact and abs(length - round(length)) < 1e-6:
        return max(2, int(round(length)))
    return max(2, 2 * round(length / 2))


@dataclass(frozen=True)
class FramePlan:
    """How one source's frames become the output's: the network's scale, then the size."""
    width: int                 # the output frame
    height: int
    scale: int                 # the model's scale the network runs at; 0: a baseline
    label: str                 # in the output's name: x2, x1.5, 1080p, w1280
    why: str = ""              # a fit's reason, for the start line


def plan_frames(request, method, width, height, sar=1.0, fit=(None, "within 4K")):
    """The FramePlan for frames of width x height (as shown: rotation applied) whose pixels
    are sar times as wide as high. The output has square pixels at the display aspect
    ratio. A network runs at the smallest scale it has that reaches the size (its largest
    when none does). fit: fit_scale's bound when no size is asked, a picture's from
    picture_fit; a video's is 4K."""
    shown_w = width * sar
    if request.kind == "fit":
        request = fit_scale(method, shown_w, height, *fit)
    if request.kind == "scale":
        whole = request.value == int(request.value)
        out_w = codec_side(shown_w * request.value, whole and sar == 1.0)
        out_h = codec_side(height * request.value, whole)
    elif request.kind == "height":
        out_w, out_h = codec_side(request.value * shown_w / height), int(request.value)
    else:
        out_w, out_h = int(request.value), codec_side(request.value * height / shown_w)
    scale, why = 0, request.why
    if method.is_network:
        reaching = [s for s in method.scales if width * s >= out_w and height * s >= out_h]
        scale = min(reaching, default=max(method.scales))
        if not reaching:
            why = "its largest scale, then cubic to the size"
    return FramePlan(out_w, out_h, scale, request.label, why)


@dataclass(frozen=True)
class Settings:
    """Everything a run was asked to do, checked and resolved once."""
    method: Method
    size: SizeRequest
    codec: Codec
    crf: int = None            # None: the codec's own default
    preset: str = DEFAULT_PRESET
    format: str = ""           # "mp4", "mkv" or "" (from the output's extension)
    output: Path = None        # -o, one input only
    output_dir: Path = None
    overwrite: bool = False
    model_dir: Path = None
    tile: int = None           # None: automatic; 0: never; N: tiles of N input pixels
    device: str = "cpu"
    jobs: int = 1
    argv: tuple = ()           # the options as given, for the child processes of --jobs
    frames: int = 0            # only the first N frames (a quick try); 0: all
    part: tuple = ()           # (K, N): only the K-th of N shares of the segments
    segment: float = 0.0       # seconds of video in a resumable segment; 0: automatic
    sdr: bool = False          # HDR and wide gamut made BT.709 SDR, as OpenCV decodes them
    deinterlace: str = "frame"  # how interlaced video becomes progressive: DEINTERLACING
    codec_named: bool = False  # --codec given (else an HDR source's 10 bits choose H.265)

    def __post_init__(self):
        if self.crf is None:
            object.__setattr__(self, "crf", self.codec.crf)

    def fingerprint(self, plan, picture=False):
        """What decides the output's content, as `key=value ...`: recorded in the output so
        that a rerun skips only a file made the same way (a picture's has no codec)."""
        size = {"x": "scale", "w": "width"}.get(plan.label[0], "height")
        parts = [f"model={self.method.name}", f"{size}={plan.label.strip('xwp')}"]
        if not picture:
            parts.append(f"codec={self.codec.name}")
        if self.codec.tuned and not picture:
            parts += [f"crf={self.crf}", f"preset={self.preset}"]
        if self.frames:
            parts.append(f"frames={self.frames}")
        if self.deinterlace != "frame" and not picture:
            parts.append(f"deinterlace={self.deinterlace}")
        checksum = MODEL_CHECKSUMS.get(self.method.file_name(plan.scale), "")
        if checksum:                  # the weights too: a new version may ship new ones
            parts.append(f"weights={checksum.split(':')[1][:12]}")
        return " ".join(parts)


SETTINGS_TAG = "upscale_settings"


def recorded_settings(ffmpeg, path):
    """The settings an earlier run recorded in path (Settings.fingerprint()); None when it
    records none (made by something else) or cannot be read."""
    try:
        return probe(ffmpeg, path).tags.get(SETTINGS_TAG)
    except UpscaleError:
        return None


def output_record(settings, job, picture=False):
    """What an output records of how it was made: the settings' fingerprint and the source's
    identity, so that a rerun skips only a file made the same way from the same source (not
    from a source since replaced, nor from photo.bmp when photo.tiff asks for the name)."""
    return f"{settings.fingerprint(job.plan, picture)} source={source_identity(job.source)}"


def record_fields(record):
    return dict(p.split("=", 1) for p in record.split() if "=" in p)


def settings_differences(made, wanted):
    """`key: made, asked wanted` for each setting that differs (the source aside)."""
    a, b = (record_fields(text) for text in (made, wanted))
    return [f"{k} {a.get(k, '-')}, asked {b.get(k, '-')}" for k in dict.fromkeys([*b, *a])
            if k != "source" and a.get(k) != b.get(k)]


def output_mismatch(made, wanted):
    """How an existing output recording `made` (None: no record) was made otherwise than
    this run would make it (`wanted`), as the end of a sentence; "" when it was made the
    same way. Outputs of versions that recorded no source are judged by their settings."""
    if not made:
        return "by something else (it records no upscale.py settings)"
    differences = settings_differences(made, wanted)
    if differences:
        return "with other settings (" + "; ".join(differences) + ")"
    source = record_fields(made).get("source")
    if source and source != record_fields(wanted).get("source"):
        return ("from another source file (this one has changed since, or another file of "
                "the same name made it)")
    return ""


def containers_for(codec):
    """The containers that can hold a codec, the default first."""
    return [c for c in CONTAINERS.values() if not c.codecs or codec.name in c.codecs]


def default_codec(fmt):
    """The codec of an output in container fmt ("": not named) when --codec is not given:
    H.264 where it fits, else the container's first (VP9 for WebM)."""
    allowed = CONTAINERS[fmt].codecs if fmt else ()
    return DEFAULT_CODEC if not allowed or DEFAULT_CODEC in allowed else allowed[0]


def default_extension(settings):
    return CONTAINERS[settings.format or settings.codec.container].extensions[0]


def output_path_for(source, settings, label):
    """Where the result of source goes: -o, or <stem>_<model>_<label><ext> beside the
    source or in --output-dir, the label saying the size asked (x2, x1.5, 1080p, w1280).
    Names sort with their source in a folder listing."""
    if settings.output:
        return Path(settings.output)
    folder = Path(settings.output_dir) if settings.output_dir else Path(source).parent
    name = f"{Path(source).stem}_{settings.method.name}_{label}"
    if is_picture(source):
        return folder / (name + picture_extension(source))
    if settings.frames:               # a quick try never takes the whole result's name
        name += f"_first{settings.frames}"
    return folder / (name + default_extension(settings))


# ---------------------------------------------------------------------------------------------
# Files on disk: the source checked and recognised (size, head and tail), temporary files
#   hidden beside the output and named with their owner (process and host), so a later run
#   can tell those of a run that was killed (kill -9, the OOM killer, a power cut) from those
#   of a run still working and remove only the former; the finished file published under its
#   name in one step
# ---------------------------------------------------------------------------------------------

def check_source(path):
    p = Path(path)
    if str(path) == "-" and not p.exists():
        raise UpscaleError("-: reading a video from standard input is not supported (the tool "
                           "needs to seek in its input); save it to a file and give its path")
    if not p.exists():
        raise UpscaleError(f"{path}: no such file; check the path")
    if p.is_dir():
        raise UpscaleError(f"{path}: is a folder with no videos or pictures directly "
                           "inside; give files, or the folder that holds them")
    if not p.is_file():
        raise UpscaleError(f"{path}: is not a regular file (a named pipe or device); the "
                           "tool needs to seek in its input, so save the video to a file")
    if not os.access(p, os.R_OK):
        raise UpscaleError(f"{path}: permission denied; check the file's permissions")
    if p.stat().st_size == 0:
        raise UpscaleError(f"{path}: empty file (0 bytes), not a video; copy or export it "
                           "again")


IDENTITY_BYTES = 1 << 20      # of a source's head and of its tail, hashed to recognise it


def source_identity(path):
    """Size and a hash of the head and tail: tells the same source (even a copy on another
    machine) from a changed one, without reading a whole film."""
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(IDENTITY_BYTES))
        if size > IDENTITY_BYTES:
            f.seek(max(IDENTITY_BYTES, size - IDENTITY_BYTES))
            digest.update(f.read())
    return f"{size}:{digest.hexdigest()[:32]}"


HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
TEMP_RE = re.compile(r"^\..*\.upscale-(\d+)@([A-Za-z0-9-]+)\.[^/]*$")
TEMP_STEM_CHARS = 40       # of the output's name, so a temporary name is never too long


def temp_prefix(final):
    return f".{Path(final).stem[:TEMP_STEM_CHARS]}.upscale-{os.getpid()}@{HOST}."


def temp_name(final, tag):
    """A new empty hidden file beside `final`, ending in `.tag`."""
    fd, name = tempfile.mkstemp(prefix=temp_prefix(final), suffix=f".{tag}",
                                dir=Path(final).parent)
    os.close(fd)
    return Path(name)


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:         # someone else's process
        return True
    return True


def remove_stale_temps(folder):
    """Remove the temporary files and folders that runs on this host left in folder when
    they died without cleaning up; never those of a live run. Returns how many."""
    removed = 0
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return 0
    for entry in entries:
        if entry.name.endswith(WORK_SUFFIX) and entry.is_dir():
            removed += remove_stale_temps(entry)      # kept for a rerun, but not its temps
            continue
        match = TEMP_RE.match(entry.name)
        if not match or match[2] != HOST or process_alive(int(match[1])):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def publish(temp, final, overwrite):
    """Move the finished temporary file to its final name in one step. Without overwrite a
    hard link refuses an existing name, so two runs racing for one output never mix."""
    if overwrite:
        os.replace(temp, final)
        return
    try:
        os.link(temp, final)
    except FileExistsError:
        raise OutputTaken(f"{final} appeared while this run was working (another run?); "
                          "kept that one, use --overwrite to replace it") from None
    except OSError:                 # filesystems without hard links
        if os.path.exists(final):
            raise OutputTaken(f"{final} already exists; use --overwrite to replace it") \
                from None
        os.replace(temp, final)
        return
    os.unlink(temp)


# ---------------------------------------------------------------------------------------------
# ffmpeg: finding it, the one place that starts it (tied to the tool's life, its exit
#   checked), and reading what a file holds from its report
# ---------------------------------------------------------------------------------------------

def find_ffmpeg():
    """Path of an ffmpeg binary: $UPSCALE_FFMPEG, then the one the imageio-ffmpeg wheel
    pins (the build this tool is tested with), then PATH. An older ffmpeg first on PATH
    (Debian 12's 5.1, say) times and encodes some files differently and may lack libvmaf,
    so it is only the last resort."""
    explicit = os.environ.get("UPSCALE_FFMPEG")
    if explicit is not None:
        if explicit and shutil.which(explicit):
            return shutil.which(explicit)
        raise UpscaleError(f"ffmpeg not found at UPSCALE_FFMPEG={explicit!r}; "
                           "unset it or point it at an ffmpeg binary")
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:            # not installed, or its binary is missing for this platform
        pass
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    raise UpscaleError("ffmpeg not found; install it (pip install imageio-ffmpeg, or your "
                       "system's ffmpeg package), or name one with UPSCALE_FFMPEG")


def ffmpeg_args(ffmpeg, *args, level="error"):
    """Every ffmpeg command line: the binary, the options every call wants (no keyboard
    interaction, no banner, only `level` messages, outputs overwritten: they are always
    this run's own temporary files), then args (ffmpeg_arg)."""
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", level, "-y", *map(ffmpeg_arg, args)]


def ffmpeg_arg(arg):
    """An argument as ffmpeg is given it. A Path is a file, given absolute so that ffmpeg
    never takes a name like `10:30.mp4` for a protocol ("10") and its address."""
    return os.path.abspath(arg) if isinstance(arg, os.PathLike) else str(arg)


def die_with_parent(signum=getattr(signal, "SIGKILL", 9)):
    """A preexec_fn: the child gets signum when this process dies, however it dies, so no
    ffmpeg or job outlives the tool (Linux; elsewhere a no-op)."""
    prctl = getattr(LIBC, "prctl", None)
    if prctl is not None:
        prctl(1, int(signum))       # PR_SET_PDEATHSIG


try:                                # loaded here: a preexec_fn must not import
    LIBC = ctypes.CDLL(None) if os.name == "posix" else None
except OSError:
    LIBC = None
# Windows runs no preexec_fn at all.
CHILD_SETUP = die_with_parent if os.name == "posix" else None


def start_ffmpeg(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 stderr=subprocess.PIPE, tied=True, pass_fds=()):
    """The one place an ffmpeg process starts. tied: it dies with this tool (die_with_parent).
    The piped encoder is not tied, since a worker thread starts it and the kernel's signal
    follows the thread that started a child; if the tool dies, its input pipe closes and
    ffmpeg, at the end of its input, finishes by itself. pass_fds: more pipes it writes to
    (as pipe:N)."""
    return subprocess.Popen(command, stdin=stdin, stdout=stdout, stderr=stderr,
                            preexec_fn=CHILD_SETUP if tied else None, pass_fds=pass_fds)


# ffmpeg's lines that follow from an earlier failure rather than say what it was.
FFMPEG_AFTERMATH_RE = re.compile(
    r"Nothing was written into output file|Conversion failed|Task finished with error code|"
    r"Terminating thread with return code|Error sending frames to consumers|"
    r"Could not open encoder before EOF|Error while opening encoder|"
    r"Error initializing output stream")
# What starts each of ffmpeg's lines that names its component ("[libopus @ 0x55d1...] ").
FFMPEG_COMPONENT_RE = re.compile(r"^(\[[^\]]* @ 0x[0-9a-f]+\] )+")


def failure_detail(returncode, stderr_text):
    """Why an ffmpeg process failed, in a few words: its last line that says why (not one
    that only follows from it), or the signal."""
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return f"killed by {name}" + (" (file size limit reached)" if name == "SIGXFSZ" else "")
    lines = [line for line in stderr_text.strip().splitlines() if line.strip()]
    if not lines:
        return f"exit status {returncode}"
    causes = [line for line in lines if not FFMPEG_AFTERMATH_RE.search(line)]
    return FFMPEG_COMPONENT_RE.sub("", (causes or lines)[-1]).strip()


def ffmpeg_output(command, what, check=True, data=None):
    """(stdout bytes, stderr text) of an ffmpeg command run to its end, fed data on its
    stdin if given; an interrupt kills it. With check, a failure is the tool's one error
    line: "ffmpeg failed while <what>"."""
    proc = start_ffmpeg(command, stdout=subprocess.PIPE,
                        stdin=subprocess.DEVNULL if data is None else subprocess.PIPE)
    try:
        out, err = proc.communicate(data)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    err = err.decode(errors="replace")
    if check and proc.returncode != 0:
        raise UpscaleError(f"ffmpeg failed while {what}: {failure_detail(proc.returncode, err)}")
    return out, err


def run_ffmpeg(command, what):
    """Run an ffmpeg command for its files; UpscaleError if it fails."""
    ffmpeg_output(command, what)


def ffmpeg_encoders(ffmpeg):
    """Names of the video encoders an ffmpeg binary has."""
    out, _ = ffmpeg_output(ffmpeg_args(ffmpeg, "-encoders"), "listing its encoders")
    listing = out.decode(errors="replace")
    return {parts[1] for parts in map(str.split, listing.splitlines())
            if len(parts) > 1 and parts[0].startswith("V")}


def check_ffmpeg_has(ffmpeg, codec):
    """UsageError before any work when ffmpeg lacks the encoder --codec needs."""
    if "-c:v" not in codec.ffmpeg_args:
        return
    encoder = codec.ffmpeg_args[codec.ffmpeg_args.index("-c:v") + 1]
    if encoder not in ffmpeg_encoders(ffmpeg):
        raise UsageError(f"--codec {codec.name} needs ffmpeg's {encoder} encoder, which "
                         f"{ffmpeg} lacks; use the ffmpeg of imageio-ffmpeg (unset "
                         "UPSCALE_FFMPEG) or another --codec")


@dataclass
class Stream:
    index: int
    kind: str                  # "video", "audio", "subtitle", "data", "attachment"
    codec: str
    language: str = ""
    attached_pic: bool = False
    dispositions: tuple = ()   # "default", "forced", ...
    title: str = ""
    pix_fmt: str = ""
    color: dict = field(default_factory=dict)   # range, space, transfer, primaries
    end: float = 0.0           # seconds, from a Matroska DURATION tag; 0 when not given
    width: int = 0             # coded picture size, as ffmpeg reports it
    height: int = 0
    sar: float = 1.0           # sample (pixel) aspect ratio: width of a pixel over its height
    rotation: float = 0.0      # degrees its display matrix turns the picture
    alpha: bool = False        # it carries transparency: an alpha plane, or VP8/VP9 alpha
    field_order: str = ""      # "top first", "bottom first"...: interlaced; "" otherwise
    scan: str = ""             # "progressive" or "interlaced" where the report says; else ""


@dataclass
class Probe:
    streams: list
    duration: float = 0.0     # seconds, 0 when unknown
    format: str = ""          # ffmpeg's demuxer names, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    display_matrix: bool = False   # rotation or reflection to apply when shown
    tags: dict = field(default_factory=dict)     # the file's own metadata (not its streams'),
    #                                              its keys in lower case

    def of_kind(self, kind):
        return [s for s in self.streams if s.kind == kind]

    @property
    def video(self):
        return [s for s in self.of_kind("video") if not s.attached_pic]


STREAM_RE = re.compile(
    r"^\s*Stream #0:(\d+)(?:\[0x[0-9a-f]+\])?(?:\(([^)]*)\))?: "
    r"(Video|Audio|Subtitle|Data|Attachment): (\w+)(.*)$")
DISPOSITION_RE = re.compile(r"\((default|forced|dub|original|comment|lyrics|karaoke|"
                            r"hearing impaired|visual impaired|captions|descriptions)\)")
TITLE_RE = re.compile(r"^\s{6,}title\s*: (.*)$")     # a stream's, indented deeper
DURATION_RE = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
# Matroska muxers tag each stream with when it ends on the file's timeline.
STREAM_END_RE = re.compile(r"^\s{6,}DURATION\s*: (\d+):(\d\d):(\d\d(?:\.\d+)?)$")
PIX_FMT_RE = re.compile(r"^(\w+)(?:\(([^)]*)\))?$")
VIDEO_SIZE_RE = re.compile(r"^(\d+)x(\d+)(?: \[SAR (\d+):(\d+) DAR \d+:\d+\])?")
CONTAINER_SAR_RE = re.compile(r"^SAR (\d+):(\d+) DAR \d+:\d+$")
FILE_TAG_RE = re.compile(r"^    (\w+)\s*: (.*)$")      # indented 4: the file's, not a stream's
ROTATION_RE = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees")
# Transparency: pixel formats with an alpha plane (ProRes 4444, PNG or QuickTime Animation
# in MOV, GIF), and the tag WebM gives VP8/VP9 streams whose alpha rides beside them.
ALPHA_PIX_FMT_RE = re.compile(r"^(yuva|gbrap|rgba|bgra|argb|abgr|ya\d)")
ALPHA_MODE_RE = re.compile(r"^\s{6,}alpha_mode\s*: 1$", re.IGNORECASE)


def top_level_fields(text):
    """Comma-separated fields of an ffmpeg stream line, ignoring commas inside brackets."""
    fields, depth, current = [], 0, ""
    for ch in text:
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            fields.append(current.strip())
            current = ""
        else:
            current += ch
    return fields + [current.strip()]


def parse_color(rest):
    """Pixel format and colour tags from the part of ffmpeg's video stream line after the
    codec name, e.g. ' (High), yuv420p(tv, bt709, progressive), 1920x1080 ...' or
    ', yuv420p10le(tv, bt2020nc/bt2020/smpte2084), ...'."""
    fields = top_level_fields(rest)
    match = PIX_FMT_RE.match(fields[1]) if len(fields) > 1 else None
    if not match:
        return "", {}
    pix_fmt, inner = match.group(1), match.group(2) or ""
    color = {}
    for part in (p.strip() for p in inner.split(",")):
        if part in ("tv", "pc"):
            color["range"] = part
        elif "/" in part:
            space, primaries, transfer = (part.split("/") + ["", ""])[:3]
            color.update(space=space, primaries=primaries, transfer=transfer)
        elif part.startswith(("bt", "smpte", "fcc")) or part in ("gbr", "ycgco"):
            color.update(space=part, primaries=part, transfer=part)
    return pix_fmt, color


def parse_field_order(rest):
    """"top first", "bottom first", "top coded first" or "bottom coded first" when ffmpeg's
    video stream line calls the stream interlaced; "" when progressive or not said."""
    match = re.search(r"\b(top|bottom)( coded)? first\b", rest)
    return match.group(0) if match else ""


def parse_video_size(rest):
    """(width, height, sample aspect ratio) from the part of ffmpeg's video stream line after
    the codec name (', yuv420p(tv), 720x480 [SAR 32:27 DAR 16:9], ...'); (0, 0, 1.0) when
    it gives none. A container's own aspect (`-aspect` on a remux, Matroska's display size,
    an MP4 pasp box) follows as a field of its own ('SAR 32:27 DAR 16:9') and, as for
    players, wins over the codec's."""
    width, height, sar = 0, 0, 1.0
    for part in top_level_fields(rest):
        coded, shown = VIDEO_SIZE_RE.match(part), CONTAINER_SAR_RE.match(part)
        if coded:
            width, height = int(coded.group(1)), int(coded.group(2))
            sar = aspect_ratio(*coded.group(3, 4))
        elif shown and width:
            sar = aspect_ratio(*shown.groups())
    return width, height, sar


def aspect_ratio(num, den):
    """A pixel's width over its height from ffmpeg's "SAR num:den"; 1.0 when unknown (0:1)."""
    return int(num) / int(den) if num and int(num) and int(den) else 1.0


def seconds_of(hours, minutes, seconds):
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def parse_probe(text):
    """What `ffmpeg -i FILE` printed about input #0, as a Probe."""
    streams, duration, fmt, matrix, tags = [], 0.0, "", False, {}
    for line in text.splitlines():
        if line.startswith("Output #"):
            break
        if line.startswith("Input #0, "):
            fmt = line[len("Input #0, "):].rsplit(", from ", 1)[0]
        tag = FILE_TAG_RE.match(line)
        if tag and fmt and not streams and not duration:      # (Matroska's are upper case)
            tags[tag.group(1).lower()] = tag.group(2).strip()
        matrix = matrix or "Display Matrix" in line or "displaymatrix" in line
        turn = ROTATION_RE.search(line)
        if turn and streams:
            streams[-1].rotation = float(turn.group(1))
        d = DURATION_RE.search(line)
        if d and not duration:
            duration = seconds_of(*d.groups())
        end = STREAM_END_RE.match(line)
        if end and streams:
            streams[-1].end = seconds_of(*end.groups())
        if ALPHA_MODE_RE.match(line) and streams:
            streams[-1].alpha = True
        title = TITLE_RE.match(line)
        if title and streams:
            streams[-1].title = streams[-1].title or title.group(1).strip()
        match = STREAM_RE.match(line)
        if match:
            index, lang, kind, codec, rest = match.groups()
            stream = Stream(int(index), kind.lower(), codec, (lang or "").strip(),
                            attached_pic="(attached pic)" in rest,
                            dispositions=tuple(DISPOSITION_RE.findall(rest)))
            if stream.kind == "video":
                stream.pix_fmt, stream.color = parse_color(rest)
                stream.field_order = parse_field_order(rest)
                stream.scan = "interlaced" if stream.field_order else \
                    "progressive" if re.search(r"[(,] ?progressive[,)]", rest) else ""
                stream.width, stream.height, stream.sar = parse_video_size(rest)
                stream.alpha = bool(ALPHA_PIX_FMT_RE.match(stream.pix_fmt))
            streams.append(stream)
    return Probe(streams, duration, fmt, matrix, tags)


def probe(ffmpeg, path):
    """Streams and duration of a media file, read from ffmpeg's own report (no ffprobe).
    `ffmpeg -i` with no output always exits 1: its report is what counts."""
    _, report = ffmpeg_output(ffmpeg_args(ffmpeg, "-i", Path(path), level="info"), "reading " +
                              Path(path).name, check=False)
    info = parse_probe(report)
    if not info.streams:
        last = report.strip().splitlines()[-1:] or ["no streams"]
        reason = last[0].split(": ", 1)[-1].strip()
        raise UpscaleError(f"{path}: not a video file ffmpeg can read ({reason}); check that "
                           "it plays in a video player")
    return info


NO_PTS = -(1 << 63)             # ffmpeg's AV_NOPTS_VALUE: a packet that carries no time


def first_packet_times(ffmpeg, path, stream_index, packets=64):
    """The times (seconds, sorted) of a video stream's first packets on the timeline ffmpeg
    gives the file's streams when muxing. Reads them only, decodes nothing."""
    out, _ = ffmpeg_output(ffmpeg_args(ffmpeg, "-i", Path(path), "-map", f"0:{stream_index}", "-c",
                                       "copy", "-frames:v", packets, "-f", "framecrc", "-"),
                           "reading the first packets")
    timebase, times = None, []
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("#tb 0:"):
            num, den = line.split(":", 1)[1].strip().split("/")
            timebase = int(num) / int(den)
        elif line and not line.startswith("#") and timebase:
            dts, pts = (int(field) for field in line.split(",")[1:3])
            # An MPEG program stream (a DVD's VOB) leaves some packets without a time to
            # show them; the time to decode them, a little earlier, stands in.
            if pts != NO_PTS or dts != NO_PTS:
                times.append((pts if pts != NO_PTS else dts) * timebase)
    return sorted(times)


def video_start(times):
    """When the video starts (seconds), from first_packet_times. OpenCV counts frame times
    from the video's own start, so a video that begins after the audio (an edit list, a
    camera that starts sound first) must be shifted by this much to stay in sync."""
    return max(0.0, times[0]) if times else 0.0


def measured_rate(times):
    """Frames a second the first packets really come at (from first_packet_times); 0 when
    they cannot say. A container's nominal rate can be anything (1000/1 in Matroska files
    whose times are not evenly spaced)."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


# ---------------------------------------------------------------------------------------------
# Model files: finding, downloading, verifying, loading
# ---------------------------------------------------------------------------------------------

def model_search_dirs(model_dir=None):
    """Folders searched for model files, in order."""
    dirs = []
    if model_dir:
        dirs.append(Path(model_dir))
    if os.environ.get(MODEL_DIR_ENV):
        dirs.append(Path(os.environ[MODEL_DIR_ENV]))
    dirs.append(DEFAULT_MODEL_DIR)
    return dirs


def model_url(method, scale):
    """Where the official file is downloaded from ($UPSCALE_MODEL_URL replaces the base);
    "" for the files that ship with the tool."""
    if not method.url:
        return ""
    base = os.environ.get(MODEL_URL_ENV) or method.url
    return f"{base.rstrip('/')}/{method.file_name(scale)}"


def new_digest(checksum):
    algo, _ = checksum.split(":", 1)
    return hashlib.sha256() if algo == "sha256" else hashlib.sha1()


def file_digest(path, checksum):
    """Hex digest of a file in the form its pinned checksum uses."""
    digest = new_digest(checksum)
    if checksum.startswith("gitblob:"):
        digest.update(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"{checksum.split(':', 1)[0]}:{digest.hexdigest()}"


def verify_model_file(path, url):
    checksum = MODEL_CHECKSUMS[path.name]
    if os.path.getsize(path) == 0 or file_digest(path, checksum) != checksum:
        if not url:
            raise UpscaleError(f"model file {path} is corrupt or not the one this version "
                               "ships (checksum mismatch); restore it from the project "
                               f"(git checkout -- models/{path.name})")
        raise UpscaleError(f"model file {path} is corrupt or not the official file (checksum "
                           f"mismatch); delete it to download it again, or replace it with {url}")


def download_model(url, dest, checksum):
    """Download url to dest atomically: the file appears only when complete and verified."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dest), suffix=".part", dir=dest.parent)
    try:
        console.say(f"downloading {dest.name} from {url}")
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            expected = response.headers.get("Content-Length")
            size = 0
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                size += len(chunk)
            if expected is not None and size != int(expected):
                raise UpscaleError(f"download of {dest.name} from {url} was cut off "
                                   f"({size} of {expected} bytes); try again")
        if file_digest(tmp, checksum) != checksum:
            raise UpscaleError(f"downloaded {dest.name} from {url} does not match its pinned "
                               f"checksum; nothing was saved. Put the official file in "
                               f"{dest.parent} yourself")
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UpscaleError(f"cannot download model file {dest.name} from {url} ({reason}); "
                           f"download it yourself and put it in {dest.parent}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def locate_model(method, scale, model_dir=None):
    """Path of a verified model file, downloading it if no search folder has it."""
    name, url = method.file_name(scale), model_url(method, scale)
    for folder in model_search_dirs(model_dir):
        candidate = folder / name
        if candidate.is_file():
            verify_model_file(candidate, url)
            return candidate
    if not url:
        raise UpscaleError(f"model file {name} ships with upscale.py but is missing from "
                           f"{DEFAULT_MODEL_DIR}; restore it from the project (git checkout "
                           f"-- models/{name}), or use --model {method.official} (downloaded)")
    target_dir = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
    return download_model(url, target_dir / name, MODEL_CHECKSUMS[name])


# ---------------------------------------------------------------------------------------------
# Upscalers, one class per kind (UPSCALER_KINDS): cv2.resize, a network (tiled, on a
#   device), a network's output fitted to a size, and ffmpeg's scaler, which works on whole
#   files. A frame upscaler splits its work in three so reading, inference and writing can
#   overlap: prepare(frame) runs in the reader thread; infer(x) and finish(y) in a worker,
#   which also encodes. Each is a pure function of its argument.
# ---------------------------------------------------------------------------------------------

def silence_opencv():
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def resized(image, size):
    """image brought to size (width, height); the image itself when it has that size.
    Cubic down to half the size (a network's output brought to a size between its scales
    shrinks by 0.5-1): on 12 held-out photos FSRCNN x2 brought to x1.5 kept 1.5 dB over
    cubic from the small image this way, only 0.65 dB with pixel-area averaging, which
    blurs; pixel areas below half, where cubic would alias."""
    h, w = image.shape[:2]
    if (w, h) == tuple(size):
        return image
    shrink = min(size[0] / w, size[1] / h)
    return cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA if shrink < 0.5
                      else cv2.INTER_CUBIC)


class ResizeUpscaler:
    """The cv2.resize baselines: straight to the size (width, height) if given, else by
    the scale."""
    whole_files = False         # it upscales frames (see FfmpegScaler)

    def __init__(self, method, scale, size=None):
        self.scale, self.size, self.interpolation = scale, size, method.interpolation

    def prepare(self, frame):
        return frame

    def infer(self, frame, on_tile=None):
        if self.size:
            return cv2.resize(frame, tuple(self.size), interpolation=self.interpolation)
        return cv2.resize(frame, None, fx=self.scale, fy=self.scale,
                          interpolation=self.interpolation)

    def finish(self, frame):
        return frame

    def copies(self, count):
        """count upscalers that may run side by side: this one and count - 1 twins."""
        return [self] * count

    def streams(self):
        """How many copies run side by side (see inference_streams)."""
        return 1

    def upscale(self, frame, on_tile=None):
        """frame upscaled; on_tile(done, total) follows a network's tiles, if it tiles."""
        return self.finish(self.infer(self.prepare(frame), on_tile))


class FittedUpscaler:
    """A network upscaler whose frames are then brought to an exact size (width, height):
    the network runs at a scale that reaches it, and its luma is resized in the same pass,
    before chroma is rebuilt at that size."""
    whole_files = False

    def __init__(self, network, size):
        self.network, self.size = network, tuple(size)

    def prepare(self, frame):
        return self.network.prepare(frame)

    def infer(self, prepared, on_tile=None):
        return self.network.infer(prepared, on_tile)

    def finish(self, inferred):
        return self.network.finish(inferred, self.size)

    def copies(self, count):
        return self.network.copies(count)

    def streams(self):
        return self.network.streams()

    def upscale(self, frame, on_tile=None):
        return self.finish(self.infer(self.prepare(frame), on_tile))


class FfmpegScaler:
    """ffmpeg's bicubic scaler (--model ffmpeg), the baseline a user could run instead of
    this tool. It works on whole files, not frames: scale_file() writes a scaled video
    from a file in that file's own pixel format (a video's YUV, --compare's BGR), and both
    a run and --compare use it, so --compare measures what --model ffmpeg writes."""
    whole_files = True

    def __init__(self, method, scale, size):
        self.size = tuple(size)

    def video_filter(self, deinterlace="frame"):
        """Frames marked interlaced deinterlaced as the networks' are (FfmpegReader; None:
        no deinterlacer), the scale, square pixels, and even sides (repeating the last row
        or column) as codecs need; out_range=tv makes a full-range source's YUV limited
        range, as every other method's output is (RGB output ignores it)."""
        w, h = self.size
        first = DEINTERLACING[deinterlace].filter + "," if deinterlace else ""
        return (f"{first}scale={w}:{h}:flags=bicubic:out_range=tv,setsar=1,"
                "pad=ceil(iw/2)*2:ceil(ih/2)*2")

    def upscale(self, picture, on_tile=None):
        """A picture (BGR, 8 or 16 bits) scaled by ffmpeg, through pipes: what --model ffmpeg
        does to one."""
        h, w = picture.shape[:2]
        pix_fmt = "bgr48le" if picture.dtype == np.uint16 else "bgr24"
        out, _ = ffmpeg_output(ffmpeg_args(
            find_ffmpeg(), "-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{w}x{h}", "-i", "pipe:0",
            "-vf", "scale={}:{}:flags=bicubic".format(*self.size), "-f", "rawvideo", "-pix_fmt",
            pix_fmt, "pipe:1"), "scaling with ffmpeg", data=np.ascontiguousarray(picture).data)
        return np.frombuffer(out, picture.dtype).reshape(self.size[1], self.size[0], 3).copy()

    def scale_file(self, ffmpeg, source, out, encoder_args, container_format,
                   deinterlace="frame"):
        """Write the first video stream of source, scaled, to out (interlaced frames
        deinterlaced as DEINTERLACING[deinterlace] says; None: not at all)."""
        times = KEEP_FRAME_TIMES[:2] if "-enc_time_base" in encoder_args else KEEP_FRAME_TIMES
        run_ffmpeg(ffmpeg_args(ffmpeg, "-i", Path(source), "-map", "0:v:0", "-an", "-sn", "-dn",
                               *times, "-vf", self.video_filter(deinterlace), *encoder_args,
                               "-f", container_format, Path(out)), "scaling with ffmpeg")


@functools.lru_cache(maxsize=None)
def register_superres_layers():
    """Creating a DnnSuperResImpl registers the DepthToSpace layer the official graphs need;
    it is kept for the life of the process."""
    return cv2.dnn_superres.DnnSuperResImpl_create()


def reads_tensorflow(cv2_module=cv2):
    """Whether this OpenCV reads TensorFlow's graphs (5.1 dropped the importer)."""
    return hasattr(cv2_module.dnn, "readNetFromTensorflow")


def read_network(model, engine="classic", onnx=False):
    """A network from a TensorFlow graph's (or with onnx, an ONNX model's) path or bytes,
    on OpenCV 5.0's "classic" or "new" DNN engine (see Method.engine); OpenCV 4 has only
    the classic one, 5.1 only its own."""
    source = np.frombuffer(model, np.uint8) if isinstance(model, bytes) else str(model)
    chosen = getattr(cv2.dnn, f"ENGINE_{engine.upper()}", None)
    if onnx:
        return cv2.dnn.readNetFromONNX(source) if chosen is None else \
            cv2.dnn.readNetFromONNX(source, chosen)
    if chosen is None:
        return cv2.dnn.readNetFromTensorflow(source)
    return cv2.dnn.readNetFromTensorflow(source, None if isinstance(model, bytes) else "",
                                         chosen)


# Memory the network's feature maps may take for one forward pass before frames are split
# into tiles (a 3840x2160 frame through FSRCNN would need about 6 GB in one piece).
NETWORK_MEMORY_BUDGET = 768 << 20
BYTES_PER_FEATURE = 4 * 3          # float32, about three maps alive at once


def auto_tile(method, height, width, budget=NETWORK_MEMORY_BUDGET):
    """Tile size (input pixels, before overlap) that keeps a forward pass within budget
    bytes; 0 when the whole frame fits."""
    per_pixel = max(1, method.features) * BYTES_PER_FEATURE
    if height * width * per_pixel <= budget:
        return 0
    side = int(math.sqrt(budget / per_pixel)) - 2 * method.reach
    return max(32, side // 16 * 16)


def cache_tile(method, height, width):
    """Tile size (input pixels) that keeps a light network's feature maps within the CPU's
    caches on a frame much bigger than that; 0 when the frame is small enough already.
    On 640x360 and 1280x720 sources, 128-pixel tiles ran FSRCNN and ESPCN twice as fast
    as whole frames in spite of the overlap; at 320x180 and below they gained nothing."""
    tile = method.cache_tile
    return tile if tile and height * width > 4 * tile * tile else 0


def tile_spans(length, tile, overlap):
    """[(start, end, core_start, core_end)]: tiles of `tile` pixels along one axis, each
    read with `overlap` pixels of context on both sides, whose cores cover 0..length."""
    return [(max(0, core - overlap), min(length, core + tile + overlap), core,
             min(core + tile, length)) for core in range(0, length, tile)]


def forward_tiled(net, blob, scale, tile, overlap, on_tile=None):
    """net's output for blob, computed tile by tile. With overlap at least the network's
    reach, every output pixel sees exactly what it would see untiled: no seams.
    on_tile(done, total) is called after each tile (a single big picture's progress)."""
    n, _, h, w = blob.shape
    out = None
    tiles = list(itertools.product(tile_spans(h, tile, overlap), tile_spans(w, tile, overlap)))
    for done, ((y0, y1, cy0, cy1), (x0, x1, cx0, cx1)) in enumerate(tiles, 1):
        net.setInput(np.ascontiguousarray(blob[:, :, y0:y1, x0:x1]))
        part = net.forward()
        if out is None:
            out = np.empty((n, part.shape[1], h * scale, w * scale), np.float32)
        out[:, :, cy0 * scale:cy1 * scale, cx0 * scale:cx1 * scale] = \
            part[:, :, (cy0 - y0) * scale:(cy1 - y0) * scale,
                 (cx0 - x0) * scale:(cx1 - x0) * scale]
        if on_tile:
            on_tile(done, len(tiles))
    return out


# --device: name -> (DNN backend, DNN target); "auto" tries them in this order.
DEVICES = {
    "cuda": ("DNN_BACKEND_CUDA", "DNN_TARGET_CUDA"),
    "opencl": ("DNN_BACKEND_OPENCV", "DNN_TARGET_OPENCL"),
    "cpu": ("DNN_BACKEND_OPENCV", "DNN_TARGET_CPU"),
}


def device_problem(name):
    """Why this OpenCV and machine cannot run the DNN on a device; "" when they can."""
    if name == "cuda":
        count = cv2.cuda.getCudaEnabledDeviceCount() if hasattr(cv2, "cuda") else 0
        if count == 0:
            return ("this OpenCV build has no CUDA support or no CUDA device is present "
                    "(pip's opencv packages have none)")
    if name == "opencl":
        if not cv2.ocl.haveOpenCL():
            return "no OpenCL platform is available to OpenCV on this machine"
    return ""


def use_device(net, name):
    backend, target = DEVICES[name]
    net.setPreferableBackend(getattr(cv2.dnn, backend))
    net.setPreferableTarget(getattr(cv2.dnn, target))


class NetworkUpscaler(ResizeUpscaler):
    """A dnn_superres network run on OpenCV's DNN module directly.

    DnnSuperResImpl.upsample converts the whole frame to float YCrCb and back at the output
    size; the luma networks only need Y, so chroma is resized on uint8 instead (same result
    within rounding, half the time), and they run as their rewritten graphs (fast_graph).
    EDSR runs on BGR with the DIV2K mean removed, as DnnSuperResImpl does it.
    """

    def __init__(self, method, scale, model_path, tile=None, device="cpu", onnx=None):
        silence_opencv()
        register_superres_layers()
        self.method, self.scale, self.runs = method, scale, method.runs
        self.model_path, self.wanted_device = model_path, device
        self.tile = tile            # None: automatic; 0: never; N: N input pixels
        self.memory_budget = NETWORK_MEMORY_BUDGET
        # OpenCV's new engine runs only on the CPU.
        engine = method.engine if device == "cpu" else "classic"
        self.fast = checked_fast_graph(str(model_path), engine, onnx) \
            if self.runs == "luma" else FastGraph()
        if not self.fast.graph and not reads_tensorflow():
            raise UpscaleError(opencv_problem([method]) or f"model file {model_path} cannot "
                               f"be run by OpenCV {cv2.__version__}, which reads no "
                               "TensorFlow graphs; use OpenCV 5.0")
        try:
            self.net = read_network(self.fast.graph or model_path,
                                    engine if self.fast.graph else "classic", self.fast.onnx)
        except cv2.error:
            raise UpscaleError(f"model file {model_path} cannot be loaded by OpenCV; delete "
                               "it to download it again") from None
        self.device = self.choose_device(device)

    def copies(self, count):
        """This network and count - 1 twins, made once and kept: a long video's segments
        each run the pipeline again."""
        twins = self.__dict__.setdefault("twins", [])
        while len(twins) < count - 1:
            twins.append(self.clone(count))
        return [self] + twins[:count - 1]

    def clone(self, sharing=1):
        """Another copy of this network, for a second inference stream; each of `sharing`
        streams gets its share of the memory budget."""
        twin = NetworkUpscaler(self.method, self.scale, self.model_path, self.tile,
                               self.device, self.fast.onnx)
        self.memory_budget = twin.memory_budget = NETWORK_MEMORY_BUDGET // sharing
        return twin

    def choose_device(self, wanted):
        """The device the network runs on: the one asked for, or an error that says why
        not; "auto" takes the first that works and falls back to the CPU."""
        for name in (("cuda", "opencl", "cpu") if wanted == "auto" else (wanted,)):
            problem = device_problem(name)
            if not problem:
                try:
                    use_device(self.net, name)
                    self.net.setInput(np.zeros((1, 3 if self.runs == "bgr" else 1, 8, 8),
                                               np.float32))
                    self.net.forward()
                    return name
                except cv2.error as exc:
                    problem = str(exc).strip().splitlines()[-1]
            if wanted != "auto":
                raise UpscaleError(f"--device {name}: {problem}; use --device cpu (or auto "
                                   "to take the best available)")
        use_device(self.net, "cpu")
        return "cpu"

    def prepare(self, frame):
        # A 16-bit frame (HDR kept) goes in on the same 0-1 (luma) or 0-255 (EDSR) scale.
        peak = float(np.iinfo(frame.dtype).max)
        if self.runs == "luma":
            ycrcb = cv2.cvtColor(frame, cv2.COLOR_BGR2YCrCb)
            y = ycrcb[:, :, 0] if frame.dtype == np.uint8 else ycrcb[:, :, 0].astype(np.float32)
            return ycrcb, cv2.dnn.blobFromImage(y, 1.0 / peak)
        return frame, cv2.dnn.blobFromImage(frame.astype(np.float32) * (255.0 / peak), 1.0,
                                            mean=EDSR_MEAN_BGR)

    def infer(self, prepared, on_tile=None):
        source, blob = prepared
        h, w = blob.shape[2:]
        tile = self.tile
        if tile is None:        # automatic: small enough for the cache, or for memory
            # (not for the cache on OpenCV 5.1's engine, which runs ONNX: there 128-pixel
            # tiles took 1.1-1.3x the time of whole frames, at 640x360 and 1280x720)
            tile = (self.device == "cpu" and not self.fast.onnx and
                    cache_tile(self.method, h, w)) or \
                auto_tile(self.method, h, w, self.memory_budget)
        if tile and (h > tile or w > tile):
            return source, forward_tiled(self.net, blob, self.scale // self.fast.block,
                                         tile, self.method.reach, on_tile)
        self.net.setInput(blob)
        return source, self.net.forward()

    def finish(self, inferred, size=None):
        """The finished BGR frame; at size (width, height) when given (see resized)."""
        source, out = inferred
        deep = source.dtype == np.uint16
        if self.runs == "luma":
            planes = fast_planes(self.fast, out)
            count, h, w = planes.shape
            y = planes.reshape(count * h, w)
            y = cv2.addWeighted(y, 65535.0 if deep else 255.0, y, 0.0, 0.0,    # rounds,
                                dtype=cv2.CV_16U if deep else cv2.CV_8U)      # saturates
            y = fast_picture(self.fast, y.reshape(count, h, w))
            if size:
                y = resized(y, size)
            h, w = y.shape
            chroma = cv2.resize(source, (w, h), interpolation=cv2.INTER_LINEAR)
            chroma[:, :, 0] = y
            return cv2.cvtColor(chroma, cv2.COLOR_YCrCb2BGR)
        bgr = out[0].transpose(1, 2, 0) + np.array(EDSR_MEAN_BGR, np.float32)
        bgr = np.clip(bgr * (257.0 if deep else 1.0) + 0.5, 0, 65535 if deep else 255).astype(
            source.dtype)
        return resized(bgr, size) if size else bgr

    def streams(self):
        """How many copies of the network run side by side, each on its share of the threads.

        A small network (FSRCNN, ESPCN) split over all cores waits at every one of its thin
        layers for the slowest thread, often one the decoder or encoder just took: on 2
        cores the whole pipeline ran 0.96-1.7x as fast with two single-threaded copies as
        with one two-threaded copy (rewritten graphs, x2 and x4). LapSRN's and EDSR's wide
        layers split well, and two copies of them were slower (0.8x), so they run one."""
        return max(1, min(self.method.streams, cv2.getNumThreads()))


def make_upscaler(method, scale, model_dir=None, tile=None, device="cpu"):
    """The upscaler of a method at one of its scales (a network's file located first)."""
    if method.is_network:
        return NetworkUpscaler(method, scale, locate_model(method, scale, model_dir),
                               tile, device)
    return ResizeUpscaler(method, scale)


# The one registration point of the kinds of upscaler, by Method.runs.
UPSCALER_KINDS = {"resize": ResizeUpscaler, "ffmpeg": FfmpegScaler,
                  "luma": NetworkUpscaler, "bgr": NetworkUpscaler}


# ---------------------------------------------------------------------------------------------
# Reading frames: a frame reader per source (frame_reader), OpenCV's own or ffmpeg's
# ---------------------------------------------------------------------------------------------

@dataclass
class SourceVideo:
    """What OpenCV says of a source: frames come out already rotated for display."""
    width: int
    height: int
    fps: float
    frame_count_hint: int     # container's claim: for progress display only

    @property
    def nominal_interval_ms(self):
        return 1000.0 / self.fps if 0 < self.fps < 1000 else 1000.0 / 30


def opencv_opens(path, opener):
    """opener(name) for a file OpenCV opens by name. OpenCV's Python binding takes only
    valid UTF-8 text (a name with other bytes, which Linux allows, fails or crashes it):
    such a path is opened through a symbolic link in a private temporary folder, which is
    gone once the file is open. The name is made absolute: OpenCV's FFmpeg, like ffmpeg,
    takes a name like `10:30.mp4` for a protocol and its address (ffmpeg_arg)."""
    name = os.path.abspath(path)
    try:
        name.encode("utf-8")
        return opener(name)
    except UnicodeEncodeError:
        pass
    suffix = Path(name).suffix
    with tempfile.TemporaryDirectory(prefix="upscale-name-") as folder:
        alias = os.path.join(folder, "file" + (suffix if suffix.isascii() else ""))
        try:
            os.symlink(os.path.abspath(name), alias)
        except OSError:
            raise UpscaleError(f"{os.fsencode(name)!r}: OpenCV cannot open a file whose name "
                               "is not valid UTF-8 here; rename it") from None
        return opener(alias)


def open_capture(path):
    cap = opencv_opens(path, lambda name: cv2.VideoCapture(name, cv2.CAP_FFMPEG))
    if not cap.isOpened():
        raise UpscaleError(f"{path}: OpenCV cannot open this video; check that it plays, "
                           "or convert it with ffmpeg first")
    return cap


MAX_FAILED_READS = 16   # consecutive failed reads taken as the end of the stream


@dataclass
class ReadStats:
    skipped: int = 0        # frames that failed to decode between good ones
    repeated: int = 0       # frames identical to the one before: upscaled once, written twice
    decoded: int = 0        # frames decoded, those before a segment's start included


def read_frames(cap, stats=None):
    """Yield (frame, time_ms) for every decodable frame, in order.

    VideoCapture.read() returns False for a frame it cannot decode just as it does at the
    end of the file, and carries on with the next frame when asked again. So a failure is
    only the end after MAX_FAILED_READS in a row; failures followed by a good frame are
    corrupted frames, counted in stats.skipped.
    """
    failed = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            failed += 1
            if failed > MAX_FAILED_READS:
                return
            continue
        if stats is not None:
            stats.skipped += failed
            stats.decoded += 1
        failed = 0
        yield frame, cap.get(cv2.CAP_PROP_POS_MSEC)


def opencv_decodes(path):
    """Whether OpenCV's own FFmpeg opens path and decodes a frame of it."""
    cap = opencv_opens(path, lambda name: cv2.VideoCapture(name, cv2.CAP_FFMPEG))
    try:
        return cap.isOpened() and next(read_frames(cap), None) is not None
    finally:
        cap.release()


# A frame reader says how a source's frames are decoded; each opens a capture that reads
# like cv2.VideoCapture (read, get, set(CAP_PROP_POS_MSEC), release), on the same timeline.
@dataclass(frozen=True)
class OpenCVReader:
    """Frames as OpenCV's own FFmpeg decodes them: the usual way. It turns wide-gamut and
    HDR pictures into BT.709 SDR (opencv_converts_color), applies a display matrix's
    rotation but not its reflection (display_orientation)."""
    path: Path
    converts_color = True
    shows_as_players = False    # a display matrix's reflection is left to display_orientation
    note = ""
    depth = 8
    deinterlace_as = "frame"

    def open(self):
        return open_capture(self.path)


@dataclass(frozen=True)
class FfmpegReader:
    """Frames ffmpeg decodes and pipes over (FfmpegCapture), for a video OpenCV's FFmpeg
    cannot decode (the wheels have no AV1 decoder) or spoils (it hands over an interlaced
    frame black, or as the frame before). With deinterlace, every frame marked interlaced
    is deinterlaced on the way, as DEINTERLACING[deinterlace_as] says (bwdif, one frame for
    each frame; or one for each field; or telecined film's own frames); the others come through
    untouched (bwdif holds a frame back, and lost one where the picture size changed, so
    a stream that cannot be interlaced goes without it). ffmpeg
    turns and mirrors them as a player shows them, and keeps their colours as they are
    (HDR and wide gamut too), in 16-bit BGR with depth 16."""
    ffmpeg: str
    path: Path
    stream: int
    start: float                # seconds the video starts after the file (video_start)
    note: str                   # why ffmpeg reads it, for the user
    deinterlace: bool = True
    deinterlace_as: str = "frame"     # a key of DEINTERLACING
    depth: int = 8              # bits of the BGR frames handed over: 8 or 16
    converts_color = False
    shows_as_players = True

    def open(self):
        return FfmpegCapture(self)


# ffmpeg hands frames over by two pipes: their pixels (raw BGR) and their times (framecrc's
# lines, a microsecond clock), since raw video carries no times. Windows gives a child no
# more than its standard streams, so there these sources are refused with a way to convert
# them.
PIPES_TO_FFMPEG = os.name == "posix"


@dataclass(frozen=True)
class Deinterlacing:
    """A way to make interlaced video progressive (--deinterlace): its ffmpeg filters and
    how many frames it makes of each frame it is given."""
    filter: str
    rate: float
    about: str
    asked: bool = True          # a --deinterlace choice (else chosen for what "film" finds)


DEINTERLACING = {
    "frame": Deinterlacing("bwdif=mode=send_frame:deint=interlaced", 1.0,
                           "a frame for each frame"),
    "field": Deinterlacing("bwdif=mode=send_field:deint=interlaced", 2.0,
                           "a frame for each field"),
    # Telecine spreads 4 film frames over 5 interlaced ones (3:2 pulldown): fieldmatch pairs
    # each frame's fields with the neighbours' that belong to the same film frame, what
    # stays combed is deinterlaced, and decimate drops the one repeat in every five.
    "film": Deinterlacing("fieldmatch=order=auto:combmatch=full,"
                          "bwdif=mode=send_frame:deint=interlaced,decimate", 0.8,
                          "the film's own frames, 4 of every 5 (inverse telecine)"),
    # A film whose fields repeat nowhere (at 25 frames a second, 2:2): each frame's fields
    # matched, none dropped (decimate would take a real frame in every five).
    "matched": Deinterlacing("fieldmatch=order=auto:combmatch=full,"
                             "bwdif=mode=send_frame:deint=interlaced", 1.0,
                             "the film's own frames, its fields matched (none repeat, as in "
                             "a film at 25 frames a second: none dropped)", asked=False),
}


class FfmpegCapture:
    """cv2.VideoCapture's reading interface over an ffmpeg that decodes reader's stream.

    A frame's time is OpenCV's: milliseconds from the video's own start. set(POS_MSEC)
    starts ffmpeg again with -ss before the input (a seek to a keyframe, then frames before
    that time decoded and dropped), as OpenCV seeks. ffmpeg starts at the first read, so a
    seek straight after opening starts one ffmpeg, not two."""

    def __init__(self, reader, from_ms=0.0):
        self.reader, self.proc, self.time_ms = reader, None, 0.0
        self.from_ms = from_ms          # where the next ffmpeg starts (None: one is running)

    def start(self, from_ms):
        reader = self.reader
        seek = max(0.0, from_ms / 1000.0 + reader.start)
        # Times come out counted from the file's start plus the seek: shifted back to OpenCV's.
        self.shift_ms = (seek - reader.start) * 1000.0
        graph = f"[0:{reader.stream}]" + \
            (DEINTERLACING[reader.deinterlace_as].filter + "," if reader.deinterlace else "") + \
            f"format={'bgr48le' if reader.depth == 16 else 'bgr24'},split[t][f]"
        times_in, times_out = os.pipe()
        try:
            # The times' output comes first: ffmpeg 5.1 writes its outputs in turn, and the
            # first frame's size is read from its header before the frame's pixels.
            command = ffmpeg_args(
                reader.ffmpeg, *(["-ss", f"{seek:.6f}"] if seek else []), "-i", reader.path,
                "-filter_complex", graph,
                "-map", "[t]", "-fps_mode", "passthrough", "-enc_time_base", "1/1000000",
                "-c:v", "wrapped_avframe", "-flush_packets", 1, "-f", "framecrc",
                f"pipe:{times_out}",
                "-map", "[f]", "-fps_mode", "passthrough", "-f", "rawvideo", "pipe:1")
            # (its decoder's complaints about damaged frames are not the user's to read)
            self.proc = start_ffmpeg(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     pass_fds=(times_out,))
        except BaseException:
            os.close(times_in)
            raise
        finally:
            os.close(times_out)
        self.times = queue.Queue()
        self.size = None
        self.timer = threading.Thread(target=self.read_times, args=(times_in,), daemon=True)
        self.timer.start()

    def read_times(self, fd):
        """Puts the frames' size, then each frame's time in ms, then None at the end."""
        with os.fdopen(fd, "rb") as lines:
            for line in lines:
                if line.startswith(b"#dimensions 0:"):
                    w, h = line.split(b":", 1)[1].strip().split(b"x")
                    self.times.put((int(w), int(h)))
                elif line[:1].isdigit():
                    self.times.put(int(line.split(b",")[2]) / 1000.0)
        self.times.put(None)

    def frame_size(self):
        if self.from_ms is not None:
            self.start(self.from_ms)
            self.from_ms = None
        if self.size is None:
            first = self.times.get()
            self.size = first if isinstance(first, tuple) else (0, 0)
        return self.size

    def isOpened(self):
        return True

    def read(self):
        w, h = self.frame_size()
        if not w or self.proc.stdout.closed:
            return False, None
        frame = np.empty((h, w, 3), np.uint16 if self.reader.depth == 16 else np.uint8)
        view, got = memoryview(frame).cast("B"), 0
        while got < view.nbytes:
            n = self.proc.stdout.readinto(view[got:])
            if not n:
                self.proc.stdout.close()
                return False, None
            got += n
        t = self.times.get()
        # (a frame with no time line after it, its process killed, is given none)
        self.time_ms = t + self.shift_ms if isinstance(t, float) else math.nan
        return True, frame

    def get(self, prop):
        if prop == cv2.CAP_PROP_POS_MSEC:
            return self.time_ms
        if prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT):
            return self.frame_size()[prop == cv2.CAP_PROP_FRAME_HEIGHT]
        return 0.0              # frame rate and count: not known (the caller measures them)

    def set(self, prop, value):
        if prop != cv2.CAP_PROP_POS_MSEC:
            return False
        self.release()
        self.from_ms = value
        return True

    def release(self):
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.timer.join()
        self.proc = None


# The eight ways a display matrix can turn or mirror a picture, as OpenCV calls.
ORIENTATIONS = {
    "as decoded": lambda f: f,
    "mirrored": lambda f: cv2.flip(f, 1),
    "upside down mirrored": lambda f: cv2.flip(f, 0),
    "rotated 180": lambda f: cv2.rotate(f, cv2.ROTATE_180),
    "rotated 90": lambda f: cv2.rotate(f, cv2.ROTATE_90_CLOCKWISE),
    "rotated 270": lambda f: cv2.rotate(f, cv2.ROTATE_90_COUNTERCLOCKWISE),
    "transposed": lambda f: cv2.transpose(f),
    "anti-transposed": lambda f: cv2.rotate(cv2.transpose(f), cv2.ROTATE_180),
}


def orientation_errors(picture, shown):
    """{name: mean difference} between each way of turning picture (ORIENTATIONS) and
    shown, a picture of as many pixels, taken in each way's shape."""
    errors = {}
    for name, turn in ORIENTATIONS.items():
        candidate = turn(picture)
        errors[name] = float(np.abs(candidate.astype(np.int16) -
                                    shown.reshape(candidate.shape)).mean())
    return errors


def display_orientation(ffmpeg, path, stream_index):
    """Which of ORIENTATIONS turns OpenCV's frames into what a player shows.

    OpenCV applies a display matrix's rotation but not its reflection, and ffmpeg's report
    does not print the reflection; so the first frame as OpenCV decodes it is compared
    with the same frame as ffmpeg (which applies both, like players) decodes it."""
    cap = open_capture(path)
    ok, frame = cap.read()
    cap.release()
    out, _ = ffmpeg_output(ffmpeg_args(ffmpeg, "-i", Path(path), "-map", f"0:{stream_index}",
                                       "-frames:v", 1, "-f", "rawvideo", "-pix_fmt", "bgr24",
                                       "-"), "decoding the first frame")
    shown = np.frombuffer(out, np.uint8)
    if not ok or shown.size != frame.size:
        return "as decoded"
    errors = orientation_errors(frame, shown)
    best = min(errors, key=errors.get)
    # A picture that looks the same every way round (a flat colour) stays as decoded.
    return best if errors[best] < errors["as decoded"] - 1.0 else "as decoded"


def frame_reader(ffmpeg, path, info, keep_color=True, deinterlace_as="frame", keep_depth=False):
    """The frame reader for the first video stream of path (probed as info): OpenCV's own
    decoder when it reads it and keeps its colours (keep_color: HDR and wide gamut are kept,
    which OpenCV's decoder turns into BT.709 SDR), else ffmpeg's (FfmpegReader), in 16 bits
    for HDR of more than 8 (for any source of more than 8 with keep_depth: the output can
    keep them); deinterlace_as: how interlaced frames become progressive (a key of
    DEINTERLACING).
    UpscaleError when neither decodes a frame, or, where ffmpeg cannot pipe frames over
    (Windows), how to convert it."""
    path, stream = Path(path), info.video[0]
    kept = keep_color and PIPES_TO_FFMPEG and opencv_converts_color(stream.color)
    deep = PIPES_TO_FFMPEG and bool(deep_bits(stream)) and (
        keep_depth or kept and is_hdr(stream.color))
    field_order = stream.field_order or ("its frames say so" if stream.scan != "progressive"
                                         and interlaced_frames(ffmpeg, path, stream.index)
                                         else "")
    mixed = PIPES_TO_FFMPEG and (stream.codec in MIXED_SCAN_CODECS or stream.codec == "h264"
                                 and h264_may_interlace(ffmpeg, path, stream.index))
    if not field_order and not mixed and not kept and not deep and opencv_decodes(path):
        return OpenCVReader(path)
    if not ffmpeg_decodes(ffmpeg, path):
        raise no_frame_error(path)
    if not PIPES_TO_FFMPEG:
        check_progressive(path, field_order)
        raise UpscaleError(
            f"{path}: OpenCV's decoder cannot read its {stream.codec} video (ffmpeg can); "
            "convert it first, then upscale that: " + conversion_command(path, "-h264"))
    mode = deinterlace_as if field_order or mixed else "frame"
    if mode == "film":
        mode = film_deinterlacing(ffmpeg, path, stream, field_order)
    film_already = deinterlace_as == "film" and mode == "frame"
    if film_already and field_order:
        note = (f"interlaced ({field_order}) by its report, but its frames are coded "
                "progressive (a film telecined by flags alone): read as they are, already "
                "the film's own")
    elif field_order and mode == "frame" and looks_telecined(ffmpeg, path, stream.index):
        note = (f"interlaced ({field_order}): deinterlaced by ffmpeg as it is read, "
                f"{DEINTERLACING[mode].about}; its fields repeat as a telecined film's do "
                "(3:2 pulldown): --deinterlace film gives back the film's own frames, without "
                "the repeats' judder")
    elif field_order:
        note = (f"interlaced ({field_order}): deinterlaced by ffmpeg as it is read, "
                f"{DEINTERLACING[mode].about}" + (
                    " (--deinterlace field gives one for each field, as smooth as the "
                    "original's motion; --deinterlace film a telecined film's own frames)"
                    if mode == "frame" else ""))
    elif mixed:
        note = (f"read by ffmpeg, which deinterlaces any frame marked interlaced ({stream.codec} "
                "may mix them in; OpenCV's decoder hands those over spoilt)")
    elif kept:
        note = (f"{color_kind(stream.color)} ({color_tags(stream.color)}): read by ffmpeg, "
                "which keeps its colours (OpenCV's decoder makes them SDR BT.709; --sdr "
                "does that)")
    elif deep:
        note = (f"{deep_bits(stream)}-bit: read by ffmpeg, which keeps its bits (OpenCV's "
                "decoder gives 8)")
    else:
        note = "decoded by ffmpeg, since OpenCV's decoder cannot read it"
    packets = first_packet_times(ffmpeg, path, stream.index)
    return FfmpegReader(ffmpeg, path, stream.index, video_start(packets), note,
                        deinterlace=bool(field_order or mixed),
                        deinterlace_as=mode,
                        depth=16 if deep else 8)


def h264_may_interlace(ffmpeg, path, stream_index):
    """Whether an H.264 stream's sequence parameter set allows interlaced frames
    (frame_mbs_only_flag 0): such a stream may turn interlaced after frames that are not (a
    TV channel between a film and the news), while ffmpeg's report judges by the first."""
    out, _ = ffmpeg_output(ffmpeg_args(ffmpeg, "-i", Path(path), "-map", f"0:{stream_index}",
                                       "-c", "copy", "-frames:v", 1, "-f", "h264", "-"),
                           "reading the first packet", check=False)
    for nal in out.split(b"\x00\x00\x01")[1:]:
        if nal and nal[0] & 0x1F == 7:                  # a sequence parameter set
            try:
                return not h264_frame_mbs_only(nal[1:])
            except IndexError:                          # cut short: say it may
                return True
    return False


def h264_frame_mbs_only(sps):
    """frame_mbs_only_flag of an H.264 sequence parameter set (its NAL unit's payload, as
    ITU-T H.264 7.3.2.1.1 lays it out); IndexError when it ends too soon."""
    data = sps.replace(b"\x00\x00\x03", b"\x00\x00")      # emulation prevention bytes
    bits = "".join(f"{byte:08b}" for byte in data)
    at = 0

    def u(n):
        nonlocal at
        if at + n > len(bits):
            raise IndexError("the parameter set ends too soon")
        at += n
        return int(bits[at - n:at], 2) if n else 0

    def ue():
        zeros = 0
        while not u(1):
            zeros += 1
        return (1 << zeros) - 1 + u(zeros)

    def se():
        k = ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)

    profile = u(8)
    u(16)                                               # constraint flags, level
    ue()                                                # seq_parameter_set_id
    if profile in H264_HIGH_PROFILES:
        chroma = ue()
        if chroma == 3:
            u(1)                                        # separate_colour_plane_flag
        ue(), ue(), u(1)                                # bit depths, qpprime bypass
        if u(1):                                        # scaling matrices follow
            for k in range(8 if chroma != 3 else 12):
                if u(1):
                    last = following = 8
                    for _ in range(16 if k < 6 else 64):
                        if following:
                            following = (last + se() + 256) % 256
                        last = following or last
    ue()                                                # log2_max_frame_num_minus4
    order = ue()                                        # pic_order_cnt_type
    if order == 0:
        ue()
    elif order == 1:
        u(1), se(), se()
        for _ in range(ue()):
            se()
    ue(), u(1), ue(), ue()                              # references, gaps, width, height
    return bool(u(1))


# Profiles whose parameter sets carry chroma format, bit depths and scaling matrices.
H264_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


# Codecs any of whose frames may be interlaced whatever ffmpeg's report says, which judges by
# the first: a DVD's MPEG-2 (film frames, then interlaced ones), DV, VC-1; and H.264 whose
# parameter set allows it (h264_may_interlace).
MIXED_SCAN_CODECS = frozenset(("mpeg2video", "dvvideo", "vc1"))


# HDR10's static metadata as ffmpeg's showinfo prints a frame's side data (5.1 and 9 alike):
# "r(0.6800,0.3200) g(0.2650,0.6900) b(0.1500 0.0600) wp(0.3127, 0.3290)
# min_luminance=0.000100, max_luminance=1000.000000" and "MaxCLL=1000, MaxFALL=400".
MASTERING_RE = re.compile(
    r"\br\(([\d.]+)[, ]\s*([\d.]+)\) g\(([\d.]+)[, ]\s*([\d.]+)\) "
    r"b\(([\d.]+)[, ]\s*([\d.]+)\) wp\(([\d.]+)[, ]\s*([\d.]+)\) "
    r"min_luminance=([\d.]+), max_luminance=([\d.]+)")
LIGHT_LEVEL_RE = re.compile(r"MaxCLL=(\d+), MaxFALL=(\d+)")


def hdr_static_metadata(ffmpeg, path, stream_index):
    """The mastering display and content light level an HDR10 stream's first frame
    carries, as {primaries: {r, g, b: (x, y)}, white: (x, y), luminance: (min, max),
    light: (MaxCLL, MaxFALL)} (either part may be empty); None when it carries neither."""
    _, report = ffmpeg_output(ffmpeg_args(
        ffmpeg, "-i", Path(path), "-map", f"0:{stream_index}", "-frames:v", 1, "-vf",
        "showinfo", "-f", "null", "-", level="info"), "reading its HDR metadata", check=False)
    mastering, light = MASTERING_RE.search(report), LIGHT_LEVEL_RE.search(report)
    if not mastering and not light:
        return None
    v = [float(x) for x in mastering.groups()] if mastering else []
    return {"primaries": dict(zip("rgb", zip(v[0:6:2], v[1:6:2]))) if v else {},
            "white": tuple(v[6:8]), "luminance": tuple(v[8:10]),
            "light": tuple(int(x) for x in light.groups()) if light else ()}


def gif_is_transparent(ffmpeg, path):
    """Whether any pixel of an animated GIF's frames, as they are shown, is clear (frame by
    frame: a long GIF is never held whole). A GIF that marks a colour clear only to keep the
    frame before's pixels there is opaque."""
    out, _ = ffmpeg_output(ffmpeg_args(
        ffmpeg, "-i", Path(path), "-map", "0:v:0", "-vf",
        "alphaextract,signalstats,metadata=print:key=lavfi.signalstats.YMIN:file=-",
        "-f", "null", "-"), "reading its transparency", check=False)
    return any(line.startswith(b"lavfi.signalstats.YMIN=") and float(line.split(b"=")[1]) < 255
               for line in out.splitlines())


def film_deinterlacing(ffmpeg, path, stream, field_order):
    """What --deinterlace film does to a stream (a key of DEINTERLACING): "film" (inverse
    telecine) where its fields repeat as 3:2 pulldown repeats them, "matched" where frames
    are coded interlaced but none repeat (a film at 25 frames a second, 2:2), "frame" where
    they are coded progressive (a film telecined by flags alone, as most DVDs are, decodes
    to its own frames). Decimating either of the last two would drop a real frame in five."""
    if not (field_order and interlaced_frames(ffmpeg, path, stream.index)):
        return "frame"
    return "film" if looks_telecined(ffmpeg, path, stream.index) else "matched"


# ffmpeg's idet counts, over the frames it sees, those whose top or bottom field repeats the
# one before: a 3:2 pulldown repeats one field in every 5 frames twice (40%), true
# interlaced video none.
REPEATED_FIELDS_RE = re.compile(r"Repeated Fields: Neither: *(\d+) Top: *(\d+) Bottom: *(\d+)")
TELECINE_SHARE = 0.25


def looks_telecined(ffmpeg, path, stream_index, frames=300):
    """Whether an interlaced stream's first frames repeat fields as a telecined film's do."""
    _, report = ffmpeg_output(ffmpeg_args(
        ffmpeg, "-i", Path(path), "-map", f"0:{stream_index}", "-frames:v", frames, "-vf",
        "idet", "-f", "null", "-", level="info"), "looking for telecine", check=False)
    found = REPEATED_FIELDS_RE.findall(report)
    if not found:
        return False
    neither, top, bottom = (int(x) for x in found[-1])
    return (top + bottom) >= TELECINE_SHARE * max(1, neither + top + bottom)


def interlaced_frames(ffmpeg, path, stream_index, frames=4):
    """Whether any of the first frames of a stream is marked interlaced, for a stream whose
    report does not say (DV's names no scan type, yet every frame is interlaced)."""
    out, _ = ffmpeg_output(ffmpeg_args(
        ffmpeg, "-i", Path(path), "-map", f"0:{stream_index}", "-vf",
        f"trim=end_frame={frames},select='not(eq(interlace_type,PROGRESSIVE))'",
        "-fps_mode", "passthrough", "-c:v", "wrapped_avframe", "-f", "framecrc", "-"),
        "decoding the first frames", check=False)
    return any(line and not line.startswith(b"#") for line in out.splitlines())


def monotonic_times(times_ms, interval_ms):
    """Frame times made strictly increasing: broken or missing timestamps get the nominal
    interval after the previous frame rather than a duplicate or backward time."""
    fixed = []
    for t in times_ms:
        if fixed and not (t > fixed[-1]):
            t = fixed[-1] + interval_ms
        fixed.append(t)
    return fixed


# ---------------------------------------------------------------------------------------------
# The pipeline: reader thread -> workers (one per network copy), which encode in order
# ---------------------------------------------------------------------------------------------

_DONE = object()
# Stands for a frame identical to the one before it. Still pictures, slides, screen
# recordings and held frames decode to exactly the same pixels again; the network would
# give exactly the same result, so it is computed once and the picture written again.
_REPEAT = object()


class Stage(threading.Thread):
    """A worker that moves items from one bounded queue to the next, or stops on error.
    When it ends it puts `ends` end markers on its outbox, one for each consumer."""

    def __init__(self, name, work, outbox, stop, ends=1):
        super().__init__(name=name, daemon=True)
        self.work, self.outbox, self.stop, self.ends = work, outbox, stop, ends
        self.error = None

    def put(self, item):
        put_item(self.outbox, item, self.stop)
        return not self.stop.is_set()

    def run(self):
        try:
            self.work(self)
        except BaseException as exc:   # handed to the main thread, which reports it
            self.error = exc
            self.stop.set()
        finally:
            for _ in range(self.ends if self.outbox is not None else 0):
                self.put(_DONE)


def get_item(inbox, stop, *workers):
    """Next item of a queue, or _DONE once a worker failed or the queue closed."""
    while True:
        try:
            return inbox.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set() or any(w.error for w in workers):
                return _DONE


def put_item(outbox, item, stop):
    """Put item on a bounded queue unless the run stopped (a failed stage sets stop)."""
    while not stop.is_set():
        try:
            outbox.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def pad_to_even(frame):
    """yuv420p codecs need even sizes: replicate the last row/column rather than lose one."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return cv2.copyMakeBorder(frame, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


def even_size(width, height):
    return width + width % 2, height + height % 2


def same_picture(frame, previous):
    """Whether two decoded frames are identical, pixel for pixel."""
    return previous is not None and frame.shape == previous.shape and \
        cv2.norm(frame, previous, cv2.NORM_INF) == 0


@dataclass
class FrameResult:
    count: int
    times_ms: list
    width: int                # exact upscaled size, before any padding
    height: int
    skipped: int = 0          # corrupted frames that could not be decoded
    repeated: int = 0         # frames identical to the one before, not upscaled again
    seconds: float = 0.0      # how long the picture lasts, its last frame's time included
    fresh: int = 0            # frames this run upscaled (the rest an interrupted run did)


def inference_streams(upscaler):
    """How many copies of the upscaler run side by side (NetworkUpscaler.streams)."""
    return upscaler.streams()


@contextlib.contextmanager
def opencv_threads(share):
    """OpenCV's thread count divided by `share` (at least 1) for the duration, then as
    it was: each of `share` network copies gets its part of the cores."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(max(1, before // share))
    try:
        yield
    finally:
        cv2.setNumThreads(before)


class InOrderWriter:
    """A VideoWriter fed by several workers whose frames finish out of order.

    Each worker hands in its finished frame and, if no other worker is writing, writes
    every frame that is next in line itself: the encoder runs on whichever core just
    freed up rather than in a thread of its own competing with the networks. At most
    QUEUE_DEPTH frames wait; a worker ahead of the others waits for them.
    """

    def __init__(self, path, encoder, fps, stop, progress=None, first=0):
        self.path, self.encoder, self.fps, self.stop = path, encoder, fps, stop
        self.progress, self.first = progress, first
        self.waiting, self.written, self.size, self.last = {}, 0, None, None
        self.turn = threading.Condition()       # guards waiting and written
        self.writing = threading.Lock()         # held by the one worker encoding
        self.writer = None
        self.disk_checked = time.monotonic()

    def put(self, seq, frame):
        with self.turn:
            self.waiting[seq] = frame
            while len(self.waiting) > QUEUE_DEPTH and self.written not in self.waiting \
                    and not self.stop.is_set():
                self.turn.wait(0.1)
        # Frames handed in while another worker was writing are left to it; it looks again
        # after letting go of the lock, so none is stranded.
        while self.writing.acquire(blocking=False):
            try:
                self.write_ready()
            finally:
                self.writing.release()
            with self.turn:
                if self.written not in self.waiting:
                    return

    def write_ready(self):
        while True:
            with self.turn:
                frame = self.waiting.pop(self.written, None)
            if frame is None:
                return
            if frame is _REPEAT:
                frame = self.last
            elif self.writer is None:
                self.open(frame)
            self.last = frame = pad_to_even(frame)
            self.writer.write(frame)
            with self.turn:
                self.written += 1
                self.turn.notify_all()
            self.check_disk()
            if self.progress:
                self.progress.update(self.first + self.written)

    def check_disk(self):
        now = time.monotonic()
        if now - self.disk_checked < DISK_CHECK_SECONDS:
            return
        self.disk_checked = now
        free = shutil.disk_usage(Path(self.path).parent).free
        if free < DISK_RESERVE_BYTES:
            raise UpscaleError(f"the disk holding {Path(self.path).parent} is full "
                               f"({free >> 20} MB free) at frame {self.written}; free some "
                               "space there, or write elsewhere with --output-dir")

    def open(self, frame):
        h, w = frame.shape[:2]
        self.size = (w, h)
        self.writer = self.encoder(self.path, even_size(w, h), self.fps)
        if not self.writer.isOpened():
            raise UpscaleError(f"cannot write temporary video {self.path}; check free space "
                               "and permissions")

    def close(self):
        if self.writer is not None:
            self.writer.release()


def eight_bit(image):
    """An 8-bit image as it is; a 16-bit one rounded to 8 bits."""
    return image if image.dtype == np.uint8 else cv2.convertScaleAbs(image, alpha=1 / 257)


class EightBitWriter:
    """cv2.VideoWriter taking 16-bit frames too (an HDR source's), which it cannot write:
    they are rounded to 8 bits."""

    def __init__(self, writer):
        self.writer = writer

    def isOpened(self):
        return self.writer.isOpened()

    def write(self, frame):
        self.writer.write(eight_bit(frame))

    def release(self):
        self.writer.release()


def video_writer(fourcc):
    """An encoder for InOrderWriter: cv2.VideoWriter writing this fourcc."""
    return lambda path, size, fps: EightBitWriter(opencv_opens(path, lambda name: cv2.VideoWriter(
        name, cv2.VideoWriter_fourcc(*fourcc), fps, size)))


class PipeWriter:
    """cv2.VideoWriter's interface to an ffmpeg process that encodes the raw BGR frames
    piped to it. It never raises on release (an interrupt may be unwinding); error says
    why the encode failed, if it did."""

    def __init__(self, command):
        self.log = tempfile.TemporaryFile()
        self.proc = start_ffmpeg(command, stdin=subprocess.PIPE, stderr=self.log, tied=False)
        self.error = ""

    def isOpened(self):
        return self.proc.poll() is None

    def write(self, frame):
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame).data)    # no copy
        except (BrokenPipeError, ValueError):
            self.release()
            raise UpscaleError(f"ffmpeg failed while encoding: {self.error or 'it stopped'}") \
                from None

    def release(self):
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        code = self.proc.wait()
        if code and not self.error:
            self.log.seek(0)
            self.error = failure_detail(code, self.log.read().decode(errors="replace"))
        self.log.close()


def pipe_encoder(ffmpeg, settings, stream, reader):
    """An encoder for InOrderWriter: settings.codec's ffmpeg encoder, fed raw BGR frames
    (as reader decoded them: 8 or 16 bits), converting them with the source stream's own
    matrix and range (as a player will read them) into an MP4 whose frame times are put
    right afterwards (rewrite_mp4_timing)."""
    vfilter, tags = color_args(stream, True, decoder_converts=reader.converts_color)
    pix_fmt = "bgr48le" if reader.depth == 16 else "bgr24"
    hdr = None if reader.converts_color or not is_hdr(stream.color) else \
        hdr_static_metadata(ffmpeg, reader.path, stream.index)

    def start(path, size, fps):
        return PipeWriter(ffmpeg_args(
            ffmpeg, "-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{size[0]}x{size[1]}",
            "-framerate", f"{fps:.6f}", "-i", "pipe:0", *vfilter,
            *settings.codec.encoder_args(settings.crf, settings.preset, reader.depth == 16, hdr),
            *tags, "-f", "mp4", Path(path)))
    return start


def upscale_frames(frames, stats, upscaler, temp_path, encoder, fps, progress=None,
                   orient=ORIENTATIONS["as decoded"], first=0):
    """Upscale every (frame, time_ms) of frames into temp_path; returns a FrameResult with
    the reader's stats (a ReadStats). first: frames done before these, for progress.

    A reader thread decodes and converts colour, and marks a frame identical to the one
    before as a repeat; inference_streams() workers, each with its own copy of the network,
    take frames in turn, rebuild chroma and hand them to an InOrderWriter, which encodes
    them in order and writes a repeat as the picture before. The workers do the encoding:
    one thread fewer than a separate writer stage on a machine whose cores the networks
    already fill, and each frame is finished on the core that computed it. A queue of
    QUEUE_DEPTH frames and the writer's bound keep memory to a few frames whatever the
    length.
    """
    streams = inference_streams(upscaler)
    stop = threading.Event()
    to_infer = queue.Queue(QUEUE_DEPTH)
    times = []
    writer = InOrderWriter(temp_path, encoder, fps, stop, progress, first)
    networks = upscaler.copies(streams)

    def read(stage):
        previous = None
        for seq, (frame, t) in enumerate(frames):
            times.append(t)
            if same_picture(frame, previous):
                stats.repeated += 1
                item = _REPEAT
            else:
                item = upscaler.prepare(orient(frame))
            previous = frame
            if not stage.put((seq, item)):
                return

    def work(network):
        def run(stage):
            while True:
                item = get_item(to_infer, stop)
                if item is _DONE or stop.is_set():
                    return
                seq, prepared = item
                writer.put(seq, prepared if prepared is _REPEAT else
                           upscaler.finish(network.infer(prepared)))
        return run

    workers = [Stage("reader", read, to_infer, stop, ends=streams)]
    workers += [Stage(f"network{i}", work(n), None, stop) for i, n in enumerate(networks)]
    with opencv_threads(streams):
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                while worker.is_alive():   # a timed join lets Ctrl-C and SIGTERM through
                    worker.join(0.1)
        finally:
            stop.set()
            for worker in workers:
                if worker.ident is not None:    # Ctrl-C can come before the last has started
                    worker.join()
            writer.close()
    for worker in workers:
        if worker.error is not None:
            raise worker.error
    if getattr(writer.writer, "error", ""):
        raise UpscaleError(f"ffmpeg failed while encoding: {writer.writer.error}")
    w, h = writer.size or (0, 0)
    return FrameResult(writer.written, times[:writer.written], w, h, stats.skipped,
                       stats.repeated)


# ---------------------------------------------------------------------------------------------
# Segments: a video is worked through in pieces, each kept as a small encoded file in a hidden
# work folder beside the output. An interrupted run (Ctrl-C, kill -9, the OOM killer, a
# reboot) loses at most the piece it was working on, and a rerun goes on from there; --part
# K/N shares one video among processes or machines that see the same folder.
# ---------------------------------------------------------------------------------------------

SEGMENT_WORK_SECONDS = 60.0   # one segment's expected work: at most this is lost to a kill
SEGMENT_MIN_SECONDS = 2.0     # of video; each segment costs a new encoder and a seek
SEGMENT_MAX_SECONDS = 600.0
SEEK_MARGIN_MS = 1000.0       # first seek this far before a segment; further if not enough
# Of the work folder's layout and of what its segments hold. 2: H.264 and H.265 with
# B-frames (joined to 1's, the first segment's parameter sets would not fit the rest).
WORK_VERSION = 2
WORK_SUFFIX = ".upscale-work"
# Containers whose timestamps may restart mid-file (MPEG-TS and PS, files joined with cat)
# or that have none (raw streams): a time there may name two places, so OpenCV's seek
# cannot be trusted, and such a file is done in one piece.
ONE_PIECE_FORMATS = frozenset("mpegts mpeg mpegvideo h264 hevc m4v flv".split())


class UnorderedTimes(Exception):
    """A source whose frame times go backwards cannot be cut by time: it is done whole."""


@dataclass(frozen=True)
class Segment:
    """The frames whose times (OpenCV's, in ms) fall in [start_ms, end_ms)."""
    index: int
    start_ms: float
    end_ms: float


def seconds_per_frame(method, in_pixels, out_pixels):
    """Estimated whole-run seconds a frame takes on a 2-core machine, from its pixels in
    and out (a network's own output, before any resize)."""
    per_input, per_output = method.cost
    return (per_input * in_pixels + per_output * out_pixels) / 1e6


def plan_pixels(plan, video):
    """(pixels in, pixels the method writes) of a frame of video under plan."""
    w, h = video.width, video.height
    return w * h, (w * h * plan.scale * plan.scale if plan.scale else plan.width * plan.height)


def segment_length(settings, video, plan):
    """Seconds of video in a segment: --segment, else about SEGMENT_WORK_SECONDS of work.
    Only the file and the settings decide it, so every --part process agrees."""
    if settings.segment:
        return settings.segment
    per_frame = seconds_per_frame(settings.method, *plan_pixels(plan, video)) or 0.002
    fps = video.fps if 0 < video.fps < 1000 else 30.0
    seconds = SEGMENT_WORK_SECONDS / per_frame / fps
    return round(min(max(seconds, SEGMENT_MIN_SECONDS), SEGMENT_MAX_SECONDS), 1)


def plan_segments(first_ms, duration_s, length_s):
    """Segments of length_s from the first frame's time; the last takes the remainder (up
    to half a length more) and every frame after it, the first every frame before it."""
    count = max(1, round(duration_s / length_s)) if duration_s > 0 else 1
    return segments_between([first_ms + k * length_s * 1000.0 for k in range(1, count)])


def segments_between(edges_ms):
    """The segments that these times (ms, increasing) separate."""
    edges = [-math.inf, *edges_ms, math.inf]
    return [Segment(k, edges[k], edges[k + 1]) for k in range(len(edges) - 1)]


def part_share(count, part):
    """The segment indexes part (K, N) does: the K-th of N nearly equal runs of them."""
    k, n = part
    return range((k - 1) * count // n, k * count // n)


def segment_frames(reader, segment, stats):
    """Yield (frame, time_ms) for the frames of segment, in order.

    Decoding starts at a keyframe before the segment (OpenCV seeks to one and decodes
    forward), never at the start of the file; the seek goes further back until it lands
    at or before the segment's start, so no frame between is missed, and frames before the
    start are decoded and dropped. Raises UnorderedTimes when times go backwards."""
    cap, at_start, margin = reader.open(), True, SEEK_MARGIN_MS
    reading, previous, before = ReadStats(), -math.inf, None
    try:
        while True:
            target = segment.start_ms - margin
            if target > 0:
                cap.set(cv2.CAP_PROP_POS_MSEC, target)
                at_start = False
            elif not at_start:                  # from the very start: no seek at all
                cap.release()
                cap, at_start = reader.open(), True
            reading = ReadStats()
            frames = read_frames(cap, reading)
            first = next(frames, None)
            if target <= 0 or first is not None and first[1] <= segment.start_ms:
                break
            margin *= 4
        for frame, t in itertools.chain([first] if first else [], frames):
            if t < previous and (segment.start_ms > -math.inf or segment.end_ms < math.inf):
                raise UnorderedTimes()
            previous = t
            if t >= segment.end_ms:
                break
            if t >= segment.start_ms:
                if before is None:              # failures before the start are not ours
                    before = reading.skipped
                yield frame, t
    finally:
        stats.skipped += reading.skipped - (reading.skipped if before is None else before)
        stats.decoded += reading.decoded
        cap.release()


class WorkFolder:
    """The hidden folder beside an output that holds its finished segments.

    manifest.json says what they are from: the source's identity, the settings, the
    segment edges; a rerun uses them only when all three are the same. A segment is done
    when seg-NNNNN.json exists (its frame times, counts and size); its picture is
    seg-NNNNN.mp4, renamed into place from a temporary name first, so a reader never sees
    half a file and two processes finishing the same segment write the same thing. Once
    every segment is done they are joined into joined.mp4, which then stands for them."""

    def __init__(self, out_path):
        out = Path(out_path)
        tag = hashlib.sha256(os.fsencode(out.name)).hexdigest()[:8]
        self.path = out.parent / f".{out.stem[:TEMP_STEM_CHARS]}-{tag}{WORK_SUFFIX}"
        self.manifest = self.path / "manifest.json"
        self.joined = self.path / "joined.mp4"     # every segment, with the frame times

    def video(self, index):
        return self.path / f"seg-{index:05d}.mp4"

    def record_path(self, index):
        return self.path / f"seg-{index:05d}.json"

    def start(self, source_id, fingerprint, edges_ms):
        """Take the folder for the work on source_id with settings fingerprint; returns
        (the segment edges to use, why older segments were discarded or ""). A folder for
        the same source and settings keeps its own edges: processes that plan differently
        (another OpenCV on another machine) still share one set of segments."""
        self.path.mkdir(exist_ok=True)
        remove_stale_temps(self.path)
        try:
            have = json.loads(self.manifest.read_text())
        except FileNotFoundError:
            have = None
        except (OSError, ValueError):
            have = {}
        wanted = {"version": WORK_VERSION, "source": source_id, "settings": fingerprint,
                  "edges_ms": edges_ms}
        if have and all(have.get(k) == wanted[k] for k in ("version", "source", "settings")):
            return have["edges_ms"], ""
        why = ""
        if have is not None:
            if have.get("source") != source_id:
                why = "the source changed"
            elif have.get("settings") != fingerprint:
                why = "the settings changed (" + "; ".join(settings_differences(
                    have.get("settings", ""), fingerprint)) + ")"
            else:
                why = "another version of upscale.py made its segments"
            for entry in [*self.path.glob("seg-*"), self.joined]:
                entry.unlink(missing_ok=True)
        self.write(self.manifest, json.dumps(wanted, indent=1))
        return edges_ms, why

    def write(self, path, text):
        temp = temp_name(path, "json")
        temp.write_text(text)
        os.replace(temp, path)

    def finished(self, index):
        """The record of a done segment, or None."""
        try:
            return json.loads(self.record_path(index).read_text())
        except (OSError, ValueError):
            return None

    def commit(self, index, temp_video, result):
        if result.count:
            os.replace(temp_video, self.video(index))
        self.write(self.record_path(index), json.dumps({
            "frames": result.count, "times_ms": result.times_ms, "width": result.width,
            "height": result.height, "skipped": result.skipped,
            "repeated": result.repeated}))

    def count_done(self):
        return sum(1 for _ in self.path.glob("seg-*.json"))

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)


def concat_list(paths):
    """An ffmpeg concat demuxer script naming paths (quotes escaped as it wants them)."""
    return "".join("file '%s'\n" % str(p).replace("'", "'\\''") for p in paths)


def join_segments(ffmpeg, videos, joined, codec):
    """The segments' pictures one after another in joined (the MP4 layout, in
    codec.joined_format's muxer), copied, not re-encoded; the frame times are put right
    afterwards by rewrite_mp4_timing."""
    listing = temp_name(joined, "txt")
    try:
        # (a path's own bytes, whatever they are)
        listing.write_text(concat_list(Path(v).resolve() for v in videos),
                           encoding="utf-8", errors="surrogateescape")
        run_ffmpeg(ffmpeg_args(ffmpeg, "-f", "concat", "-safe", "0", "-i", Path(listing),
                               "-map", "0:v:0", "-c", "copy", "-f", codec.joined_format,
                               Path(joined)),
                   "joining the segments")
    finally:
        listing.unlink()


# ---------------------------------------------------------------------------------------------
# Timing: the VideoWriter writes at a constant rate; the source's frame times are put back by
# rewriting the MP4's sample table (stts), so variable frame rates survive the muxing.
# ---------------------------------------------------------------------------------------------

CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}
COMMON_TIMESCALES = (24000, 30000, 60000, 90000, 48000, 25000, 50000, 1000, 600, 120000)


def rate_grid(times_ms, fps):
    """(timescale, ticks a frame) of the source's nominal rate when every frame time lies on
    its grid to within the half millisecond containers round times to (a 30/1 WebM keeps
    0, 33, 67, 100 ms): written on that grid, the output says the source's rate (30/1, not
    1000/33) and every time moves by at most that half millisecond; None when they do not."""
    if not 0 < fps < 1000:
        return None
    rate = fractions.Fraction(fps).limit_denominator(1001)
    if abs(float(rate) - fps) > 1e-6 * fps:
        return None
    slots = [round((t - times_ms[0]) * rate / 1000) for t in times_ms]
    if any(abs(times_ms[0] + k * 1000 / rate - t) > 0.5 + 1e-6 for k, t in zip(slots, times_ms)) \
            or any(b <= a for a, b in zip(slots, slots[1:])):
        return None
    each = max(1, 90000 // rate.numerator)              # ffmpeg-like: 30/1 in 1/90000
    return rate.numerator * each, rate.denominator * each


def choose_timescale(times_ms):
    """The smallest common timescale in which every frame time is an integer tick (so
    30000/1001 and 24000/1001 rates stay exact); 90000 (error < 6 us) when none is."""
    for timescale in sorted(COMMON_TIMESCALES):
        ticks = [t * timescale / 1000.0 for t in times_ms]
        if all(abs(x - round(x)) < 0.02 for x in ticks):
            return timescale
    return 90000


def frame_ticks(times_ms, timescale, last_interval_ms):
    """Per-sample durations (stts deltas) in ticks for frames shown at times_ms."""
    starts = [round((t - times_ms[0]) * timescale / 1000.0) for t in times_ms]
    end = starts[-1] + max(1, round(last_interval_ms * timescale / 1000.0))
    return [b - a for a, b in zip(starts, starts[1:] + [end])]


def run_length(deltas):
    runs = []
    for d in deltas:
        if runs and runs[-1][1] == d:
            runs[-1][0] += 1
        else:
            runs.append([1, d])
    return runs


def box_extent(head, left):
    """(size, header length) of an ISO media box from its first 16 bytes (head), left bytes
    being what remains of its parent from its start; None when the sizes make no sense."""
    size, header = struct.unpack(">I", head[:4])[0], 8
    if size == 1:
        if len(head) < 16:
            return None
        size, header = struct.unpack(">Q", head[8:16])[0], 16
    elif size == 0:                   # (the box runs to the end)
        size = left
    return (size, header) if size >= header else None


def isobmff_boxes(data):
    """(type, body) of each box in data, one after the other (ISO media: MP4, AVIF, HEIF)."""
    at = 0
    while at + 8 <= len(data):
        extent = box_extent(data[at:at + 16], len(data) - at)
        if extent is None:
            return
        size, header = extent
        yield data[at + 4:at + 8], data[at + header:at + size]
        at += size


def parse_boxes(data):
    """[(type, payload or children)] for an MP4 byte string; containers are parsed."""
    return [(kind, parse_boxes(body) if kind in CONTAINER_BOXES else body)
            for kind, body in isobmff_boxes(data)]


def build_boxes(boxes):
    out = []
    for kind, body in boxes:
        payload = build_boxes(body) if isinstance(body, list) else body
        out.append(struct.pack(">I4s", 8 + len(payload), kind) + payload)
    return b"".join(out)


def find_box(boxes, *path):
    for kind, body in boxes:
        if kind == path[0]:
            return body if len(path) == 1 else find_box(body, *path[1:])
    return None


def replace_box(boxes, path, new_body):
    for i, (kind, body) in enumerate(boxes):
        if kind == path[0]:
            if len(path) == 1:
                boxes[i] = (kind, new_body)
            else:
                replace_box(body, path[1:], new_body)
            return


def set_duration(full_box, duration, offset_v0, offset_v1):
    """A copy of an mvhd/tkhd/mdhd payload with its duration field set."""
    body = bytearray(full_box)
    if body[0] == 1:
        struct.pack_into(">Q", body, offset_v1, duration)
    else:
        struct.pack_into(">I", body, offset_v0, min(duration, 0xFFFFFFFF))
    return bytes(body)


def top_level_boxes(f):
    """[(type, offset, size)] of a file's top-level MP4 boxes, read by seeking over them."""
    boxes, pos, end = [], 0, os.fstat(f.fileno()).st_size
    while pos + 8 <= end:
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        if size == 1:
            size = struct.unpack(">Q", f.read(8))[0]
        elif size == 0:
            size = end - pos
        if size < 8:
            break
        boxes.append((kind, pos, size))
        pos += size
    return boxes


def table_entries(full_box, row):
    """The rows of a counted table box (stts, ctts), unpacked with the struct format row."""
    count = struct.unpack_from(">I", full_box, 4)[0]
    return list(struct.iter_unpack(row, full_box[8:8 + count * struct.calcsize(row)]))


def presentation_places(stbl):
    """Each sample's place in presentation order, samples in decode order: 0, 1, 2 ... unless
    the encoder reordered them (B-frames), as the composition offsets (ctts) say."""
    deltas = [d for n, d in table_entries(find_box(stbl, b"stts"), ">II") for _ in range(n)]
    ctts = find_box(stbl, b"ctts")
    if ctts is None:
        return list(range(len(deltas)))
    offsets = [o for n, o in table_entries(ctts, ">Ii" if ctts[0] == 1 else ">II")
               for _ in range(n)]
    if len(offsets) != len(deltas):
        raise UpscaleError("the temporary video's sample table is inconsistent (ctts)")
    shown = [d + o for d, o in zip(itertools.accumulate([0] + deltas[:-1]), offsets)]
    places = [0] * len(shown)
    for place, sample in enumerate(sorted(range(len(shown)), key=shown.__getitem__)):
        places[sample] = place
    return places


def reordered_timing(starts, places):
    """(ctts payload, delay): non-negative composition offsets that show sample k (in decode
    order, decoded at starts[k]) at starts[places[k]] + delay, and the delay, which an edit
    list skips so that the first frame is shown at 0 (as ffmpeg writes B-frames)."""
    offsets = [starts[p] - starts[k] for k, p in enumerate(places)]
    delay = -min(offsets)
    runs = run_length([o + delay for o in offsets])
    ctts = struct.pack(">4sI", b"\0\0\0\0", len(runs)) + b"".join(
        struct.pack(">II", n, o) for n, o in runs)
    return ctts, delay


def edit_list(movie_ticks, media_start):
    """An edts box showing the media from media_start (media ticks) for movie_ticks."""
    if movie_ticks > 0xFFFFFFFF or media_start > 0x7FFFFFFF:
        elst = struct.pack(">B3xIQqhh", 1, 1, movie_ticks, media_start, 1, 0)
    else:
        elst = struct.pack(">B3xIIihh", 0, 1, movie_ticks, media_start, 1, 0)
    return [(b"elst", elst)]


def rewrite_mp4_timing(path, times_ms, last_interval_ms, fps=0.0):
    """Give the single video track of an MP4 (moov after mdat, as VideoWriter writes it)
    the frame times times_ms, in place; on the grid of the source's nominal rate fps where
    they lie on it (rate_grid). Frames the encoder reordered (B-frames) keep their places:
    the i-th frame shown is shown at times_ms[i]. Only the moov box is read: memory stays
    small however long the video."""
    with open(path, "rb") as f:
        boxes = top_level_boxes(f)
        last = boxes[-1] if boxes else None
        complete = last and last[0] == b"moov" and last[1] + last[2] == os.fstat(f.fileno()).st_size
        if not complete:
            # VideoWriter reports no write errors; an unfinished file is how they show.
            raise UpscaleError(f"writing the temporary video {Path(path).name} failed (disk "
                               f"full?); free some space in {Path(path).parent} and try again")
        moov_start = last[1]
        f.seek(moov_start)
        moov = parse_boxes(f.read(last[2]))[0][1]
    grid = rate_grid(times_ms, fps)
    if grid:
        timescale, tick = grid
        slots = [round((t - times_ms[0]) * timescale / tick / 1000) for t in times_ms]
        last = max(1, round(last_interval_ms * timescale / tick / 1000))
        deltas = [(b - a) * tick for a, b in zip(slots, slots[1:] + [slots[-1] + last])]
    else:
        timescale = choose_timescale(times_ms)
        deltas = frame_ticks(times_ms, timescale, last_interval_ms)
    runs = run_length(deltas)
    stts = struct.pack(">4sI", b"\0\0\0\0", len(runs)) + b"".join(
        struct.pack(">II", n, d) for n, d in runs)
    track_ticks = sum(deltas)
    trak = [(k, b) for k, b in moov if k == b"trak"][0][1]
    stbl = find_box(trak, b"mdia", b"minf", b"stbl")
    places = presentation_places(stbl)
    if len(places) != len(times_ms):
        raise UpscaleError(f"the temporary video holds {len(places)} frames, not the "
                           f"{len(times_ms)} written")
    # Decoded at the times shown in order, each sample is then shown at its own place's.
    ctts, delay = reordered_timing(list(itertools.accumulate([0] + deltas[:-1])), places)
    trak[:] = [(k, b) for k, b in trak if k != b"edts"]   # starts at 0 (B-frames: below)
    replace_box(trak, (b"mdia", b"minf", b"stbl", b"stts"), stts)
    if delay:
        replace_box(trak, (b"mdia", b"minf", b"stbl", b"ctts"), ctts)
    else:
        stbl[:] = [(k, b) for k, b in stbl if k != b"ctts"]
    mdhd = bytearray(find_box(trak, b"mdia", b"mdhd"))
    struct.pack_into(">I", mdhd, 20 if mdhd[0] == 1 else 12, timescale)
    replace_box(trak, (b"mdia", b"mdhd"), set_duration(mdhd, track_ticks, 16, 24))
    mvhd = find_box(moov, b"mvhd")
    movie_scale = struct.unpack_from(">I", mvhd, 20 if mvhd[0] == 1 else 12)[0]
    movie_ticks = round(track_ticks * movie_scale / timescale)
    replace_box(moov, (b"mvhd",), set_duration(mvhd, movie_ticks, 16, 24))
    replace_box(trak, (b"tkhd",), set_duration(find_box(trak, b"tkhd"), movie_ticks, 20, 28))
    if delay:
        at = next(i for i, (k, _) in enumerate(trak) if k == b"tkhd") + 1
        trak.insert(at, (b"edts", edit_list(movie_ticks, delay)))
    with open(path, "r+b") as f:
        f.truncate(moov_start)
        f.seek(moov_start)
        f.write(build_boxes([(b"moov", moov)]))


# ---------------------------------------------------------------------------------------------
# Muxing: the upscaled picture plus everything else the source had (streams, found muxable
#   before any work; creation time; subtitle files beside it)
# ---------------------------------------------------------------------------------------------

def container_for_extension(suffix):
    """The Container whose extensions include suffix (".MKV" too); None if none does."""
    return next((c for c in CONTAINERS.values() if suffix.lower() in c.extensions), None)


def container_of(path, fmt=None):
    """The output's Container, from --format or else its extension (mp4 by default)."""
    return CONTAINERS.get(fmt) or container_for_extension(Path(path).suffix) or \
        CONTAINERS["mp4"]


# Colour tags that OpenCV's own FFmpeg converts away as it decodes to BGR (its swscale 9, in
# the 4.14 and 5.0 wheels alike): a picture with these primaries (wide gamut: BT.2020 as
# phones record HDR, DCI-P3, ...) or transfers (HDR: PQ, HLG) comes out as a BT.709 SDR one,
# its gamut mapped into BT.709's and HDR brought down to SDR. Such frames must be tagged as
# what they have become; other tags pass through OpenCV untouched and are kept.
# tests/test_fidelity.py checks both sets against OpenCV's decoder.
OPENCV_CONVERTED_PRIMARIES = frozenset(
    "bt2020 film jedec-p22 smpte428 smpte431 smpte432 ebu3213".split())
OPENCV_CONVERTED_TRANSFERS = frozenset(("smpte2084", "arib-std-b67"))
BT709_SDR = {"primaries": "bt709", "transfer": "bt709", "space": "bt709"}

# Matrices swscale can convert to, by the name ffmpeg reports for a stream's colour space.
SWS_MATRICES = {"bt709": "bt709", "fcc": "fcc", "bt470bg": "bt601", "smpte170m": "bt601",
                "smpte240m": "smpte240m", "bt2020nc": "bt2020"}
TAG_OPTIONS = {"primaries": "-color_primaries", "transfer": "-color_trc",
               "space": "-colorspace", "range": "-color_range"}
SETPARAMS_NAMES = {"primaries": "color_primaries", "transfer": "color_trc",
                   "space": "colorspace", "range": "range"}


def opencv_converts_color(color):
    """Whether OpenCV's decoder turns a picture with these colour tags into BT.709 SDR."""
    return color.get("primaries") in OPENCV_CONVERTED_PRIMARIES or \
        color.get("transfer") in OPENCV_CONVERTED_TRANSFERS


def is_hdr(color):
    return color.get("transfer") in OPENCV_CONVERTED_TRANSFERS


def color_kind(color):
    return "HDR" if is_hdr(color) else "wide-gamut"


def color_tags(color):
    """'bt2020/arib-std-b67': a stream's primaries and transfer, as ffmpeg names them."""
    return "/".join(color[k] for k in ("primaries", "transfer") if k in color)


def deep_bits(stream):
    """The bits of a stream's samples when more than 8 (10 for yuv420p10le), else 0."""
    deep = re.search(r"p(9|1[0-6])(le|be)$", stream.pix_fmt or "")
    return int(deep.group(1)) if deep else 0


def decoded_color(color):
    """The colour tags of the BGR frames OpenCV decodes from a stream tagged color."""
    return dict(color, **BT709_SDR) if opencv_converts_color(color) else color


def color_warning(stream, through_opencv, kept_deep=False):
    """What the user should hear about the output's colours ("is HDR ...: the output is
    ..."), or "" when it keeps the source's. kept_deep: its frames are kept in 10 bits."""
    bits = deep_bits(stream)
    if through_opencv and opencv_converts_color(stream.color):
        return (f"is {color_kind(stream.color)} ({color_tags(stream.color)}): the output is "
                "SDR BT.709, 8-bit, as OpenCV decodes it" +
                (" (without --sdr it stays as it is)" if PIPES_TO_FFMPEG else
                 " (--model ffmpeg keeps the source's colours)"))
    if bits and not kept_deep:
        return f"is {bits}-bit ({stream.pix_fmt}): the output is 8-bit" + (
            "; --codec h265, av1 or vp9 keep 10 bits" if PIPES_TO_FFMPEG else "")
    return ""


def color_args(stream, reencode, written_by_opencv=True, decoder_converts=True):
    """(video filter args, tag args) that make the output look like the source.

    OpenCV (or ffmpeg: FfmpegReader) decodes with the source's own matrix and range into
    BGR, so the BGR frames are right; what matters is how they go back to YUV.
    cv2.VideoWriter always uses BT.601, limited range: an mp4v output is tagged as exactly
    that (a BT.709 tag on BT.601 numbers would shift colours). A re-encode converts with the
    source's matrix and range and tags them. Primaries and transfer are properties of the
    picture and are kept either way, unless OpenCV's decoder converted them (wide gamut,
    HDR): then the frames, and so the output, are BT.709 SDR (decoder_converts; ffmpeg's
    decoder does not). The ffmpeg baseline scales YUV to YUV, so its stream keeps the
    source's tags.
    """
    color = stream.color if stream else {}
    if written_by_opencv and decoder_converts:
        color = decoded_color(color)
    tags = {key: color[key] for key in ("primaries", "transfer")
            if color.get(key) not in (None, "", "unknown", "reserved")}
    space = color.get("space", "")
    if not reencode:
        tags["space"] = "smpte170m" if written_by_opencv or not space else space
        tags["range"] = "tv"
        vfilter = []
    else:
        tags["space"] = space if space in SWS_MATRICES else "smpte170m"
        tags["range"] = "pc" if color.get("range") == "pc" else "tv"
        # With a filter graph ffmpeg takes the tags from the frames, not from the output
        # options: setparams stamps them on.
        params = ":".join(f"{SETPARAMS_NAMES[k]}={v}" for k, v in tags.items())
        # accurate_rnd: without it swscale's BGR-to-YUV rounds down, and a flat grey 128
        # comes out as Y=125, U=V=127 (cv2.VideoWriter, which cannot be told, does this).
        vfilter = ["-vf", f"scale=out_color_matrix={SWS_MATRICES[tags['space']]}:"
                          f"out_range={tags['range']}:flags=accurate_rnd,"
                          f"setparams={params}"]
    return vfilter, [arg for k, v in tags.items() for arg in (TAG_OPTIONS[k], v)]


def track_name_args(spec, stream, container):
    """MP4 has no track title; players show the handler name instead, so a titled track
    ("Director's commentary") keeps its name there."""
    if container.ffmpeg_format not in ("mp4", "mov") or not stream.title:
        return []
    return [f"-metadata:s:{spec}", f"handler_name={stream.title}"]


def stream_plan(info, container, refused=frozenset(), source=1):
    """(ffmpeg args, notes) mapping the source's audio, subtitles, attachments, chapters
    and metadata (input `source`) into the output. refused: indexes of streams the
    container's muxer refuses as they are (refused_streams), though its table allows them:
    audio is re-encoded, text subtitles converted, the rest dropped, each with a note."""
    args, notes = [], []
    where = container.name.upper()
    for k, s in enumerate(info.of_kind("audio")):
        args += ["-map", f"{source}:{s.index}", f"-map_metadata:s:a:{k}",
                 f"{source}:s:{s.index}"]
        args += track_name_args(f"a:{k}", s, container)
        if s.index in refused or container.audio is not None and s.codec not in container.audio:
            encoder, name, bitrate, layouts = container.audio_reencode
            args += [f"-c:a:{k}", encoder, f"-b:a:{k}", bitrate]
            if layouts:
                args += [f"-filter:a:{k}", f"aformat=channel_layouts={layouts}"]
            notes.append(f"audio stream {k + 1} ({s.codec}) cannot go into {where} as it is: "
                         f"re-encoded to {name} {bitrate}" +
                         ("" if container.name == "mkv" else
                          " (use an .mkv output to keep it exact)"))
        else:
            args += [f"-c:a:{k}", "copy"]
    k = 0
    for s in info.of_kind("subtitle"):
        if s.index not in refused and (container.subtitles is None or
                                       s.codec in container.subtitles):
            codec = "copy"
        elif s.codec in TEXT_SUBTITLE_CODECS and s.codec != container.text_subtitles_as:
            codec = container.text_subtitles_as
        else:
            keeps = s.codec in MATROSKA_SUBTITLE_CODECS and container.name != "mkv"
            notes.append(f"subtitle stream ({s.codec}) cannot go into {where} and was "
                         "dropped" + (" (use an .mkv output to keep it)" if keeps else ""))
            continue
        # Naming any -map_metadata turns off ffmpeg's default copying of stream metadata
        # (language, title), so every stream gets its own.
        args += ["-map", f"{source}:{s.index}", f"-c:s:{k}", codec,
                 f"-map_metadata:s:s:{k}", f"{source}:s:{s.index}"]
        args += track_name_args(f"s:{k}", s, container)
        k += 1
    if container.attachments:
        kept = [s for s in info.of_kind("attachment") if s.index not in refused]
        notes += [f"attached file ({s.codec}) cannot go into {where} and was dropped"
                  for s in info.of_kind("attachment") if s.index in refused]
        for k, s in enumerate(kept):
            # (Matroska refuses an attached file without its name and MIME type.)
            args += ["-map", f"{source}:{s.index}", f"-map_metadata:s:t:{k}",
                     f"{source}:s:{s.index}"]
    args += ["-map_metadata", str(source), "-map_chapters", str(source)]
    if info.video:
        # (but not the name of the encoder that made the source's picture, which is not this)
        args += ["-map_metadata:s:v:0", f"{source}:s:{info.video[0].index}",
                 "-metadata:s:v:0", "encoder="]
    return args, notes


# Seconds of the source a trial mux reads (refused_streams).
TRIAL_MUX_SECONDS = 0.2


def refused_streams(ffmpeg, source, info, container):
    """Indexes of the source's streams that ffmpeg's muxer for container refuses as
    stream_plan puts them there (ADPCM in Matroska, say): found before any work by muxing
    the first moments of the source's other streams into nothing, since the real mux would
    otherwise fail after every frame was upscaled. UpscaleError when even the plan made
    without them fails."""
    def failure(streams, refused=frozenset()):
        trial = dataclasses.replace(info, streams=streams)
        args, _ = stream_plan(trial, container, refused, source=0)
        if container.ffmpeg_format in ("mp4", "mov"):
            args += ["-strict", "experimental"]            # as mux_command's
        command = ffmpeg_args(ffmpeg, "-t", TRIAL_MUX_SECONDS, "-i", Path(source), *args,
                              "-f", container.ffmpeg_format, os.devnull)
        try:
            ffmpeg_output(command, f"putting its sound and subtitles into "
                                   f"{container.name.upper()}")
        except UpscaleError as exc:
            return str(exc)
        return ""
    others = [s for s in info.streams if s.kind in ("audio", "subtitle", "attachment")]
    if not others or not failure(others):
        return frozenset()
    refused = frozenset(s.index for s in others if failure([s]))
    still = failure(others, refused).rstrip(".")
    if still:
        raise UpscaleError(f"{source}: {still}" + (
            "" if container.name == "mkv" else "; an .mkv output (--format mkv) may take it"))
    return refused


# Subtitle files beside a video, which players pair with it by name (film.srt, film.en.srt,
# film.forced.ass): copied beside the output under its name, so its player finds them too.
SIDECAR_EXTENSIONS = frozenset(".srt .ass .ssa .vtt .sub .idx .sup".split())


def sidecar_subtitles(source):
    """{path: ending} of the subtitle files paired with a video by name: <stem>.srt or
    <stem>.<language or note>.srt (.ass, .vtt, ...), ending being what follows the stem.
    One that names a longer video of the same folder (clip.part2.srt beside clip.part2.mp4)
    is that video's."""
    source = Path(source)
    try:
        entries = sorted(source.parent.iterdir())
    except OSError:
        return {}
    longer = [e.stem for e in entries if e.suffix.lower() in VIDEO_EXTENSIONS and
              e.stem.startswith(source.stem + ".")]
    found = {}
    for entry in entries:
        name = entry.name[:-len(entry.suffix)] if entry.suffix else entry.name
        if entry.suffix.lower() not in SIDECAR_EXTENSIONS or \
                not (name == source.stem or name.startswith(source.stem + ".")) or \
                any(name == other or name.startswith(other + ".") for other in longer) or \
                not entry.is_file():
            continue
        found[entry] = entry.name[len(source.stem):]
    return found


def copy_sidecars(sidecars, out_path, overwrite):
    """Copy each sidecar (sidecar_subtitles) beside out_path, named after it; (copied,
    kept): the names written, and those that existed with other contents and were kept
    (without overwrite). Each copy appears whole or not at all."""
    copied, kept = [], []
    for path, ending in sidecars.items():
        target = Path(out_path).with_name(Path(out_path).stem + ending)
        if target.exists() and not overwrite:
            if target.read_bytes() != path.read_bytes():
                kept.append(target)
            continue
        temp = temp_name(target, "copy")
        try:
            shutil.copyfile(path, temp)
            os.replace(temp, target)
        finally:
            if temp.exists():
                temp.unlink()
        copied.append(target)
    return copied, kept


# MP4 and QuickTime keep a file's creation time in their movie and track headers. ffmpeg's
# muxer, asked to keep tags of its own (use_metadata_tags, as mux_command does), writes it a
# second time as a tag, which ffmpeg 7 and later then read back doubled ("T;T"), and which
# tools built on ffprobe (photo and media libraries) cannot parse. So the output is muxed
# without it and the source's time is written into the headers afterwards.
MP4_EPOCH = datetime.datetime(1904, 1, 1, tzinfo=datetime.timezone.utc)
TIMED_HEADERS = {b"mvhd": (), b"tkhd": (b"trak",), b"mdhd": (b"trak", b"mdia")}


def creation_seconds(info):
    """The source's creation time in MP4's clock (seconds since 1904), or None when it has
    none that reads as a time."""
    text = info.tags.get("creation_time", "").split(";")[0].strip()
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    seconds = int((when - MP4_EPOCH).total_seconds())
    return seconds if 0 < seconds < 1 << 32 else None


def file_boxes(f, start, end):
    """(type, body start, body end) of each box between two offsets of an open file (a
    film's boxes are not read into memory, as isobmff_boxes' are)."""
    at = start
    while at + 8 <= end:
        f.seek(at)
        head = f.read(16)
        extent = box_extent(head, end - at)
        if extent is None:
            return
        size, header = extent
        yield head[4:8], at + header, min(at + size, end)
        at += size


def stamp_creation_time(path, seconds):
    """Write seconds (since 1904) as the creation and modification time of an MP4 or
    QuickTime file's movie, track and media headers, in place."""
    with open(path, "r+b") as f:
        end = os.fstat(f.fileno()).st_size
        moov = [(a, b) for kind, a, b in file_boxes(f, 0, end) if kind == b"moov"]

        def headers(a, b, inside=()):
            for kind, start, stop in list(file_boxes(f, a, b)):
                if kind in TIMED_HEADERS and TIMED_HEADERS[kind] == inside:
                    yield start
                elif kind in (b"trak", b"mdia"):
                    yield from headers(start, stop, inside + (kind,))
        for a, b in moov:
            for at in list(headers(a, b)):
                f.seek(at)
                version = f.read(1)[0]
                f.seek(at + 4)
                f.write(struct.pack(">QQ", seconds, seconds) if version == 1 else
                        struct.pack(">II", seconds, seconds))


# What an ffmpeg re-encode needs to keep every frame at its own time: no frames dropped or
# repeated, and the encoder working in the input's time base. (Otherwise it takes 1/rate:
# uneven gaps of 0.08-0.10 s came out evenly spaced through FFV1.)
KEEP_FRAME_TIMES = ("-fps_mode", "passthrough", "-enc_time_base", "1/90000")


def mux_command(ffmpeg, job, settings, temp_video, out_path, video_offset=0.0, end=0.0,
                from_bgr=True):
    """The ffmpeg command that makes out_path, in the container job.out_path's name asks
    for, from the temporary video, whose first frame belongs at video_offset seconds, and
    the job's source; with end, every stream stops there (seconds), as the picture of a
    --frames try does. The settings' fingerprint is recorded in the output. from_bgr: the
    temporary video was made from BGR frames (else it is ffmpeg's scaler's, in the
    source's YUV)."""
    codec, source, info = settings.codec, job.source, job.info
    container = container_of(job.out_path, settings.format)
    args = ffmpeg_args(ffmpeg)
    if video_offset:
        args += ["-itsoffset", f"{video_offset:.6f}"]
    args += ["-i", ffmpeg_arg(Path(temp_video)), "-i", ffmpeg_arg(Path(source)), "-map", "0:v:0"]
    encode = bool(codec.ffmpeg_args) and not codec.piped    # else the stream is final
    if encode:
        args += list(codec.ffmpeg_args) + list(KEEP_FRAME_TIMES)
    else:
        args += ["-c:v", "copy"]
    # A piped encode converted BGR as a re-encode does (the ffmpeg scaler's YUV was not).
    converted = encode or codec.piped and from_bgr
    vfilter, tags = color_args(info.video[0] if info.video else None, converted, from_bgr,
                               job.reader is None or job.reader.converts_color)
    args += (vfilter if encode else []) + tags
    streams, notes = stream_plan(info, container, job.refused)
    args += streams
    # What made the file, so a rerun can tell it from a file made with other settings.
    args += ["-metadata", f"{SETTINGS_TAG}={output_record(settings, job)}"]
    if container.ffmpeg_format in ("mp4", "mov"):
        # write_colr: without it the MP4 muxer drops colour tags of a copied stream;
        # use_metadata_tags stores a tag of our own (as an mdta key). The source's brands
        # would then be stored as tags too: they are the new file's to set.
        args += ["-movflags", "+faststart+write_colr+use_metadata_tags"]
        # FLAC copied into MP4 is "experimental" to ffmpeg before 6.0, which refuses it
        # unless told (after all the frames are upscaled).
        args += ["-strict", "experimental"]
        args += [a for key in ("major_brand", "minor_version", "compatible_brands")
                 for a in ("-metadata", f"{key}=")]
        if creation_seconds(info) is not None:     # (stamp_creation_time writes it after)
            args += ["-metadata", "creation_time="]
    if end:
        args += ["-t", f"{end:.6f}"]
    args += ["-f", container.ffmpeg_format]
    return args + [ffmpeg_arg(Path(out_path))], notes


def stamp_source_time(path, job, settings):
    """Give an output muxed by mux_command the source's creation time, where MP4 or
    QuickTime holds it in headers (creation_seconds)."""
    seconds = creation_seconds(job.info)
    if seconds is not None and \
            container_of(job.out_path, settings.format).ffmpeg_format in ("mp4", "mov"):
        stamp_creation_time(path, seconds)


def scaled_video_encoder(codec, crf, preset, deep=False):
    """Encoder options for the temporary video ffmpeg's scaler writes (FfmpegScaler): the
    final stream for a piped codec (in 10 bits where deep and the codec can), else what
    the VideoWriter would have written."""
    if codec.temp_fourcc == "mp4v":
        # MPEG-4 part 2 allows no clock finer than 1/65535 s (its encoder refused 1/90000);
        # 1/60000 keeps NTSC and whole rates exact.
        return ["-c:v", "mpeg4", "-q:v", "2", "-tag:v", "mp4v", "-pix_fmt", "yuv420p",
                "-enc_time_base", "1/60000"]
    if not codec.piped:
        return ["-c:v", "ffv1", "-pix_fmt", "bgr0"]
    return codec.encoder_args(crf, preset, deep)


# ---------------------------------------------------------------------------------------------
# One file end to end: a Job (probe, orientation, size plan, output path), then its frames
#   through the pipeline segment by segment, joined, timed and muxed
# ---------------------------------------------------------------------------------------------

@dataclass
class Job:
    """One input file's work, found out once: what ffmpeg sees in it, how a player shows
    it, the size its frames become, and where the result goes."""
    source: Path
    info: Probe
    orientation: str           # a key of ORIENTATIONS
    plan: FramePlan
    out_path: Path
    picture: object = None     # a picture's Job: its decoded Picture (info is None)
    reader: object = None      # a video's frame reader (frame_reader); OpenCV's if not given
    # Streams the output's muxer refuses (refused_streams), tried as its work starts.
    refused: frozenset = frozenset()

    def __post_init__(self):
        if self.reader is None and self.picture is None:
            self.reader = OpenCVReader(self.source)


def misnamed_picture_advice(source, codec):
    """What to say of a file ffmpeg reads as one picture of this codec, given as a video:
    either it is a picture the tool reads under its proper extension, or a format it does
    not read at all (OpenEXR, Targa, ...)."""
    source = Path(source)
    extension = "." + PICTURE_CODEC_EXTENSIONS.get(codec, codec)
    if extension in IMAGE_EXTENSIONS and extension != source.suffix.lower():
        return f"is a picture ({codec}); name it {extension} to upscale it as a picture"
    return (f"is a picture in a format this tool does not read ({codec}); convert it to PNG "
            f"first: ffmpeg -i {shlex.quote(source.name)} "
            f"{shlex.quote(source.stem + '.png')}")


def prepare_job(source, settings, ffmpeg):
    """The Job for one input (already through check_source); UpscaleError when it is no
    video this tool can upscale."""
    source = Path(source)
    info = probe(ffmpeg, source)
    if not info.video:
        kinds = ", ".join(sorted({s.kind for s in info.streams})) or "nothing"
        raise UpscaleError(f"{source}: has no video stream (only {kinds}); nothing to upscale "
                           "here, give the video file instead")
    if info.format.endswith("_pipe") or info.format == "image2":
        raise UpscaleError(f"{source}: {misnamed_picture_advice(source, info.video[0].codec)}")
    reader = OpenCVReader(source) if settings.method.kind.whole_files else \
        frame_reader(ffmpeg, source, info, keep_color=not settings.sdr,
                     deinterlace_as=settings.deinterlace,
                     keep_depth=bool(settings.codec.deep_pix_fmt))
    video = info.video[0]
    orientation = display_orientation(ffmpeg, source, video.index) \
        if info.display_matrix and not reader.shows_as_players else "as decoded"
    width, height, sar = video.width, video.height, video.sar
    if not width or not height:                  # ffmpeg did not say: ask OpenCV
        cap = open_capture(source)
        width, height = (int(cap.get(p)) for p in (cv2.CAP_PROP_FRAME_WIDTH,
                                                   cv2.CAP_PROP_FRAME_HEIGHT))
        cap.release()
    if round(video.rotation / 90) % 2:           # shown a quarter turn round
        width, height, sar = height, width, 1.0 / sar
    try:
        plan = plan_frames(settings.size, settings.method, width, height, sar)
    except UpscaleError as exc:
        raise UpscaleError(f"{source}: {exc}") from None
    return Job(source, info, orientation, plan, output_path_for(source, settings, plan.label),
               reader=reader)


def upscale_file(job, settings, ffmpeg, upscalers):
    """Upscale one prepared Job. Temporary files live beside the output and are removed
    whatever happens; the output appears only complete. upscalers(plan) gives the
    upscaler for the job's plan."""
    source, info, out_path = job.source, job.info, job.out_path
    # (here, not in prepare_job: a file whose output exists already is skipped untried)
    job = dataclasses.replace(job, refused=refused_streams(
        ffmpeg, source, info, container_of(out_path, settings.format)))
    if len(info.video) > 1:
        console.say(f"note: {source} has {len(info.video)} video streams; upscaling the first")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    stale = remove_stale_temps(out_path.parent)
    if stale:
        console.say(f"note: removed {stale} temporary file{'s' * (stale > 1)} that killed "
                    f"runs left in {out_path.parent}")
    # Both OpenCV's frames and ffmpeg's scaled copy start at 0 in the temporary file.
    packets = first_packet_times(ffmpeg, source, info.video[0].index)
    offset = video_start(packets)
    temps, frames, work = [], None, None

    def new_temp(tag):              # a temporary file that is removed whatever happens
        temps.append(temp_name(out_path, tag))
        return temps[-1]
    upscaler = upscalers(job.plan)
    decoded = not upscaler.whole_files
    warning = color_warning(info.video[0], decoded and job.reader.converts_color,
                            writes_deep(job, settings, decoded))
    if warning:
        console.warn(f"{source} {warning}")
    if source.suffix.lower() == ".gif":
        if gif_is_transparent(ffmpeg, source):
            console.warn(f"{source.name}: its transparency cannot be kept in a video (its "
                         "clear pixels take their palette colour); -o NAME.webp (or .png) "
                         "makes it an animated picture that keeps it")
    elif info.video[0].alpha:
        console.warn(f"{source.name}: has an alpha channel (transparency), which the output "
                     "does not keep: it is opaque, its clear pixels in whatever colour they "
                     "hold")
    if decoded and job.reader.note:
        console.say(f"note: {source.name}: {job.reader.note}")
    try:
        if upscaler.whole_files:
            temp_video = new_temp("video.mp4")
            console.say(f"{source.name}: scaling with ffmpeg to {job.plan.width}x{job.plan.height}")
            stream = info.video[0]
            deinterlace = settings.deinterlace if settings.deinterlace != "film" else \
                film_deinterlacing(ffmpeg, source, stream, stream.field_order)
            # (ffmpeg's deinterlacers refuse pictures under 3 pixels on a side)
            tiny = 0 < min(stream.width, stream.height) < 3
            upscaler.scale_file(ffmpeg, source, temp_video,
                                scaled_video_encoder(settings.codec, settings.crf,
                                                     settings.preset,
                                                     writes_deep(job, settings, False)), "mp4",
                                None if tiny else deinterlace)
        else:
            encoder = pipe_encoder(ffmpeg, settings, info.video[0], job.reader) \
                if settings.codec.piped else video_writer(settings.codec.temp_fourcc)
            work = WorkFolder(out_path)
            frames = upscale_video(job, work, settings, upscaler, encoder, ffmpeg, offset,
                                   measured_rate(packets))
            if settings.part:
                return frames
            temp_video = work.joined
            if frames.width % 2 or frames.height % 2:
                w, h = even_size(frames.width, frames.height)
                console.warn(f"{source.name}: {frames.width}x{frames.height} is odd-sized; "
                             f"padded to {w}x{h} by repeating the last column/row (codecs "
                             "need even sizes)")
        temp_final = new_temp("part")
        end = offset + frames.seconds if settings.frames and frames else 0.0
        command, notes = mux_command(ffmpeg, job, settings, temp_video, temp_final, offset,
                                     end, not upscaler.whole_files)
        for note in notes:
            console.say(f"note: {source.name}: {note}")
        run_ffmpeg(command, "muxing the output")
        stamp_source_time(temp_final, job, settings)
        os.chmod(temp_final, 0o666 & ~current_umask())
        publish(temp_final, out_path, settings.overwrite)
        if work:
            work.remove()
        carry_sidecars(source, out_path, settings.overwrite)
        return frames
    except OutputTaken:
        if work is not None:        # shared with the run that won, which is done with it
            work.remove()
        raise
    except BaseException:
        if work is not None:
            keep_finished_segments(work, source, settings)
        raise
    finally:
        for t in temps:
            try:
                os.unlink(t)
            except FileNotFoundError:
                pass


def carry_sidecars(source, out_path, overwrite):
    """Copy a finished video's subtitle files beside its output (copy_sidecars) and say
    so; a failure to copy is a warning, the output being done."""
    try:
        copied, kept = copy_sidecars(sidecar_subtitles(source), out_path, overwrite)
    except OSError as exc:
        console.warn(f"{source.name}: its subtitle files could not be copied beside the "
                     f"output ({exc.strerror or exc}); copy them by hand")
        return
    if copied:
        console.say(f"note: {source.name}: subtitle files copied beside the output: "
                    f"{', '.join(t.name for t in copied)}")
    if kept:
        console.say(f"note: {source.name}: {', '.join(t.name for t in kept)} already exist "
                    "with other contents: kept (--overwrite replaces them)")


def settings_for(job, settings):
    """The settings a video Job is made with: those given, except that an HDR source of
    more than 8 bits whose frames come in 16 bits gets 10-bit H.265 when no codec was
    named (the default H.264 would make them 8-bit; x265 takes --crf on x264's scale)."""
    stream = job.info.video[0]
    if settings.codec_named or settings.codec.name != DEFAULT_CODEC or \
            not (is_hdr(stream.color) and deep_bits(stream)) or \
            not (job.reader.depth == 16 or settings.method.kind.whole_files):
        return settings
    return dataclasses.replace(settings, codec=CODECS[DEFAULT_DEEP_CODEC])


def writes_deep(job, settings, decoded=True):
    """Whether the output keeps a source's 10 bits: its frames come 16-bit (decoded: read
    by ffmpeg; else ffmpeg scales the source's own YUV) and the codec can write them."""
    deep = job.reader.depth == 16 if decoded else deep_bits(job.info.video[0])
    return bool(deep and settings.codec.deep_pix_fmt)


def keep_finished_segments(work, source, settings):
    """After a failure or an interrupt: finished segments stay for the next run, which says
    so; a folder with none is removed (unless --part processes may share it)."""
    done = work.count_done() if work.path.is_dir() else 0
    if done:
        console.say(f"note: {source.name}: {done} finished segment{'s' * (done > 1)} kept in "
                    f"{work.path}; run the same command again to go on from there")
    elif not settings.part:
        work.remove()


def check_workload(source, video, settings, plan):
    """Refuse frames too big to upscale, and say up front how long a slow model will take."""
    w, h = plan.width, plan.height
    megapixels = w * h / 1e6
    frames = video.frame_count_hint
    per_frame = seconds_per_frame(settings.method, *plan_pixels(plan, video))
    estimate = f"about {format_eta(per_frame * frames)} for {frames} frames" \
        if frames and per_frame else "unknown time"
    if w * h > MAX_OUTPUT_PIXELS:
        raise UpscaleError(f"{source}: output would be {w}x{h} ({megapixels:.0f} megapixels a "
                           f"frame, {estimate} with {settings.method.name}); that is beyond "
                           f"{MAX_OUTPUT_PIXELS / 1e6:.0f} MP. Use a smaller --scale, or "
                           "downscale the source first")
    if per_frame * frames > SLOW_RUN_SECONDS:
        console.say(f"note: {source.name}: {video.width}x{video.height} -> {w}x{h} with "
                    f"{settings.method.name} will take {estimate} (~{per_frame:.1f} s a frame "
                    "on a 2-core machine)")


def believable_rate(nominal, measured):
    """Frames a second to count and time frames by: the container's nominal rate when it is
    believable (under 1000, within 2x of what the packets show), else the measured one."""
    plausible = 0 < nominal < 1000
    if measured and not (plausible and 0.5 <= nominal / measured <= 2):
        return measured
    return nominal if plausible else measured


def frame_count_hint(claimed, duration_s, rate, exact):
    """How many frames a source has, from the best evidence: an MP4's sample count, which
    is exact; else its length times the believable rate (OpenCV's count for Matroska is the
    file's duration times the nominal rate, which may be 1000/1)."""
    if exact and claimed > 0:
        return claimed
    if duration_s and rate:
        return math.ceil(duration_s * rate - 0.01)
    return claimed


def video_length(info, start):
    """Seconds the first video stream should last, for telling a truncated file from one
    whose video simply starts later or ends sooner than its sound: to its own end when the
    container tags it (Matroska), else to the end of the file."""
    return max(0.0, (info.video[0].end or info.duration) - start)


def check_progressive(source, field_order):
    """UpscaleError for an interlaced stream (field_order: how, "" when progressive) where
    ffmpeg cannot deinterlace it as it is read (Windows): OpenCV's FFmpeg (swscale 9, in
    the 4.14 and 5.0 wheels) will not convert interlaced frames to BGR and hands over black
    ones, and upscaling the two fields as one picture would enlarge their combing anyway."""
    if field_order:
        raise UpscaleError(
            f"{source}: is interlaced ({field_order}), which OpenCV's decoder turns into "
            "black frames; deinterlace it first, then upscale that: " +
            conversion_command(source, "-progressive", "-vf", "bwdif=mode=send_frame"))


def conversion_command(source, tag, *video_options):
    """The shell command that re-encodes source, beside it, into an H.264 Matroska file
    OpenCV reads (nearly lossless, every audio stream copied), for an error to suggest."""
    name = Path(source).name
    return shlex.join(["ffmpeg", "-i", name, "-map", "0:v:0", "-map", "0:a?", "-c:a", "copy",
                       *video_options, "-c:v", "libx264", "-crf", "12",
                       Path(name).stem + tag + ".mkv"])


def ffmpeg_decodes(ffmpeg, path):
    """Whether ffmpeg decodes a frame of the file's first video stream."""
    out, _ = ffmpeg_output(ffmpeg_args(ffmpeg, "-i", Path(path), "-map", "0:v:0", "-frames:v", "1",
                                       "-f", "framecrc", "-"), "decoding", check=False)
    return any(line and not line.startswith(b"#") for line in out.splitlines())


def no_frame_error(source):
    return UpscaleError(f"{source}: no frame could be decoded; the file is damaged or not a "
                        "video")


def source_video(reader, settings, duration_s, exact_count, measured=0.0):
    """(SourceVideo, the first frame's time in ms) as reader reads its source; measured: the
    rate its first packets come at (measured_rate)."""
    cap = reader.open()
    rate = DEINTERLACING[reader.deinterlace_as].rate     # frames made of each source frame
    try:
        fps = believable_rate(cap.get(cv2.CAP_PROP_FPS), measured) * rate
        claimed = frame_count_hint(round(cap.get(cv2.CAP_PROP_FRAME_COUNT) * rate),
                                   duration_s, fps, exact_count)
        if settings.frames:
            claimed = min(claimed, settings.frames) if claimed > 0 else settings.frames
        video = SourceVideo(int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), fps, claimed)
        first = next(read_frames(cap), None)
    finally:
        cap.release()
    if first is None:
        raise no_frame_error(reader.path)
    return video, first[1]


def how_line(method, plan):
    """How the start line says what is done to each frame: "fsrcnn x4" (the network's
    scale), "fast x2, to stay within 4K", "cubic 1080p" (the sizes are beside it)."""
    how = f"{method.name} x{plan.scale}" if plan.scale else f"{method.name} {plan.label}"
    return how + (f", {plan.why}" if plan.why else "")


def upscale_video(job, work, settings, upscaler, encoder, ffmpeg, offset, measured=0.0):
    """Decode, upscale and write the picture of the job's source, segment by segment, into
    the work folder; then join the segments into work.joined with the frames' own times.
    Returns the whole picture's FrameResult; for --part, only its share's (nothing is
    joined)."""
    source, info, orientation, plan = job.source, job.info, job.orientation, job.plan
    if orientation != "as decoded":
        console.say(f"note: {source.name}: display matrix applied: {orientation}")
    duration_s = video_length(info, offset)
    # An MP4's (or QuickTime's) frame count is its sample table's: exact.
    video, first_ms = source_video(job.reader, settings, duration_s,
                                   info.format.startswith("mov,mp4"), measured)
    check_workload(source, video, settings, plan)
    frames_hint = f", about {video.frame_count_hint} frames" \
        if video.frame_count_hint > 0 else ""
    console.say(f"{source.name}: {video.width}x{video.height} -> {plan.width}x{plan.height} with "
                f"{how_line(settings.method, plan)}{frames_hint}")
    segments = segments_between([]) if settings.frames else \
        plan_segments(first_ms, duration_s, segment_length(settings, video, plan))
    if len(segments) > 1 and info.format in ONE_PIECE_FORMATS:
        console.say(f"note: {source.name}: {info.format} timestamps may restart mid-file, so "
                    "it is upscaled in one piece and an interruption loses the work; to make "
                    f"it resumable, remux it first: ffmpeg -i {shlex.quote(source.name)} -c "
                    f"copy {shlex.quote(source.stem + '.mkv')}")
        segments = segments_between([])
    elif len(segments) > 1 and job.reader.deinterlace_as == "film":
        # Decimate's choice of which repeat to drop, and the times it gives the frames it
        # keeps, depend on where its reading started: two segments could each keep, or
        # each drop, a frame at their join.
        console.say(f"note: {source.name}: inverse telecine reads a video in one piece, so an "
                    "interruption loses the work")
        segments = segments_between([])
    try:
        records, fresh = work_through(job, work, segments, settings, upscaler, encoder,
                                      video)
    except UnorderedTimes:
        console.say(f"note: {source.name}: its frame times go backwards, so it cannot be cut into "
                    "segments by time; working through it in one piece (an interruption loses it "
                    "all)")
        segments = segments_between([])
        work.remove()                   # (what was done was cut by the wrong times)
        records, fresh = work_through(job, work, segments, settings, upscaler, encoder,
                                      video)
    result = joined_result(records)
    result.fresh = fresh
    if settings.part:
        return result
    if result.count == 0:
        raise UpscaleError(f"{source}: no frame could be decoded; the file is damaged or not "
                           "a video")
    times = monotonic_times(result.times_ms, video.nominal_interval_ms)
    if not work.joined.exists():
        joined = temp_name(work.joined, "mp4")
        try:
            join_segments(ffmpeg, [work.video(k) for k in sorted(records)
                                   if records[k]["frames"]], joined, settings.codec)
            rewrite_mp4_timing(joined, times, last_interval(times, video.nominal_interval_ms),
                               video.fps)
            os.replace(joined, work.joined)
        finally:
            if joined.exists():
                joined.unlink()
        # The joined picture holds them all: the temporary space at the mux stays at
        # about twice the video, not three times.
        for k in records:
            work.video(k).unlink(missing_ok=True)
    if result.repeated:
        console.say(f"note: {source.name}: {result.repeated} of {result.count} frames repeat "
                    "the frame before them exactly; each such picture was upscaled once")
    if result.skipped:
        console.warn(f"{source.name}: {result.skipped} corrupted frame(s) could not be decoded and "
                     f"were skipped; the {result.count} others keep their times, so sound stays "
                     "in sync")
    decoded_s = (times[-1] - times[0] + last_interval(times, video.nominal_interval_ms)) / 1000.0
    # An MP4's frame count is exact (its sample table's); Matroska's is only estimated
    # from the file's duration, so there the length decides.
    all_claimed = result.count + result.skipped >= video.frame_count_hint > 0
    if duration_s and not all_claimed and not settings.frames and \
            decoded_s < duration_s - max(0.5, 0.05 * duration_s):
        console.warn(f"{source.name}: decoding stopped at frame {result.count} "
                     f"({decoded_s:.1f} s of {duration_s:.1f} s); the file looks truncated or "
                     f"damaged. Kept the {result.count} frames that decoded")
    result.seconds = decoded_s
    return result


def work_through(job, work, segments, settings, upscaler, encoder, video):
    """Upscale each segment of this run's share that is not done yet into the work folder;
    returns ({index: record} of the share, every one done; frames upscaled by this run)."""
    source, orient = job.source, ORIENTATIONS[job.orientation]
    edges, why = work.start(source_identity(source), settings.fingerprint(job.plan),
                            [s.start_ms for s in segments[1:]])
    segments = segments_between(edges)
    if why:
        console.say(f"note: {source.name}: {why} since the interrupted run; its finished segments "
                    "were not used")
    share = part_share(len(segments), settings.part) if settings.part else \
        range(len(segments))
    if not share:
        console.say(f"note: {source.name} has {len(segments)} segment{'s' * (len(segments) > 1)}; "
                    f"none falls to part {settings.part} (use fewer parts, or a shorter --segment)")
    records = {k: work.finished(k) for k in share}
    finished = [r for r in records.values() if r]
    already = sum(r["frames"] for r in finished)
    if finished:
        console.say(f"{source.name}: resuming: {len(finished)} of {len(share)} segments "
                    f"already done ({already} frames)")
    label = f"{source.name} (part {settings.part})" if settings.part else source.name
    hint = video.frame_count_hint * len(share) // len(segments)
    progress = Progress(label, hint, already=already)
    fps = video.fps if 0 < video.fps < 1000 else 30.0
    fresh = 0
    try:
        for k in share:
            if records[k]:
                continue
            temp = temp_name(work.video(k), "mp4")
            stats = ReadStats()
            frames = segment_frames(job.reader, segments[k], stats)
            try:
                result = upscale_frames(itertools.islice(frames, settings.frames or None),
                                        stats, upscaler, temp, encoder, fps, progress, orient,
                                        first=already)
                work.commit(k, temp, result)
            finally:
                frames.close()
                if temp.exists():
                    temp.unlink()
            records[k] = work.finished(k)
            already += result.count
            fresh += result.count
    finally:
        progress.close()
    return records, fresh


def joined_result(records):
    """One FrameResult for segment records (WorkFolder.finished), in index order."""
    ordered = [records[k] for k in sorted(records)]
    sized = [r for r in ordered if r["frames"]] or [{"width": 0, "height": 0}]
    return FrameResult(sum(r["frames"] for r in ordered),
                       [t for r in ordered for t in r["times_ms"]],
                       sized[0]["width"], sized[0]["height"],
                       sum(r["skipped"] for r in ordered), sum(r["repeated"] for r in ordered))


def last_interval(times_ms, nominal_ms):
    """How long the last frame stays on screen: as long as the one before it."""
    return times_ms[-1] - times_ms[-2] if len(times_ms) > 1 else nominal_ms


# ---------------------------------------------------------------------------------------------
# Pictures: a picture's file (IMAGE_EXTENSIONS, or a GIF of one frame) upscaled like one
#   frame (an animation frame by frame), its colour profile and EXIF kept, its settings
#   recorded in the file itself (a PNG tEXt chunk, a JPEG comment, a WebP chunk of our own,
#   an AVIF free box) so that a rerun skips it exactly as it skips a video
# ---------------------------------------------------------------------------------------------

def is_picture(path):
    """Whether path is a picture's file: by its extension, or a GIF of one frame (a still
    GIF is a picture, written as PNG; an animated one is a video)."""
    suffix = Path(path).suffix.lower()
    return suffix in IMAGE_EXTENSIONS or suffix == ".gif" and gif_frame_count(path) == 1


def gif_frame_count(path):
    """How many frames the GIF at path holds (0 when it cannot be read as a GIF)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return 0
    return animation_frame_count(data) if data[:4] == b"GIF8" else 0


def upscaled_as_picture(source, settings):
    """Whether source is upscaled as a picture: a picture's file, or a GIF that -o asks
    for as an animated PNG, WebP or AVIF."""
    return is_picture(source) or Path(source).suffix.lower() == ".gif" and bool(
        settings.output) and Path(settings.output).suffix.lower() in ANIMATED_PICTURES


def picture_extension(source):
    return PICTURE_OUTPUTS.get(Path(source).suffix.lower(), ".png")


@dataclass
class Picture:
    """A picture as it is shown: BGR (8-bit; 16-bit from a 16-bit PNG or TIFF) with EXIF
    orientation applied, and what else the file had."""
    bgr: np.ndarray
    alpha: np.ndarray = None   # of bgr's depth, oriented like bgr
    gray: bool = False
    notes: tuple = ()          # what the output does not keep
    animation: object = None   # an animation's cv2.Animation: every frame, its times
    profile: bytes = None      # the ICC colour profile the pixels are in, kept in the output
    exif: bytes = None         # its EXIF block (when, with what, where), kept in the output


def animation_frame_count(data):
    """How many frames an animated PNG (its acTL chunk), WebP (its ANMF chunks) or AVIF
    (its first track's samples) holds; 1 for a still picture of any format."""
    if data[4:8] == b"ftyp":
        brands = isobmff_box(data, [b"ftyp"]) or b""
        if b"avis" not in brands[:4] + brands[8:]:       # major, then compatible brands
            return 1
        sizes = isobmff_box(data, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsz"])
        return max(1, struct.unpack(">I", sizes[8:12])[0]) if sizes else 1
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        control = png_chunks(data).get(b"acTL", b"")
        return max(1, struct.unpack(">I", control[:4])[0]) if len(control) >= 4 else 1
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return max(1, sum(kind == b"ANMF" for kind, _ in riff_chunk_list(data, 12)))
    if data[:4] == b"GIF8":
        return max(1, gif_image_count(data))
    return 1


def gif_image_count(data):
    """How many images (frames) a GIF file's blocks hold, as far as its bytes go."""
    def color_table(flags):
        return 3 << ((flags & 7) + 1) if flags & 0x80 else 0

    if len(data) < 13:
        return 0
    images, at = 0, 13 + color_table(data[10])       # header, screen descriptor, palette
    while at < len(data) and data[at] != 0x3B:       # the trailer
        if data[at] == 0x21:                         # an extension: introducer, label
            at += 2
        elif data[at] == 0x2C and at + 10 < len(data):   # an image: descriptor, palette,
            images += 1                                  # LZW code size
            at += 10 + color_table(data[at + 9]) + 1
        else:
            break
        while at < len(data) and data[at]:           # data sub-blocks, to the empty one
            at += data[at] + 1
        at += 1
    return images


def isobmff_box(data, path):
    """The body of the first box at path (box types, outermost first); None if none."""
    for kind in path:
        data = next((body for found, body in isobmff_boxes(data) if found == kind), None)
        if data is None:
            return None
        if kind == b"meta":          # a full box: its version and flags come first
            data = data[4:]
    return data


def read_animation(path, data):
    """The Picture of an animated PNG, WebP, AVIF or GIF: its first frame, and the whole
    animation."""
    # (OpenCV 4.14 takes the bytes only as one row.)
    ok, animation = cv2.imdecodeanimation(np.frombuffer(data, np.uint8).reshape(1, -1))
    if not ok or not animation.frames:
        raise UpscaleError(f"{path}: an animated picture OpenCV cannot decode; check that it "
                           "plays in a browser")
    # Frames come as BGRA wherever the format can hold transparency; keep it where it is used.
    opaque = all(f.ndim == 2 or f.shape[2] == 3 or f[:, :, 3].min() == 255
                 for f in animation.frames)
    if opaque:
        animation.frames = [f[:, :, :3] if f.ndim == 3 else cv2.cvtColor(f, cv2.COLOR_GRAY2BGR)
                            for f in animation.frames]
    first = animation.frames[0]
    profile, notes = kept_profile(data, gray=False)
    return Picture(first[:, :, :3], None if opaque else first[:, :, 3], notes=notes,
                   animation=animation, profile=profile)


def read_picture(path):
    """The Picture in an image file; UpscaleError when OpenCV cannot decode it."""
    contents = Path(path).read_bytes()
    if Path(path).suffix.lower() in FFMPEG_PICTURES:
        return read_through_ffmpeg(path, contents)
    frames = animation_frame_count(contents)
    if frames > 1 or contents[:4] == b"GIF8":
        picture = read_animation(path, contents)
        return picture if frames > 1 else dataclasses.replace(picture, animation=None)
    data = np.frombuffer(contents, np.uint8)
    raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    deep = raw is not None and raw.dtype == np.uint16
    # (applies EXIF orientation; 8-bit, or 16-bit for a 16-bit picture)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR | (cv2.IMREAD_ANYDEPTH if deep else 0))
    if bgr is None or raw is None:
        # (JPEG 2000 with subsampled colour, for one, which OpenCV's OpenJPEG refuses)
        return read_through_ffmpeg(path, contents)
    notes, alpha = [], None
    if raw.dtype not in (np.uint8, np.uint16):
        notes.append(f"{raw.dtype.itemsize * 8}-bit samples become 8-bit")
    if raw.ndim == 3 and raw.shape[2] == 4:
        alpha = raw[:, :, 3]
        if alpha.dtype != bgr.dtype:
            alpha = (alpha / (np.iinfo(alpha.dtype).max / 255.0) + 0.5).astype(np.uint8)
        # The orientation imdecode applied to the colour, found by trying each.
        plain = cv2.cvtColor(raw, cv2.COLOR_BGRA2BGR)
        if plain.dtype != bgr.dtype:
            plain = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        turn = next((f for f in ORIENTATIONS.values() if f(plain).shape == bgr.shape and
                     np.array_equal(f(plain), bgr)), None)
        if turn is None:
            alpha = None
            notes.append("its transparency is dropped")
        else:
            alpha = turn(alpha)
    profile, dropped = kept_profile(contents, gray=raw.ndim == 2)
    return Picture(bgr, alpha, raw.ndim == 2, tuple(notes) + dropped, profile=profile,
                   exif=exif_of(contents))


def read_through_ffmpeg(path, data):
    """The Picture of a HEIC or HEIF file, or of one OpenCV cannot decode (data: its bytes),
    decoded by ffmpeg into one PNG, its tiles joined and its rotation applied; its colour
    profile, which ffmpeg leaves out, read from data."""
    png, _ = ffmpeg_output(ffmpeg_args(find_ffmpeg(), "-i", Path(path), "-frames:v", 1,
                                       "-c:v", "png", "-pix_fmt", "rgb24", "-f", "image2pipe",
                                       "-"), "decoding", check=False)
    # (Rotated once already: an EXIF orientation ffmpeg passed on must not turn it again.)
    bgr = cv2.imdecode(np.frombuffer(png, np.uint8),
                       cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if png else None
    if bgr is None and Path(path).suffix.lower() in FFMPEG_PICTURES:
        raise UpscaleError(f"{path}: not a picture this ffmpeg can decode (HEIC needs ffmpeg "
                           "7.1 or newer, as pip's imageio-ffmpeg brings); or convert it to "
                           "JPEG in a photo app, then upscale that")
    if bgr is None:
        raise UpscaleError(f"{path}: not a picture OpenCV or ffmpeg can decode; check that "
                           "it opens in an image viewer")
    grid = heif_grid(data) if data[4:8] == b"ftyp" else None
    if grid and (grid[2] % 2 or grid[3] % 2):
        bgr = whole_grid(path, grid, bgr)
    profile, notes = kept_profile(data, gray=False)
    return Picture(bgr, notes=notes, profile=profile, exif=exif_of(data))


def whole_grid(path, grid, shown):
    """The picture of a HEIF grid of odd width or height, which ffmpeg's own joining crops
    to even sides (4:2:0): its tiles joined by ffmpeg and cropped after their conversion to
    RGB, then turned and mirrored as ffmpeg turned `shown`, its own decoding (found by
    trying each way); shown itself when none matches."""
    rows, cols, w, h, tiles = grid
    joined = [("".join(f"[0:i:{t}]" for t in tiles[r * cols:(r + 1) * cols]) +
               (f"hstack=inputs={cols}" if cols > 1 else "null") + f"[row{r}]")
              for r in range(rows)]
    graph = ";".join(joined) + ";" + "".join(f"[row{r}]" for r in range(rows)) + \
        (f"vstack=inputs={rows}" if rows > 1 else "null") + f",format=rgb24,crop={w}:{h}:0:0"
    raw, _ = ffmpeg_output(ffmpeg_args(find_ffmpeg(), "-i", Path(path), "-filter_complex",
                                       graph, "-frames:v", 1, "-f", "rawvideo", "-pix_fmt",
                                       "bgr24", "-"), "joining its tiles", check=False)
    if len(raw) != w * h * 3:
        return shown
    whole = np.frombuffer(raw, np.uint8).reshape(h, w, 3)
    even = whole[:h - h % 2, :w - w % 2]
    if even.size != shown.size:                  # ffmpeg cut it otherwise (a clean aperture)
        return shown
    errors = orientation_errors(even, shown)
    best = min(errors, key=errors.get)
    return np.ascontiguousarray(ORIENTATIONS[best](whole)) if errors[best] < 4 else shown


def prepare_picture(source, settings):
    """The Job for a picture (already through check_source): its plan from its shown size."""
    picture = read_picture(source)
    h, w = picture.bgr.shape[:2]
    try:
        frames = 1 if picture.animation is None else len(picture.animation.frames)
        plan = plan_frames(settings.size, settings.method, w, h, fit=picture_fit(frames))
    except UpscaleError as exc:
        raise UpscaleError(f"{source}: {exc}") from None
    out_path = output_path_for(source, settings, plan.label)
    if picture.animation is not None:
        check_animation(source, len(picture.animation.frames), plan, out_path)
    return Job(Path(source), None, "as decoded", plan, out_path, picture)


def check_animation(source, count, plan, out_path):
    """UpscaleError, before any work, when an animation's output could not be written: a
    format that cannot animate, or more frames than fit in memory at the size asked."""
    if out_path.suffix.lower() not in ANIMATED_PICTURES:
        raise UpscaleError(f"{source}: is animated ({count} frames), and "
                           f"{out_path.suffix} pictures are not; name the output .webp or "
                           ".png with -o to keep it animated")
    needed = count * plan.width * plan.height * 4
    if needed > ANIMATION_MEMORY:
        raise UpscaleError(f"{source}: {count} frames at {plan.width}x{plan.height} would take "
                           f"{needed / 2**30:.1f} GB of memory (at most "
                           f"{ANIMATION_MEMORY / 2**30:.0f} GB); ask for a smaller size "
                           "(--scale, --height)")


def upscaled_picture(picture, upscaler, size, on_tile=None):
    """The picture's pixels at size: colour through the upscaler (on_tile: see
    forward_tiled); transparency, where there is any, with the cubic baseline."""
    out = upscaler.upscale(picture.bgr, on_tile)
    if picture.gray:
        out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    if picture.alpha is not None:
        alpha = cv2.resize(picture.alpha, tuple(size), interpolation=cv2.INTER_CUBIC)
        out = np.dstack([out, alpha])
    return out


def upscaled_animation(picture, upscaler, size, progress):
    """A cv2.Animation of picture's frames, each through upscaled_picture, shown as long
    as the source's, looping as it does."""
    out = cv2.Animation()
    frames = []
    for frame in picture.animation.frames:
        layers = Picture(frame[:, :, :3], None if picture.alpha is None else frame[:, :, 3])
        frames.append(upscaled_picture(layers, upscaler, size))
        progress.update(len(frames))
    out.frames, out.durations = frames, list(picture.animation.durations)
    out.loop_count, out.bgcolor = picture.animation.loop_count, picture.animation.bgcolor
    return out


def picture_params(extension):
    """cv2.imencode's parameters for a picture of that format."""
    return {".jpg": [cv2.IMWRITE_JPEG_QUALITY, PICTURE_QUALITY],
            ".webp": [cv2.IMWRITE_WEBP_QUALITY, PICTURE_QUALITY],
            ".avif": [cv2.IMWRITE_AVIF_QUALITY, PICTURE_QUALITY]}.get(extension, [])


def encoded_animation(animation, extension):
    """The bytes of an animated PNG, WebP or AVIF file."""
    ok, data = cv2.imencodeanimation(extension, animation, picture_params(extension))
    if not ok:
        raise UpscaleError(f"OpenCV could not encode an animated {extension} picture")
    return bytes(data)


def encoded_picture(image, extension, profile=None, exif=None):
    """The bytes of an image file of that format; with the profile and EXIF given, where
    the encoder writes them (ENCODER_METADATA_PICTURES)."""
    params = picture_params(extension)
    metadata = [(kind, value) for kind, value in ((cv2.IMAGE_METADATA_ICCP, profile),
                                                  (cv2.IMAGE_METADATA_EXIF, exif)) if value]
    if metadata and extension in ENCODER_METADATA_PICTURES:
        ok, data = cv2.imencodeWithMetadata(
            extension, image, [kind for kind, _ in metadata],
            [np.frombuffer(value, np.uint8) for _, value in metadata], params)
        if not ok:
            raise UpscaleError(f"OpenCV could not encode a {extension} picture")
        return bytes(data)
    if extension == ".jpg" and hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR"):
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    if extension == ".jpg" and image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    ok, data = cv2.imencode(extension, image, params)
    if not ok:
        raise UpscaleError(f"OpenCV could not encode a {extension} picture")
    return bytes(data)


def finished_picture(data, extension, fingerprint, profile=None, exif=None):
    """An encoded picture's bytes with the source's colour profile and EXIF (when it had
    them) and the settings that made it (fingerprint) added. Each goes in right after a
    JPEG's or PNG's header, so the last added comes first: EXIF, where readers look for it
    first, then the profile, then the settings."""
    data = tag_picture(data, extension, f"{SETTINGS_TAG}\0{fingerprint}".encode())
    if profile and extension in METADATA_PICTURES:
        data = with_profile(data, extension, profile)
    if exif and extension in METADATA_PICTURES:
        data = with_exif(data, extension, exif)
    return data


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + \
        struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def riff_chunk(kind, body):
    return kind + struct.pack("<I", len(body)) + body + b"\0" * (len(body) % 2)


def tag_picture(data, extension, text):
    """data with text added where the format keeps such things: a PNG tEXt chunk after the
    header, a JPEG comment after the JFIF header, a WebP chunk of our own (in the extended
    layout, which readers skip), a free box at the end of an AVIF (which nothing points
    into)."""
    if extension == ".avif":
        return data + struct.pack(">I", 8 + len(text)) + b"free" + text
    if extension == ".png":
        return data[:33] + png_chunk(b"tEXt", text) + data[33:]
    if extension == ".jpg":
        return jpeg_with_segment(data, 0xFE, text)
    return webp_file(extended_webp_chunks(data) + riff_chunk(b"UPSC", text))


def jpeg_with_segment(data, marker, body):
    """JPEG bytes with a segment added after the JFIF header (which must come first)."""
    at = 2 + (2 + struct.unpack(">H", data[4:6])[0] if data[2:4] == b"\xff\xe0" else 0)
    return data[:at] + bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body + \
        data[at:]


def extended_webp_chunks(data):
    """A WebP file's chunks in the extended layout (VP8X first), which can carry more than
    the image: a simple file (one VP8 or VP8L chunk) gets the VP8X header it lacks."""
    chunks = data[12:]
    if chunks[:4] != b"VP8X":
        width, height = picture_size(data)
        flags = 0x10 if chunks[:4] == b"VP8L" and chunks[8 + 4] & 0x10 else 0    # alpha
        header = struct.pack("<I", flags) + (width - 1).to_bytes(3, "little") + \
            (height - 1).to_bytes(3, "little")
        chunks = riff_chunk(b"VP8X", header) + chunks
    return chunks


def webp_file(chunks):
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def picture_size(webp):
    """(width, height) of a simple WebP file (one VP8 or VP8L chunk)."""
    kind, body = webp[12:16], webp[20:]
    if kind == b"VP8L":
        bits = int.from_bytes(body[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return (int.from_bytes(body[6:8], "little") & 0x3FFF,
            int.from_bytes(body[8:10], "little") & 0x3FFF)


# Colour profiles. A picture's pixels mean colours only with its ICC profile: a phone's Display
# P3 photo or a camera's Adobe RGB one shown without it looks dull. The output's pixels are
# in the source's colour space still, so its profile goes into the output unchanged, where
# it describes them (RGB for colour, GRAY for grey; a CMYK or Lab one does not).

def icc_profile(data):
    """The ICC profile embedded in a JPEG, PNG, WebP or TIFF file's bytes; None if none."""
    try:
        if data[:2] == b"\xff\xd8":
            return jpeg_icc_profile(data)
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return png_icc_profile(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return riff_chunks(data, 12).get(b"ICCP")
        if data[:4] in (b"II*\0", b"MM\0*"):
            return tiff_icc_profile(data)
        if data[4:8] == b"ftyp":
            return heif_icc_profile(data)
    except (struct.error, zlib.error, ValueError, IndexError):
        pass                    # a damaged profile is no profile; the pixels still decode
    return None


def jpeg_icc_profile(data):
    """JPEG keeps a profile in APP2 segments, numbered, each up to 64 KB."""
    parts = {body[12]: body[14:] for marker, body in jpeg_segments(data)
             if marker == 0xE2 and body[:12] == b"ICC_PROFILE\0"}
    return b"".join(parts[k] for k in sorted(parts)) or None


def png_icc_profile(data):
    body = png_chunks(data).get(b"iCCP")    # name, NUL, method 0 (zlib), the profile
    return zlib.decompress(body[body.index(b"\0") + 2:]) if body else None


def jpeg_segments(data):
    """(marker, body) of each segment of a JPEG file before its image data."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF and data[at + 1] not in (0xDA, 0xD9):
        length = struct.unpack(">H", data[at + 2:at + 4])[0]
        yield data[at + 1], data[at + 4:at + 2 + length]
        at += 2 + length


def png_chunks(data):
    """{kind: body} of a PNG file's chunks before its image data (the first of each kind),
    where everything that describes the picture comes."""
    chunks, at = {}, 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind in (b"IDAT", b"IEND"):
            break
        chunks.setdefault(kind, data[at + 8:at + 8 + length])
        at += 12 + length
    return chunks


def riff_chunk_list(data, at):
    """(kind, body) of each RIFF chunk from at on (WebP's from 12)."""
    while at + 8 <= len(data):
        kind, length = data[at:at + 4], struct.unpack("<I", data[at + 4:at + 8])[0]
        yield kind, data[at + 8:at + 8 + length]
        at += 8 + length + length % 2


def riff_chunks(data, at):
    """{kind: body} of the RIFF chunks from at on (the first of each kind)."""
    chunks = {}
    for kind, body in riff_chunk_list(data, at):
        chunks.setdefault(kind, body)
    return chunks


def tiff_icc_profile(data):
    """TIFF keeps it in the first directory's tag 34675."""
    order = "<" if data[:2] == b"II" else ">"
    at = struct.unpack(order + "I", data[4:8])[0]
    for i in range(struct.unpack(order + "H", data[at:at + 2])[0]):
        tag, _, count, offset = struct.unpack(order + "HHII",
                                              data[at + 2 + 12 * i:at + 14 + 12 * i])
        if tag == 34675 and count > 4:
            return data[offset:offset + count]
    return None


def heif_icc_profile(data):
    """HEIF and AVIF keep it as a colr property of type prof (or rICC, restricted)."""
    properties = isobmff_box(data, [b"meta", b"iprp", b"ipco"]) or b""
    return next((body[4:] for kind, body in isobmff_boxes(properties)
                 if kind == b"colr" and body[:4] in (b"prof", b"rICC")), None)


def kept_profile(data, gray):
    """(the profile to write into the output, the notes for one that cannot be): a profile
    describes pixels of one colour space, and the output's are RGB, or grey for grey."""
    profile = icc_profile(data)
    if profile is None or len(profile) < 128:
        return None, ()
    space = profile[16:20]
    if space == (b"GRAY" if gray else b"RGB "):
        return profile, ()
    return None, (f"its {space.decode('latin-1').strip()} colour profile is not kept",)


def with_profile(data, extension, profile):
    """An encoded picture's bytes with an ICC profile added where the format keeps one: a
    PNG iCCP chunk after the header, JPEG APP2 segments after the JFIF header, a WebP ICCP
    chunk right after VP8X (whose flag announces it)."""
    if extension == ".png":
        return data[:33] + png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(profile)) + \
            data[33:]
    if extension == ".jpg":
        pieces = [profile[i:i + 65519] for i in range(0, len(profile), 65519)]
        for n, piece in reversed(list(enumerate(pieces))):    # each goes in first
            data = jpeg_with_segment(data, 0xE2, b"ICC_PROFILE\0" +
                                     bytes([n + 1, len(pieces)]) + piece)
        return data
    chunks = extended_webp_chunks(data)
    header = bytes([chunks[8] | 0x20]) + chunks[9:18]          # 0x20: has a profile
    return webp_file(b"VP8X" + chunks[4:8] + header + riff_chunk(b"ICCP", profile) +
                     chunks[18:])


# EXIF: when, with what and where a photo was taken, kept in the output as it was but for
# what the output changed: its orientation is applied (so it is 1, as shown), its pixel size
# is the new one, and the old thumbnail (the next directory) is left out.

def exif_of(data):
    """The EXIF block (a TIFF structure) of a JPEG, PNG or WebP file's bytes; None if none."""
    if data[:2] == b"\xff\xd8":
        block = next((body[6:] for marker, body in jpeg_segments(data)
                      if marker == 0xE1 and body[:6] == b"Exif\0\0"), None)
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        block = png_chunks(data).get(b"eXIf")
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        block = riff_chunks(data, 12).get(b"EXIF")
        block = block[6:] if block and block[:6] == b"Exif\0\0" else block  # (some write it)
    elif data[4:8] == b"ftyp":
        try:
            block = heif_exif(data)
        except (struct.error, ValueError):
            block = None
    else:
        block = None
    return block if block and block[:4] in (b"II*\0", b"MM\0*") else None


def heif_exif(data):
    """The EXIF block of a HEIC or HEIF file: the data of its item of type Exif; None if
    none."""
    wanted = next((item for item, kind in heif_item_types(data).items() if kind == b"Exif"),
                  None)
    body = heif_item_data(data, wanted) if wanted is not None else None
    return body[4 + struct.unpack(">I", body[:4])[0]:] if body else None   # after its offset


def heif_item_types(data):
    """{item ID: its type (b"hvc1", b"grid", b"Exif", ...)} from the item list (iinf)."""
    meta = isobmff_box(data, [b"meta"]) or b""
    items = isobmff_box(meta, [b"iinf"]) or b""
    types = {}
    for kind, body in isobmff_boxes(items[6 if items[:1] == b"\0" else 8:]):
        if kind == b"infe" and body[0] >= 2:              # version 2: 16-bit IDs; 3: 32
            wide = body[0] == 3
            item, at = struct.unpack(">I" if wide else ">H", body[4:8 if wide else 6])[0], \
                8 if wide else 6
            types[item] = body[at + 2:at + 6]
    return types


def heif_item_data(data, wanted):
    """The bytes of one item of a HEIF file, from its first extent in the file (iloc);
    None if it has none there."""
    places = isobmff_box(data, [b"meta", b"iloc"])
    if not places:
        return None
    version, at = places[0], 4
    sizes = places[at] >> 4, places[at] & 15, places[at + 1] >> 4, \
        (places[at + 1] & 15) if version else 0
    offset_size, length_size, base_size, index_size = sizes
    at += 2

    def number(size):
        nonlocal at
        at += size
        return int.from_bytes(places[at - size:at], "big")

    for _ in range(number(2 if version < 2 else 4)):
        item = number(2 if version < 2 else 4)
        method = number(2) & 15 if version else 0
        number(2)                                          # data_reference_index
        base = number(base_size)
        extents = [(number(index_size), base + number(offset_size), number(length_size))
                   for _ in range(number(2))]
        if item == wanted and method == 0 and extents:
            _, start, length = extents[0]
            return data[start:start + length]
    return None


def heif_grid(data):
    """(rows, columns, width, height, [tile item IDs, row by row]) of a HEIF file whose
    primary item is a grid of tiles; None for any other."""
    meta = isobmff_box(data, [b"meta"]) or b""
    primary = isobmff_box(meta, [b"pitm"])
    if not primary:
        return None
    primary = int.from_bytes(primary[4:], "big")
    grid = heif_item_data(data, primary) if heif_item_types(data).get(primary) == b"grid" \
        else None
    references = isobmff_box(meta, [b"iref"])
    if not grid or not references:
        return None
    wide = references[0] == 1                               # 32-bit item IDs
    size = 4 if wide else 2
    for kind, body in isobmff_boxes(references[4:]):
        if kind == b"dimg" and int.from_bytes(body[:size], "big") == primary:
            count = int.from_bytes(body[size:size + 2], "big")
            tiles = [int.from_bytes(body[size + 2 + i * size:size + 2 + (i + 1) * size], "big")
                     for i in range(count)]
            rows, cols = grid[2] + 1, grid[3] + 1
            w, h = struct.unpack(">II", grid[4:12]) if grid[1] & 1 else \
                struct.unpack(">HH", grid[4:8])                   # flags: 32-bit sizes
            return (rows, cols, w, h, tiles) if len(tiles) == rows * cols else None
    return None


def exif_for_output(exif, width, height):
    """The output's EXIF block from the source's: orientation 1, pixel size width x height,
    no thumbnail; None when the block is damaged (better none than a broken one)."""
    order = "<" if exif[:2] == b"II" else ">"
    out = bytearray(exif)

    def entries(at):
        count = struct.unpack_from(order + "H", out, at)[0]
        for i in range(count):
            tag, kind = struct.unpack_from(order + "HH", out, at + 2 + 12 * i)
            yield tag, kind, at + 10 + 12 * i            # where its value is
        yield None, None, at + 2 + 12 * count            # where the next directory's offset is

    try:
        first, details = struct.unpack_from(order + "I", out, 4)[0], None
        for tag, kind, value_at in entries(first):
            if tag == 0x0112 and kind == 3:                          # Orientation
                struct.pack_into(order + "H", out, value_at, 1)
            elif tag == 0x8769:                                      # the Exif directory
                details = struct.unpack_from(order + "I", out, value_at)[0]
            elif tag is None:                                        # the thumbnail's
                struct.pack_into(order + "I", out, value_at, 0)
        for tag, kind, value_at in entries(details) if details else ():
            size = {0xA002: width, 0xA003: height}.get(tag)         # PixelX/YDimension
            if size is not None and kind == 4:
                struct.pack_into(order + "I", out, value_at, size)
            elif size is not None and kind == 3 and size < 65536:
                struct.pack_into(order + "H", out, value_at, size)
    except struct.error:
        return None
    return bytes(out)


def with_exif(data, extension, exif):
    """An encoded picture's bytes with an EXIF block added: a JPEG APP1 segment (unless over
    its 64 KB), a PNG eXIf chunk, a WebP EXIF chunk (whose flag VP8X sets)."""
    if extension == ".jpg":
        return jpeg_with_segment(data, 0xE1, b"Exif\0\0" + exif) if len(exif) < 65000 \
            else data
    if extension == ".png":
        return data[:33] + png_chunk(b"eXIf", exif) + data[33:]
    chunks = extended_webp_chunks(data)
    return webp_file(chunks[:8] + bytes([chunks[8] | 0x08]) + chunks[9:] +
                     riff_chunk(b"EXIF", exif))


def picture_settings(path):
    """The settings an earlier run recorded in a picture (tag_picture); None when there are
    none or it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    key = SETTINGS_TAG.encode() + b"\0"
    at = data.find(key)
    if at < 0:
        return None
    end = len(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        end = at + struct.unpack(">I", data[at - 8:at - 4])[0]
    elif data[:2] == b"\xff\xd8":
        end = at - 2 + struct.unpack(">H", data[at - 2:at])[0]
    elif data[:4] == b"RIFF":
        end = at + struct.unpack("<I", data[at - 4:at])[0]
    return data[at + len(key):end].decode("utf-8", "replace")


def depth_lost(picture, extension):
    """The note (a tuple of one, or none) for a 16-bit picture written where 8 bits go."""
    return (f"16-bit samples become 8-bit in {extension[1:].upper()}; name the output .png "
            "with -o to keep them",) if picture.bgr.dtype == np.uint16 and \
        extension not in DEEP_PICTURES else ()


def metadata_lost(picture, extension):
    """The note (a tuple of one, or none) for a colour profile or EXIF that an output of
    that format cannot hold."""
    # (an animation's encoder, cv2.imencodeanimation, takes none)
    kept = extension in METADATA_PICTURES or extension in ENCODER_METADATA_PICTURES and \
        picture.animation is None
    lost = [] if kept else \
        [what for what, there in (("colour profile", picture.profile), ("EXIF", picture.exif))
         if there]
    return (f"its {' and '.join(lost)} cannot be kept in an animated AVIF; name the output "
            ".png or .webp with -o to keep them",) if lost else ()


def upscale_picture(job, settings, upscalers):
    """Upscale one prepared picture Job; the output appears complete or not at all. Returns
    an animation's FrameResult, None for a still picture."""
    picture, out_path = job.picture, job.out_path
    extension = out_path.suffix.lower().replace(".jpeg", ".jpg")
    for note in picture.notes + metadata_lost(picture, extension) + \
            depth_lost(picture, extension):
        console.warn(f"{job.source.name}: {note}")
    upscaler = upscalers(job.plan)
    console.say(f"{job.source.name}: {picture.bgr.shape[1]}x{picture.bgr.shape[0]} -> "
                f"{job.plan.width}x{job.plan.height} with {how_line(settings.method, job.plan)}")
    size, result = (job.plan.width, job.plan.height), None
    fingerprint = output_record(settings, job, picture=True)
    exif = exif_for_output(picture.exif, *size) if picture.exif else None
    if picture.animation is None:
        progress = Progress(job.source.name, 0, unit="tiles")
        try:
            image = upscaled_picture(picture, upscaler, size, progress.update)
        finally:
            progress.close()
        data = encoded_picture(image if extension in DEEP_PICTURES else eight_bit(image),
                               extension, picture.profile, exif)
    else:
        count = len(picture.animation.frames)
        progress = Progress(job.source.name, count)
        try:
            animation = upscaled_animation(picture, upscaler, size, progress)
        finally:
            progress.close()
        data = encoded_animation(animation, extension)
        result = FrameResult(count, [], *size, fresh=count)
    data = finished_picture(data, extension, fingerprint, picture.profile, exif)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_name(out_path, "part" + extension)
    try:
        temp.write_bytes(data)
        os.chmod(temp, 0o666 & ~current_umask())
        publish(temp, out_path, settings.overwrite)
    finally:
        temp.unlink(missing_ok=True)
    return result


# ---------------------------------------------------------------------------------------------
# Many files: the inputs expanded, each run in turn (or by --jobs children, whose outcomes
#   come back as data), progress lines, and the summary
# ---------------------------------------------------------------------------------------------

def shorten(text, width):
    """text, cut in the middle with "..." to at most width characters."""
    if len(text) <= width:
        return text
    if width <= 3:
        return text[:width]
    head = (width - 3) // 2           # the end (an extension, a take number) keeps the extra
    return text[:head] + "..." + text[len(text) - (width - 3 - head):]


def format_eta(seconds):
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Frames done / total, fps and ETA on stderr: one redrawn line on a terminal, a plain
    line every PROGRESS_INTERVAL_LOG seconds otherwise. The total is the container's claim,
    used for nothing but this display."""

    def __init__(self, label, total_hint, stream=None, already=0, unit="frames"):
        self.label, self.total, self.unit = label, max(0, int(total_hint)), unit
        self.stream = stream or sys.stderr
        self.quiet = console.quiet
        self.tty = self.stream.isatty()
        self.start = self.last = time.monotonic()
        self.done = self.already = already      # frames an earlier, interrupted run did

    def line(self, now, width=0):
        """The progress line; with width, at most width - 1 characters (a terminal wraps a
        line that fills its last column): the label gives way first, the figures last."""
        elapsed = max(now - self.start, 1e-6)
        fps = (self.done - self.already) / elapsed
        if self.total and self.done <= self.total:
            pct = 100.0 * self.done / self.total
            eta = format_eta((self.total - self.done) / fps if fps > 0 else 0)
            if self.unit != "frames":           # a picture's tiles: how far, how long
                figures = [f"{pct:.0f}% ({self.done}/{self.total} {self.unit}), ETA {eta}",
                           f"{pct:.0f}% ETA {eta}"]
            else:
                figures = [f"{self.done}/{self.total} frames ({pct:.0f}%), {fps:.1f} fps, "
                           f"ETA {eta}",
                           f"{self.done}/{self.total} {pct:.0f}% {fps:.0f}fps ETA {eta}"]
        else:
            figures = [f"{self.done} frames, {fps:.1f} fps", f"{self.done} {fps:.0f}fps"]
        if not width:
            return f"{self.label}: {figures[0]}"
        room = width - 1
        for text in figures:
            label_room = room - len(text) - 2
            if label_room >= min(len(self.label), 12):
                return f"{shorten(self.label, label_room)}: {text}"
        return figures[-1][:room]

    def width(self):
        return shutil.get_terminal_size().columns if self.tty else 0

    def update(self, done, total=None):
        """done so far, of total where it is first known now."""
        self.done, self.total = done, self.total if total is None else total
        if self.quiet:
            return
        now = time.monotonic()
        interval = PROGRESS_INTERVAL_TTY if self.tty else \
            float(os.environ.get("UPSCALE_JOB_PROGRESS") or PROGRESS_INTERVAL_LOG)
        if now - self.last >= interval:
            self.last = now
            if self.tty:
                self.stream.write("\r\x1b[K" + self.line(now, self.width()))
            else:
                self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def close(self):
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


# What output_path_for() names a result: <stem>_<model>_<x2|x1.5|1080p|w1280>[_firstN].
OUTPUT_NAME_RE = re.compile(r"_(%s)_(x\d+(\.\d+)?|\d+p|w\d+)(_first\d+)?$"
                            % "|".join(re.escape(m) for m in METHODS))


def folder_inputs(folder):
    """The videos and pictures directly inside a folder, by name, leaving out hidden files
    and earlier outputs of this tool."""
    return sorted(c for c in Path(folder).iterdir()
                  if c.is_file() and c.suffix.lower() in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS
                  and not c.name.startswith(".") and not OUTPUT_NAME_RE.search(c.stem)
                  and not COMPARE_NAME_RE.search(c.stem))


def expand_inputs(paths):
    """Input files in order: a folder stands for the videos and pictures directly inside
    it (folder_inputs). Missing paths are kept to be reported."""
    files = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = folder_inputs(p)
            files += found if found else [p]     # an empty folder is reported as an error
        else:
            files.append(p)
    unique = {}                        # the same file named twice is done once
    for f in files:
        unique.setdefault(f.resolve() if f.exists() else f, f)
    return list(unique.values())


def subfolders_note(folders):
    """What to say of subfolders a folder input leaves out (unsearched_subfolders)."""
    if len(folders) == 1:
        return (f"note: {folders[0]} holds videos or pictures too; subfolders are not "
                "searched: name it as an input as well to upscale them")
    shown = ", ".join(map(str, folders[:3])) + (", ..." if len(folders) > 3 else "")
    return (f"note: {len(folders)} subfolders hold videos or pictures too ({shown}); "
            "subfolders are not searched: name them as inputs as well to upscale them")


def unsearched_subfolders(paths):
    """Subfolders, directly inside the folders among paths and not named themselves, that
    hold videos or pictures: a folder input does not reach into them."""
    named = {Path(p).resolve() for p in paths if Path(p).is_dir()}
    found = []
    for folder in map(Path, paths):
        if not folder.is_dir():
            continue
        for sub in sorted(folder.iterdir()):
            try:
                if sub.is_dir() and not sub.name.startswith(".") and \
                        sub.resolve() not in named and folder_inputs(sub):
                    found.append(sub)
            except OSError:            # unreadable: nothing to say of it
                continue
    return found


def done_line(source, out_path, settings, frames, seconds):
    """What a finished file (or --part share) says: frames, speed, and what was resumed."""
    figures = []
    if frames is not None:
        figures.append(f"{frames.count} frames")
        if frames.fresh:
            figures.append(f"{frames.fresh / seconds:.1f} fps")
        if frames.fresh < frames.count:
            figures.append(f"{frames.count - frames.fresh} done by an earlier run")
    figures.append(f"{seconds:.1f} s")
    if settings.part:
        k, n = settings.part
        return (f"part {k}/{n} done: {source} ({', '.join(figures)}); when all {n} parts are "
                f"done, the same command without --part joins them into {out_path}")
    return f"done: {source} -> {out_path} ({', '.join(figures)})"


def summary(done, skipped, failures):
    """The closing line of a run over several inputs, with or without --jobs."""
    return f"{done} done, {skipped} skipped, {len(failures)} failed" + \
        (": " + ", ".join(failures) if failures else "")


# The stop signals that came, the first of them unwinding the run. A list, not a
# threading.Event: a signal arriving while the handler runs runs it again inside the first
# call, which then held the Event's lock, and the run hung for good with its workers going on.
STOPPING = []


def handle_stop(signum, frame):
    """The first stop signal unwinds the run (every cleanup runs); any later one is ignored,
    so that a second Ctrl-C or SIGTERM cannot cut the cleanup short. Takes no lock."""
    if STOPPING:
        return
    STOPPING.append(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


class ModelUnavailable(UpscaleError):
    """The model or device cannot be had: no input can be upscaled."""


def load_upscaler(settings, scale):
    """The method's upscaler at one of its scales; ModelUnavailable if it cannot be had."""
    try:
        upscaler = make_upscaler(settings.method, scale, settings.model_dir,
                                 settings.tile, settings.device)
    except UpscaleError as exc:
        raise ModelUnavailable(str(exc)) from None
    if settings.device == "auto":
        console.say(f"note: running the network on the {upscaler.device}")
    return upscaler


def upscaler_source(settings):
    """upscalers(plan): the upscaler for a FramePlan. Each network scale is loaded once
    for the whole run; a baseline resizes straight to the plan's size, a network's output
    is brought to it (FittedUpscaler) unless it has it already."""
    loaded = {}

    def upscalers(plan):
        size = (plan.width, plan.height)
        if not plan.scale:
            return settings.method.kind(settings.method, 0, size)
        if plan.scale not in loaded:
            loaded[plan.scale] = load_upscaler(settings, plan.scale)
        return FittedUpscaler(loaded[plan.scale], size)
    return upscalers


def forwarded_options(parser, args, leave_out=("inputs", "jobs")):
    """The options given on the command line, as a child process running one input for
    --jobs must get them: every option not at its default, generically, so that a new
    option needs no code here."""
    out, given = [], vars(args)
    for action in parser._actions:
        if not action.option_strings or action.dest in leave_out or \
                action.dest not in given or given[action.dest] == action.default:
            continue                  # positional, not for a child, --help, or not given
        value = given[action.dest]
        if isinstance(value, SizeRequest):   # --scale, --height and --width share one
            if action.option_strings[-1] == "--scale":
                out += value.options()
            continue
        flag = action.option_strings[-1]
        out += [flag] if action.nargs == 0 else [flag, str(value)]
    return tuple(out)


def scales_needed(method, request):
    """The network scales a size request may run at: one for a scale, any for a size."""
    if request.kind == "scale":
        return [min((s for s in method.scales if s >= request.value),
                    default=max(method.scales))]
    return list(method.scales)


def run_jobs(settings, inputs):
    """--jobs N: each input in its own process, N at a time, each with its share of the
    CPU threads and the options this run was given; their messages are passed on line by
    line, prefixed with the file name."""
    if settings.method.is_network:      # fetch the models once, not in N processes at once
        try:
            for scale in scales_needed(settings.method, settings.size):
                locate_model(settings.method, scale, settings.model_dir)
        except UpscaleError as exc:
            console.error(exc)
            return EXIT_FAILED
    env = dict(os.environ, UPSCALE_THREADS=str(max(1, usable_cores() // settings.jobs)))
    if sys.stderr.isatty():     # a person watches: each job's progress line every 2 s
        env["UPSCALE_JOB_PROGRESS"] = str(PROGRESS_INTERVAL_JOB)
    lock, children = threading.Lock(), set()

    def one(source):
        """"done", "skipped" or "failed": one input in its own process, which says which
        in a small record (OUTCOME_ENV), never in the text it prints."""
        command = [sys.executable, str(Path(__file__).resolve()), *settings.argv, "--",
                   str(source)]
        fd, record = tempfile.mkstemp(prefix="upscale-outcome-", suffix=".json")
        os.close(fd)
        # Its own session: a Ctrl-C in the terminal reaches this process alone, which passes
        # it on once (below), so each job stops and cleans up exactly once.
        proc = subprocess.Popen(command, env=dict(env, **{OUTCOME_ENV: record}),
                                stdin=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, errors="replace",
                                start_new_session=True,
                                preexec_fn=CHILD_SETUP and functools.partial(
                                    die_with_parent, signal.SIGTERM))
        with lock:
            children.add(proc)
        name = Path(source).name
        for line in proc.stderr:
            if line.startswith(f"{name}: "):       # the name once, in the prefix
                line = line[len(name) + 2:]
            with lock:
                sys.stderr.write(f"[{name}] {line}")
                sys.stderr.flush()
        code = proc.wait()
        with lock:
            children.discard(proc)
        try:
            outcome = json.loads(Path(record).read_text() or "{}")
        except (OSError, ValueError):
            outcome = {}
        finally:
            Path(record).unlink(missing_ok=True)
        if code or outcome.get("failed") or not outcome:
            return "failed"
        return "skipped" if outcome.get("skipped") else "done"

    pool = concurrent.futures.ThreadPoolExecutor(settings.jobs)
    try:
        futures = [pool.submit(one, source) for source in inputs]
        while not all(f.done() for f in futures):   # a timed wait lets signals through
            concurrent.futures.wait(futures, timeout=0.1)
    except BaseException as exc:
        signum = signal.SIGINT if isinstance(exc, KeyboardInterrupt) else \
            getattr(exc, "signum", signal.SIGTERM)
        with lock:
            for proc in children:        # each cleans up its own temporary files
                proc.send_signal(signum)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    results = [f.result() for f in futures]
    failed = [str(s) for s, r in zip(inputs, results) if r == "failed"]
    console.say(summary(results.count("done"), results.count("skipped"), failed),
                always=bool(failed))
    return EXIT_FAILED if failed else EXIT_OK


def run(settings, inputs):
    """Process every input; returns the exit status."""
    try:                  # what every input needs, checked once before any of them
        ffmpeg = find_ffmpeg()
        check_ffmpeg_has(ffmpeg, settings.codec)
    except UpscaleError as exc:
        console.error(exc)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED
    if settings.jobs > 1 and len(inputs) > 1:
        return run_jobs(settings, inputs)
    failures, done, skipped = [], 0, 0
    upscalers = upscaler_source(settings)
    claimed = {}                    # output path -> the input this run makes it from
    for source in inputs:
        try:
            if settings.output and same_file(source, settings.output):
                raise UpscaleError(f"{source}: output would overwrite the input; choose "
                                   "another -o or --output-dir")
            check_source(source)
            if OUTPUT_NAME_RE.search(Path(source).stem) and settings.output is None:
                # A shell loop over *.mp4 run twice would otherwise upscale its own outputs.
                console.say(f"skip: {source} is named as an upscale.py output; to upscale it "
                            "again, name the result with -o")
                skipped += 1
                continue
            picture = upscaled_as_picture(source, settings)
            job = prepare_picture(source, settings) if picture else \
                prepare_job(source, settings, ffmpeg)
            made_with = settings if picture else settings_for(job, settings)
            out_path, wanted = job.out_path, output_record(made_with, job, picture)
            if out_path in claimed:
                raise UpscaleError(f"{source}: its output {out_path.name} would be "
                                   f"{claimed[out_path]}'s too; upscale it on its own with "
                                   "-o, or rename one of them")
            claimed[out_path] = Path(source).name
            if picture != (out_path.suffix.lower() in PICTURE_WRITES):
                kind, endings = ("picture", PICTURE_WRITES) if picture else \
                    ("video", [e for c in CONTAINERS.values() for e in c.extensions] +
                     (list(ANIMATED_PICTURES) if Path(source).suffix.lower() == ".gif"
                      else []))
                raise UpscaleError(f"{source} is a {kind}; -o must name a {kind} too "
                                   f"({', '.join(endings)}), not {out_path.name}")
            if same_file(source, out_path) or Path(source).resolve() == out_path.resolve():
                raise UpscaleError(f"{source}: output would overwrite the input; choose "
                                   "another -o or --output-dir")
            if out_path.exists() and not settings.overwrite:
                made = picture_settings(out_path) if picture else \
                    recorded_settings(ffmpeg, out_path)
                how = output_mismatch(made, wanted)
                if how:
                    raise UpscaleError(f"{out_path} exists but was made {how}; use "
                                       "--overwrite to replace it, or -o to name another "
                                       "output")
                console.say(f"skip: {out_path} exists, made with the same settings (use "
                            "--overwrite to make it again)")
                skipped += 1
                continue
            if made_with.codec is not settings.codec:
                console.say(f"note: {Path(source).name}: HDR in {deep_bits(job.info.video[0])} "
                            f"bits: written with --codec {made_with.codec.name}, in 10 bits (the "
                            f"default, {settings.codec.name}, is 8-bit; name a --codec to "
                            "choose another)")
            started = time.monotonic()
            frames = upscale_picture(job, made_with, upscalers) if picture else \
                upscale_file(job, made_with, ffmpeg, upscalers)
            console.say(done_line(source, out_path, made_with, frames,
                                  time.monotonic() - started))
            done += 1
        except ModelUnavailable as exc:
            # The same for every input: say it once rather than once per file.
            console.error(exc)
            return EXIT_FAILED
        except Exception as exc:        # the file's one line; the batch goes on
            console.error(describe(exc, source))
            failures.append(str(source))
    if len(inputs) > 1:
        console.say(summary(done, skipped, failures), always=bool(failures))
    record_outcome(done, skipped, failures)
    return EXIT_FAILED if failures else EXIT_OK


# A --jobs child writes its outcome to the file this names (set by its parent).
OUTCOME_ENV = "UPSCALE_OUTCOME_FILE"


def record_outcome(done, skipped, failures):
    """Tell a --jobs parent, as data, what became of the input(s)."""
    path = os.environ.get(OUTCOME_ENV)
    if path:
        Path(path).write_text(json.dumps({"done": done, "skipped": skipped,
                                          "failed": len(failures)}))


# ---------------------------------------------------------------------------------------------
# Benchmark: every stage and the plain sequential loop, measured side by side in one run
# ---------------------------------------------------------------------------------------------

def plain_loop(job, method, model_path, ffmpeg):
    """The reference loop the pipeline is measured against: VideoCapture (the job's frame
    reader) -> one DnnSuperResImpl.upsample (or cv2.resize) per frame, then a resize to the
    plan's size if the network's scale is not it -> VideoWriter mp4v -> ffmpeg mux, into
    job.out_path."""
    out_path, plan = job.out_path, job.plan
    scale, size = plan.scale, (plan.width, plan.height)
    temp_video = temp_name(out_path, "plain.mp4")
    try:
        if method.is_network:
            sr = cv2.dnn_superres.DnnSuperResImpl_create()
            sr.readModel(str(model_path))
            sr.setModel(method.algo, scale)

            def enlarge(frame):
                return resized(sr.upsample(frame), size)
        else:
            enlarge = ResizeUpscaler(method, 0, size).upscale
        cap = job.reader.open()
        writer, count = None, 0
        for frame, _ in read_frames(cap):
            big = enlarge(frame)
            if writer is None:
                h, w = big.shape[:2]
                writer = cv2.VideoWriter(str(temp_video), cv2.VideoWriter_fourcc(*"mp4v"),
                                         cap.get(cv2.CAP_PROP_FPS) or 30, even_size(w, h))
            writer.write(pad_to_even(big))
            count += 1
        writer.release()
        cap.release()
        settings = Settings(method=method, size=SizeRequest("scale", scale or 1),
                            codec=CODECS["mp4v"])
        command, _ = mux_command(ffmpeg, job, settings, temp_video, out_path)
        run_ffmpeg(command, "muxing the plain loop's output")
        stamp_source_time(out_path, job, settings)
        return count
    finally:
        if temp_video.exists():
            temp_video.unlink()


def infer_in_streams(upscaler, prepared):
    """The network alone, run the way the pipeline runs it: inference_streams() copies
    side by side, each taking every n-th frame."""
    streams = inference_streams(upscaler)
    if streams == 1:
        return [upscaler.infer(p) for p in prepared]
    networks = upscaler.copies(streams)
    workers = [threading.Thread(target=lambda k=k: [networks[k].infer(p)
                                                    for p in prepared[k::streams]])
               for k in range(streams)]
    with opencv_threads(streams):
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()


def single_threaded(fn):
    """fn() run with OpenCV on one thread."""
    with opencv_threads(cv2.getNumThreads()):
        return fn()


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:             # not on Linux
        return os.cpu_count() or 1


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def peak_rss_mb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


BENCHMARK_REPEATS = 3     # end-to-end runs of each, alternated; the best of each is compared


BENCHMARK_SPREAD = 0.15    # runs further apart than this make the ratio unreliable


@dataclass
class BenchmarkResult:
    """What --benchmark measured: seconds for every stage over all frames, and every
    alternated end-to-end run of the plain loop and of this tool."""
    source: str
    frames: int
    size_in: tuple             # (w, h)
    size_out: tuple
    method: str
    size: str                  # the size asked, as output names say it (x4, 1080p)
    cores: int
    streams: int
    stages: list               # [(name, seconds)]
    plain_runs: list
    tool_runs: list
    ideal: float               # seconds: every stage's least CPU shared over the cores
    psnr: float                # pipeline frames against DnnSuperResImpl.upsample (nan: none)
    peak_mb: float

    @property
    def speedup(self):
        return min(self.plain_runs) / min(self.tool_runs)

    @property
    def spread(self):
        """The largest relative spread of either's runs: how much the machine's load moved
        the figures while they were taken."""
        return max((max(r) - min(r)) / min(r) for r in (self.plain_runs, self.tool_runs))


def measure_benchmark(source, settings, repeats=BENCHMARK_REPEATS):
    """A BenchmarkResult for one input: each stage alone, then the plain loop and this
    tool end to end, alternated `repeats` times; every figure measured here and now."""
    source = Path(source)
    check_source(source)
    ffmpeg = find_ffmpeg()
    method = settings.method
    if method.kind.whole_files:
        raise UsageError("--benchmark measures OpenCV methods; pick a model or cv2 baseline")
    # (sdr: OpenCV's 8-bit frames, which DnnSuperResImpl.upsample, the reference, takes)
    inner = dataclasses.replace(settings, overwrite=True, output=None, output_dir=None,
                                sdr=True)
    with console.muted():
        job = prepare_job(source, inner, ffmpeg)
    info, plan, scale = job.info, job.plan, job.plan.scale
    model_path = locate_model(method, scale, settings.model_dir) if method.is_network else None
    upscalers = upscaler_source(inner)
    upscaler = upscalers(plan)

    cap = job.reader.open()
    t_decode, frames = timed(lambda: [f for f, _ in read_frames(cap)])
    cap.release()
    n = len(frames)
    if n == 0:
        raise no_frame_error(source)
    t_prepare, prepared = timed(lambda: [upscaler.prepare(f) for f in frames])
    t_infer_one, inferred = timed(lambda: [upscaler.infer(p) for p in prepared])
    t_infer_thread = timed(single_threaded, lambda: [upscaler.infer(p) for p in prepared])[0]
    t_infer, _ = timed(infer_in_streams, upscaler, prepared)
    t_finish, finished = timed(lambda: [upscaler.finish(i) for i in inferred])
    t_convert = t_prepare + t_finish
    with tempfile.TemporaryDirectory(prefix="upscale-bench-") as tmp:
        tmp = Path(tmp)
        h, w = finished[0].shape[:2]

        codec = settings.codec       # the encoder this tool's run uses
        encoder = pipe_encoder(ffmpeg, settings, info.video[0], job.reader) if codec.piped \
            else video_writer(codec.temp_fourcc)

        def encode():
            writer = encoder(tmp / "enc.mp4", even_size(w, h), 25)
            for f in finished:
                writer.write(pad_to_even(f))
            writer.release()
        t_encode, _ = timed(encode)
        psnr, t_official = float("nan"), None
        if method.is_network:
            sr = cv2.dnn_superres.DnnSuperResImpl_create()
            sr.readModel(str(model_path))
            sr.setModel(method.algo, scale)
            checks = [cv2.PSNR(resized(sr.upsample(f), (w, h)), g)
                      for f, g in zip(frames[:20], finished)]
            psnr = min(checks)
            t_official = timed(lambda: [sr.upsample(f) for f in frames])[0]
        plain, ours = [], []
        for i in range(repeats):      # alternate so drift in machine load hits both alike
            plain.append(timed(plain_loop, dataclasses.replace(job, out_path=tmp / f"plain{i}.mp4"),
                               method, model_path, ffmpeg)[0])
            with console.muted():
                ours.append(timed(upscale_file,
                                  dataclasses.replace(job, out_path=tmp / f"ours{i}.mp4"),
                                  inner, ffmpeg, upscalers)[0])
    streams = inference_streams(upscaler)
    stages = [("decode (VideoCapture)", t_decode)]
    if t_official is not None:
        stages.append(("DnnSuperResImpl.upsample alone (plain loop's)", t_official))
    stages += [("network alone, 1 stream, all threads", t_infer_one),
               ("network alone, 1 stream, 1 thread", t_infer_thread),
               (f"network alone, as the pipeline ({streams} stream{'s' * (streams > 1)})",
                t_infer),
               ("colour convert / merge", t_convert),
               (f"encode ({codec.encoder})", t_encode),
               ("plain sequential loop, end to end", min(plain)),
               ("upscale.py pipeline, end to end", min(ours))]
    # What no arrangement of these stages can beat: all of their work, each stage at its
    # least CPU (the network on one thread), shared over the cores without any loss.
    cores = usable_cores()
    ideal = (t_decode + t_infer_thread + t_convert + t_encode) / cores
    # A high-water mark of this process, which held every decoded frame for the per-stage
    # figures: the pipeline alone keeps only QUEUE_DEPTH frames per stage in flight.
    return BenchmarkResult(source.name, n, (frames[0].shape[1], frames[0].shape[0]), (w, h),
                           method.name, plan.label, cores, streams, stages, plain, ours, ideal,
                           psnr, peak_rss_mb())


def report_benchmark(result, out=sys.stdout):
    """Print a BenchmarkResult: first what a user wants (this tool's speed, the plain
    loop's, the ratio and whether it can be trusted), then each stage."""
    r, n = result, result.frames
    best_plain, best_tool = min(r.plain_runs), min(r.tool_runs)
    print(f"benchmark: {r.source}, {r.size_in[0]}x{r.size_in[1]} -> {r.size_out[0]}x"
          f"{r.size_out[1]}, {n} frames, {r.method} {r.size}, OpenCV {cv2.__version__}, "
          f"{r.cores} cores, best of {len(r.tool_runs)}", file=out)
    print(f"upscale.py end to end: {n / best_tool:.1f} fps ({best_tool:.2f} s)", file=out)
    print(f"plain loop end to end: {n / best_plain:.1f} fps ({best_plain:.2f} s; VideoCapture "
          "-> DnnSuperResImpl.upsample -> VideoWriter mp4v -> ffmpeg mux)", file=out)
    print(f"speed-up over the plain loop (best against best): {r.speedup:.2f}x", file=out)
    if r.spread > BENCHMARK_SPREAD:
        print(f"note: runs of the same thing differed by up to {100 * r.spread:.0f}% (the "
              "machine was busy): the ratio is unreliable; run again when it is quieter",
              file=out)
    print(f"\n{'stage':<50}{'seconds':>9}{'fps':>9}", file=out)
    for name, seconds in r.stages:
        print(f"{name:<50}{seconds:>9.3f}{n / seconds:>9.1f}", file=out)
    print("end-to-end runs, alternated (s): plain " + " ".join(f"{t:.2f}" for t in r.plain_runs)
          + " | upscale.py " + " ".join(f"{t:.2f}" for t in r.tool_runs), file=out)
    network = dict(r.stages)[next(name for name, _ in r.stages if "as the pipeline" in name)]
    print(f"pipeline fps / network-alone fps (as the pipeline runs it): "
          f"{network / best_tool:.2f}", file=out)
    print(f"ideal pipeline: the stages' times above (network on 1 thread) shared over "
          f"{r.cores} cores with no loss: {r.ideal:.3f} s, at most {best_plain / r.ideal:.2f}x "
          "over the plain loop", file=out)
    if not math.isnan(r.psnr):
        print(f"PSNR of pipeline frames vs DnnSuperResImpl.upsample (min of 20): {r.psnr:.1f} "
              "dB", file=out)
    print(f"peak resident memory of this benchmark: {r.peak_mb:.0f} MB", file=out)


# ---------------------------------------------------------------------------------------------
# Comparing methods (--compare): the same frames through each method, side by side, measured
# ---------------------------------------------------------------------------------------------

COMPARE_METHODS = ("fast", "hq", "fsrcnn", "fsrcnn-opencv", "espcn", "lapsrn", "edsr", "cubic",
                   "linear", "ffmpeg")
PSNR_CAP = 100.0          # dB reported for identical frames (no error at all)
GRID_MAX_WIDTH = 1920     # grid videos and pictures are scaled down to this width
COMPARE_NAME_RE = re.compile(r"_compare_x\d+(\.\d+)?$")     # stems of --compare's own outputs
# What --compare measures: (report key, table title, which is best), in the table's order.
MEASURES = (("psnr", "PSNR dB", max), ("ssim", "SSIM", max), ("vmaf", "VMAF", max),
            ("ms_per_frame", "ms/frame", min), ("psnr_encoded", "PSNR mp4v", max),
            ("ssim_encoded", "SSIM mp4v", max))
REPORT_KEYS = ("input", "method", "scale", "frames", *(key for key, _, _ in MEASURES),
               "status", "reason")


def psnr(truth, test):
    """PSNR over the BGR frame as cv2.PSNR computes it, capped at PSNR_CAP for identical
    frames (where cv2.PSNR gives a meaningless 361 dB)."""
    return min(PSNR_CAP, cv2.PSNR(truth, test))


def ssim(truth, test):
    """SSIM as OpenCV's dnn_superres quality benchmark computes it: the mean over the B, G
    and R channels of cv2.quality's SSIM (11x11 Gaussian window)."""
    return float(np.mean(cv2.quality.QualitySSIM_compute(test, truth)[0][:3]))


def cubic_kernel(x):
    """Keys' cubic convolution kernel (a = -0.5), as MATLAB's imresize uses it."""
    ax = np.abs(x)
    return ((1.5 * ax ** 3 - 2.5 * ax ** 2 + 1) * (ax <= 1) +
            (-0.5 * ax ** 3 + 2.5 * ax ** 2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def bicubic_taps(scale):
    """The 1-D filter of MATLAB's imresize(x, 1/scale, 'bicubic') (antialiased: the cubic
    kernel stretched by the scale) around one output sample, and the anchor that centres
    it on the sample's block of `scale` input pixels."""
    half = 2 * scale - (0.5 if scale % 2 == 0 else 1)
    offsets = np.arange(-half, half + 1)
    taps = cubic_kernel(offsets / scale)
    return (taps / taps.sum()).astype(np.float32), 2 * scale - 1


def downscale(image, scale):
    """image made `scale` times smaller the way the SR papers, ffmpeg's scaler and image
    editors do it: antialiased bicubic (MATLAB's imresize exactly, mirrored edges), rounded
    to 8 bits. The size must be a multiple of scale."""
    taps, anchor = bicubic_taps(scale)
    blurred = cv2.sepFilter2D(image.astype(np.float32), -1, taps, taps,
                              anchor=(anchor, anchor), borderType=cv2.BORDER_REFLECT)
    first = (scale - 1) // 2          # the output sample's block starts here
    small = blurred[first::scale, first::scale]
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def imresize_axis(image, axis, out_len, scale):
    """image resampled along one axis as MATLAB's imresize(..., 'bicubic') does it: the
    cubic kernel, stretched by 1/scale when shrinking (antialiasing), mirrored edges."""
    in_len = image.shape[axis]
    width = 4.0 / scale if scale < 1 else 4.0
    u = np.arange(1, out_len + 1, dtype=np.float64) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    indices = left[:, None] + np.arange(int(np.ceil(width)) + 2)[None, :]
    distance = u[:, None] - indices
    weights = scale * cubic_kernel(scale * distance) if scale < 1 else cubic_kernel(distance)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    taps = mirror[np.mod(indices - 1, 2 * in_len).astype(np.int64)]
    out = np.einsum("ot,ot...->o...", weights, np.moveaxis(image, axis, 0)[taps])
    return np.moveaxis(out, 0, axis)


def imresize(image, scale):
    """MATLAB's imresize(image, scale, 'bicubic') of an 8-bit image, rounded to 8 bits, at
    any scale (the size is ceil(side * scale)); downscale() is its fast path for whole
    factors. models/srdata.py makes the training data with it."""
    h, w = image.shape[:2]
    out = image.astype(np.float64)
    out = imresize_axis(out, 0, int(np.ceil(h * scale - 1e-9)), scale)
    out = imresize_axis(out, 1, int(np.ceil(w * scale - 1e-9)), scale)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def truth_and_low(frame, scale):
    """The high-resolution truth and its low-resolution copy, made small as real footage is
    (antialiased bicubic): for a whole scale the truth is cropped from the top-left to a
    multiple of it (downscale, exact and fast); for any other, the frame is the truth."""
    h, w = frame.shape[:2]
    if scale == int(scale):
        scale = int(scale)
        truth = frame[:h - h % scale, :w - w % scale]
        return truth, downscale(truth, scale)
    return frame, imresize(frame, 1 / scale)


def compare_inputs(paths):
    """(name, path, kind) for each input: "image", or "video"; a folder stands for the
    images and videos directly inside it, leaving out the pictures and grids an earlier
    --compare wrote there (comparing those would compare the comparison)."""
    found = []
    for raw in paths:
        p = Path(raw)
        members = sorted(c for c in p.iterdir() if c.is_file() and not c.name.startswith(".")
                         and not COMPARE_NAME_RE.search(c.stem)) if p.is_dir() else [p]
        for c in members:
            if is_picture(c):
                found.append((c, "image"))
            elif c.suffix.lower() in VIDEO_EXTENSIONS or not p.is_dir():
                found.append((c, "video"))
        if p.is_dir() and not found:
            raise UpscaleError(f"{p}: no images or videos inside")
    return found


def read_source(path, kind, max_frames, reader=None):
    """Frames of a picture (one, or an animation's) or a video (up to max_frames; 0 means
    all) as its frame reader reads them."""
    if kind == "image":
        picture = read_picture(path)
        frames = [picture.bgr] if picture.animation is None else picture.animation.frames
        # (measured in 8 bits, as the papers measure)
        yield from (np.ascontiguousarray(eight_bit(f[:, :, :3]))
                    for f in frames[:max_frames or None])
        return
    cap = reader.open()
    try:
        for i, (frame, _) in enumerate(read_frames(cap)):
            if max_frames and i >= max_frames:
                return
            yield frame
    finally:
        cap.release()


def label_tile(image, text):
    """A copy of image with text written in its top-left corner, legible on any picture."""
    tile = image.copy()
    scale = max(0.4, min(1.2, tile.shape[1] / 400))
    thickness = max(1, int(scale * 2))
    origin = (6, int(22 * scale) + 4)
    cv2.putText(tile, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 3,
                cv2.LINE_AA)
    cv2.putText(tile, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)
    return tile


def grid_layout(count, tile_w, tile_h, max_width=GRID_MAX_WIDTH, gap=4):
    """(columns, rows, tile width, tile height) of a grid of count tiles at most max_width
    wide; sizes even so the grid can be encoded."""
    cols = min(4, count)
    rows = -(-count // cols)
    shrink = min(1.0, (max_width - gap * (cols - 1)) / (cols * tile_w))
    w = max(2, int(tile_w * shrink) // 2 * 2)
    h = max(2, int(tile_h * shrink) // 2 * 2)
    return cols, rows, w, h


def grid_image(tiles, max_width=GRID_MAX_WIDTH, gap=4):
    """[(label, frame)] of one size, laid out in a labelled grid."""
    th, tw = tiles[0][1].shape[:2]
    cols, rows, w, h = grid_layout(len(tiles), tw, th, max_width, gap)
    grid = np.zeros((rows * h + gap * (rows - 1), cols * w + gap * (cols - 1), 3), np.uint8)
    for i, (label, frame) in enumerate(tiles):
        r, c = divmod(i, cols)
        small = frame if (w, h) == (tw, th) else \
            cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = \
            label_tile(small, label)
    return pad_to_even(grid)


def most_detailed_window(image, height, width):
    """(y, x) of the height x width window of image with the most fine detail (the largest
    mean absolute Laplacian): where methods differ, not a flat or blurred patch."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    detail = np.abs(cv2.Laplacian(gray.astype(np.float32), cv2.CV_32F))
    mean = cv2.boxFilter(detail, -1, (width, height), anchor=(0, 0), normalize=True,
                         borderType=cv2.BORDER_CONSTANT)
    valid = mean[:gray.shape[0] - height + 1, :gray.shape[1] - width + 1]
    y, x = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(y), int(x)


def detail_picture(tiles):
    """The grid of whole frames above a grid of the same crop enlarged, taken where the
    first tile (the truth, or the input) has the most detail, so the differences between
    methods can be seen."""
    th, tw = tiles[0][1].shape[:2]
    ch, cw = max(8, th // 4), max(8, tw // 4)
    y, x = most_detailed_window(tiles[0][1], ch, cw)
    crops = [(f"{label} (detail)",
              cv2.resize(frame[y:y + ch, x:x + cw], (tw, th), interpolation=cv2.INTER_NEAREST))
             for label, frame in tiles]
    whole, detail = grid_image(tiles), grid_image(crops)
    width = max(whole.shape[1], detail.shape[1])
    pad = [cv2.copyMakeBorder(g, 0, 0, 0, width - g.shape[1], cv2.BORDER_CONSTANT)
           for g in (whole, detail)]
    return np.vstack([pad[0], np.zeros((8, width, 3), np.uint8), pad[1]])


def has_libvmaf(ffmpeg):
    out, _ = ffmpeg_output(ffmpeg_args(ffmpeg, "-filters"), "listing its filters")
    return " libvmaf " in out.decode(errors="replace")


def vmaf_score(ffmpeg, test_video, truth_video):
    """Mean VMAF of test against truth (two lossless videos of the same frames)."""
    try:
        _, report = ffmpeg_output(ffmpeg_args(
            ffmpeg, "-i", Path(test_video), "-i", Path(truth_video), "-lavfi",
            "[0:v]format=yuv420p[d];[1:v]format=yuv420p[r];[d][r]libvmaf", "-f", "null", "-",
            level="info"), "measuring VMAF")
    except UpscaleError as exc:            # a measurement lost, not the comparison
        console.warn(f"VMAF not measured: {exc}")
        return None
    match = re.search(r"VMAF score: ([\d.]+)", report)
    return float(match.group(1)) if match else None


class LosslessWriter:
    """Frames kept on disk (FFV1 in Matroska, written by cv2.VideoWriter) instead of
    memory, so long clips compare in bounded memory."""

    def __init__(self, path, fourcc="FFV1", size=None):
        self.path, self.fourcc, self.writer, self.count = Path(path), fourcc, None, 0
        self.size = size          # (width, height) of the frames; VideoWriter needs even ones

    def write(self, frame):
        if self.writer is None:
            h, w = frame.shape[:2]
            self.size = (w, h)
            self.writer = opencv_opens(self.path, lambda name: cv2.VideoWriter(
                name, cv2.VideoWriter_fourcc(*self.fourcc), 25, even_size(w, h)))
            if not self.writer.isOpened():
                raise UpscaleError(f"cannot write {self.path}; check free space")
        self.writer.write(pad_to_even(frame))
        self.count += 1

    def close(self):
        if self.writer is not None:
            self.writer.release()

    def frames(self):
        """The frames back, at their own size (the padding to even cut off again)."""
        cap = opencv_opens(self.path, cv2.VideoCapture)
        try:
            for frame, _ in read_frames(cap):
                yield frame if self.size is None else frame[:self.size[1], :self.size[0]]
        finally:
            cap.release()


@dataclass
class MethodRun:
    """One method's results on one input, accumulated frame by frame."""
    method: Method
    upscaler: object = None
    status: str = "ok"
    reason: str = ""
    seconds: float = 0.0
    frames: int = 0
    psnr: list = field(default_factory=list)
    ssim: list = field(default_factory=list)
    lossless: LosslessWriter = None
    encoded: LosslessWriter = None
    scaled_frames: object = None     # a whole-file upscaler's frames, read back

    def row(self, name, scale, vmaf, encoded):
        frames = self.frames
        mean = (lambda xs: round(float(np.mean(xs)), 4) if xs else None)
        values = {"input": name, "method": self.method.name, "scale": scale, "frames": frames,
                  "psnr": mean(self.psnr), "ssim": mean(self.ssim), "vmaf": vmaf,
                  "ms_per_frame": round(1000 * self.seconds / frames, 3) if frames else None,
                  "psnr_encoded": encoded[0], "ssim_encoded": encoded[1],
                  "status": self.status, "reason": self.reason}
        return {key: values[key] for key in REPORT_KEYS}


def prepare_runs(names, scale, size, settings):
    """A MethodRun per method name, each making frames of size (width, height) as a run of
    the tool would: a network at its smallest scale that reaches `scale`, then brought to
    the size; a baseline straight to it. A method that cannot run is kept, marked skipped
    with its reason, never dropped silently."""
    runs = []
    for name in names:
        method = METHODS[name]
        run = MethodRun(method)
        reaching = [s for s in method.scales if s >= scale]
        if not reaching:
            run.status, run.reason = "skipped", f"no model up to x{scale:g} (scales " \
                f"{', '.join(map(str, method.scales))})"
        elif method.is_network:
            try:
                run.upscaler = FittedUpscaler(make_upscaler(
                    method, min(reaching), settings.model_dir, settings.tile,
                    settings.device), size)
            except UpscaleError as exc:
                run.status, run.reason = "skipped", str(exc)
        else:
            run.upscaler = method.kind(method, 0, size)
        runs.append(run)
    return runs


def whole_file_upscaled(upscaler, ffmpeg, low_video, out_path):
    """A whole-file upscaler (FfmpegScaler) run over the lossless video of low-resolution
    frames; returns (a LosslessWriter to read the result back, seconds taken)."""
    start = time.perf_counter()
    upscaler.scale_file(ffmpeg, low_video, out_path, ["-c:v", "ffv1", "-pix_fmt", "bgr0"],
                        "matroska")
    return LosslessWriter(out_path), time.perf_counter() - start


@dataclass(frozen=True)
class Comparison:
    """What --compare was asked, the same for every input."""
    settings: Settings
    names: tuple               # the methods, in the table's order
    ffmpeg: str
    reference: bool = True     # measure against the original (else only time and show)
    max_frames: int = 0
    vmaf: bool = False         # ffmpeg has libvmaf to measure with

    @property
    def scale(self):
        return self.settings.size.value


def compare_one(task, path, kind, tmp, grid_video, picture):
    """Compare every method on one input (a Comparison's); returns (its report rows, the
    frames compared). Works in the folder tmp; writes grid_video (if given) and picture."""
    label, scale, ffmpeg, reference = path.name, task.scale, task.ffmpeg, task.reference
    reader = None
    if kind == "video":
        check_source(path)
        info = probe(ffmpeg, path)
        if not info.video:
            raise UpscaleError(f"{path}: has no video stream; nothing to compare")
        reader = frame_reader(ffmpeg, path, info, keep_color=False)   # 8 bits, as measured
    # The low-resolution frames go to disk first: ffmpeg's scaler works on whole files,
    # and every other method reads them back frame by frame.
    low = LosslessWriter(tmp / "low.mkv")
    truth = LosslessWriter(tmp / "truth.mkv") if reference else None
    count = 0
    for frame in read_source(path, kind, task.max_frames, reader):
        if reference:
            high, small = truth_and_low(frame, scale)
            truth.write(high)
        else:
            small = frame
        low.write(small)
        count += 1
    low.close()
    if truth:
        truth.close()
    if count == 0 and kind == "video":
        raise no_frame_error(path)
    if count == 0:
        raise UpscaleError(f"{path}: no frame could be read")
    # What each method must make: the truth's size, or the input's times the scale.
    size = (high.shape[1], high.shape[0]) if reference else \
        (round(small.shape[1] * scale), round(small.shape[0] * scale))
    runs = prepare_runs(task.names, scale, size, task.settings)
    for run in runs:
        if run.status == "ok" and run.upscaler.whole_files:
            try:
                result, run.seconds = whole_file_upscaled(run.upscaler, ffmpeg, low.path,
                                                          tmp / f"{run.method.name}-whole.mkv")
                run.scaled_frames = result.frames()
            except UpscaleError as exc:
                run.status, run.reason = "skipped", str(exc)
    active = [r for r in runs if r.status == "ok"]
    for run in active:
        run.lossless = LosslessWriter(tmp / f"{run.method.name}.mkv")
        run.encoded = LosslessWriter(tmp / f"{run.method.name}.mp4", "mp4v")
    grid = LosslessWriter(tmp / "grid.mkv") if grid_video else None
    progress = Progress(f"{label}: comparing {len(active)} methods", count)
    truth_frames = truth.frames() if truth else None
    chosen, tiles = count // 2, None
    for i, small in enumerate(low.frames()):
        high = next(truth_frames) if truth_frames else None
        frame_tiles = [("truth", high)] if reference else \
            [("input (nearest)", cv2.resize(small, size, interpolation=cv2.INTER_NEAREST))]
        for run in active:
            if run.scaled_frames is not None:     # padded to even sides: crop
                big = next(run.scaled_frames)[:size[1], :size[0]]
            else:
                start = time.perf_counter()
                big = run.upscaler.upscale(small)
                run.seconds += time.perf_counter() - start
            if reference:
                run.psnr.append(psnr(high, big))
                run.ssim.append(ssim(high, big))
            run.frames += 1
            run.lossless.write(big)
            run.encoded.write(big)
            frame_tiles.append((run.method.name, big))
        if grid:
            grid.write(grid_image(frame_tiles))
        if i == chosen or tiles is None:
            tiles = frame_tiles
        progress.update(i + 1)
    progress.close()
    if grid:
        grid.close()
        # H.264 in MP4, which browsers and phones play (faststart: it plays as it loads)
        h264 = CODECS[DEFAULT_CODEC]
        run_ffmpeg(ffmpeg_args(ffmpeg, "-i", grid.path,
                               *h264.encoder_args(h264.crf, DEFAULT_PRESET),
                               "-movflags", "+faststart", "-f", "mp4", grid_video),
                   "encoding the comparison video")
    if picture:
        Path(picture).write_bytes(cv2.imencode(".png", detail_picture(tiles))[1].tobytes())
    rows = []
    for run in runs:
        vmaf, encoded = None, (None, None)
        if run.status == "ok" and reference:
            run.lossless.close()
            run.encoded.close()
            if task.vmaf:
                vmaf = vmaf_score(ffmpeg, run.lossless.path, truth.path)
            pairs = list(zip(truth.frames(), run.encoded.frames()))
            encoded = (round(float(np.mean([psnr(t, e) for t, e in pairs])), 4),
                       round(float(np.mean([ssim(t, e) for t, e in pairs])), 4))
        elif run.status == "ok":
            run.lossless.close()
            run.encoded.close()
        rows.append(run.row(str(path), int(scale) if scale == int(scale) else scale,
                            None if vmaf is None else round(vmaf, 3), encoded))
    return rows, count


def format_table(rows, out):
    """Methods as rows, measures as columns; the best value of each column marked *."""
    columns = MEASURES
    best = {}
    for key, _, pick in columns:
        values = [r[key] for r in rows if r[key] is not None]
        best[key] = pick(values) if values else None
    print(f"{'method':<14}" + "".join(f"{title:>12}" for _, title, _ in columns), file=out)
    for r in rows:
        cells = []
        for key, _, _ in columns:
            value = r[key]
            text = "-" if value is None else f"{value:.4f}" if key.startswith("ssim") \
                else f"{value:.2f}"
            cells.append(f"{text + ('*' if value is not None and value == best[key] else ' '):>12}")
        line = f"{r['method']:<14}" + "".join(cells)
        if r["status"] != "ok":
            line = f"{r['method']:<14}  skipped: {r['reason']}"
        print(line, file=out)


def compare_output_paths(path, settings, kind, several):
    """Grid video and picture paths for one input: -o (one input only), or
    <stem>_compare_x<scale>.mp4/.png beside the input or in --output-dir."""
    folder = Path(settings.output_dir) if settings.output_dir else path.parent
    stem = f"{path.stem}_compare_{settings.size.label}"
    if settings.output and not several:
        video = Path(settings.output)
        return (video if kind == "video" else None), video.with_suffix(".png")
    return (folder / f"{stem}.mp4" if kind == "video" else None), folder / f"{stem}.png"


def compare(paths, settings, names, reference=True, max_frames=0, report=None,
            out=sys.stdout):
    """--compare: every method on every input, as a table, a JSON report, a grid video and
    a picture. Returns the exit status."""
    ffmpeg = find_ffmpeg()
    inputs = compare_inputs(paths)
    task = Comparison(settings, tuple(names), ffmpeg, reference, max_frames,
                      reference and has_libvmaf(ffmpeg))
    if reference and not task.vmaf:
        console.warn(f"{ffmpeg} has no libvmaf filter, so VMAF is not measured (its column stays "
                     "empty); the ffmpeg of imageio-ffmpeg has it (unset UPSCALE_FFMPEG)")
    rows, failures = [], []
    for path, kind in inputs:
        video, picture = compare_output_paths(path, settings, kind, len(inputs) > 1)
        try:
            for target in (video, picture):
                if target and target.exists() and not settings.overwrite:
                    raise UpscaleError(f"{target} exists; use --overwrite to replace it")
                if target:
                    target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=temp_prefix(picture),
                                             dir=picture.parent) as tmp:
                tmp = Path(tmp)
                temp_video = tmp / "grid.mp4" if video else None
                temp_picture = tmp / "grid.png"
                found, count = compare_one(task, path, kind, tmp, temp_video, temp_picture)
                if video:
                    publish(temp_video, video, settings.overwrite)
                publish(temp_picture, picture, settings.overwrite)
            print(f"\n{path.name}: {settings.size.label}, {count} frame{'s' * (count != 1)}, "
                  + ("measured against the original" if reference else "no reference"),
                  file=out)
            format_table(found, out)
            console.say(f"grid: {video}" if video else f"picture: {picture}")
            rows += found
        except Exception as exc:
            console.error(describe(exc, path))
            failures.append(str(path))
    if len(inputs) > 1 and rows:
        print(f"\nmean over {len(inputs) - len(failures)} inputs:", file=out)
        format_table(mean_rows(rows), out)
    if report:
        Path(report).write_text(json.dumps(rows, indent=2) + "\n")
    return EXIT_FAILED if failures else EXIT_OK


def mean_rows(rows):
    """One row per method with the mean of each measure over the inputs it ran on."""
    merged = {}
    for row in rows:
        merged.setdefault(row["method"], []).append(row)
    means = []
    for method, group in merged.items():
        done = [r for r in group if r["status"] == "ok"]
        mean = dict(group[0], input="(mean)", frames=sum(r["frames"] for r in done))
        for key, _, _ in MEASURES:
            values = [r[key] for r in done if r[key] is not None]
            mean[key] = round(float(np.mean(values)), 4) if values else None
        if done:
            mean.update(status="ok", reason="")
        means.append(mean)
    return means


# ---------------------------------------------------------------------------------------------
# Appendix: faster graphs, self-contained. The official luma graphs are rewritten into the
#   same function: FSRCNN's graphs spell PReLU as relu(x) + alpha * (x - |x|) * 0.5 and add
#   each bias with a plain Add: OpenCV runs those as seven passes over a 56-channel feature map
#   where one fused activation does (LapSRN's leaky ReLU likewise). FSRCNN and ESPCN end in
#   DepthToSpace, a slow custom layer at the output size; done on the 8-bit result instead
#   it costs a tenth. Same weights, same arithmetic: the rewritten graph's output is checked
#   against the original's before it is used.
# ---------------------------------------------------------------------------------------------

def protobuf_fields(data):
    """[(field number, wire type, value)] of one protobuf message: ints for varints, raw
    bytes for everything else. Enough to edit a TensorFlow GraphDef without TensorFlow."""
    fields, pos = [], 0

    def varint():
        nonlocal pos
        value = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while pos < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 2:
            size = varint()
            value, pos = data[pos:pos + size], pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos:pos + size], pos + size
        else:
            raise ValueError(f"protobuf wire type {wire} is not supported")
        fields.append((number, wire, value))
    return fields


def protobuf_varint(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def protobuf_message(fields):
    out = bytearray()
    for number, wire, value in fields:
        out += protobuf_varint(number << 3 | wire)
        if wire == 0:
            out += protobuf_varint(value)
        elif wire == 2:
            out += protobuf_varint(len(value)) + value
        else:
            out += value
    return bytes(out)


# Field numbers in TensorFlow's graph.proto, node_def.proto, attr_value.proto, tensor.proto.
GRAPH_NODE = 1
NODE_NAME, NODE_OP, NODE_INPUT, NODE_ATTR = 1, 2, 3, 5
ATTR_INT, ATTR_FLOAT, ATTR_TYPE, ATTR_TENSOR = 3, 4, 6, 8
TENSOR_DTYPE, TENSOR_SHAPE, TENSOR_CONTENT, TENSOR_FLOATS = 1, 2, 4, 5
SHAPE_DIM, DIM_SIZE = 2, 1
DT_FLOAT = 1


@dataclass
class GraphNode:
    name: str
    op: str
    inputs: list
    attrs: list                # (1, 2, map entry bytes) fields, kept as they are

    def message(self):
        return protobuf_message([(NODE_NAME, 2, self.name.encode()),
                                 (NODE_OP, 2, self.op.encode())]
                                + [(NODE_INPUT, 2, i.encode()) for i in self.inputs]
                                + [(NODE_ATTR, 2, a) for a in self.attrs])


def graph_nodes(graph):
    """The nodes of a GraphDef, in order; None if one holds more than a name, op, inputs
    and attributes."""
    nodes = []
    for number, _, value in protobuf_fields(graph):
        if number != GRAPH_NODE:
            continue
        fields = protobuf_fields(value)
        if any(f not in (NODE_NAME, NODE_OP, NODE_INPUT, NODE_ATTR) for f, _, _ in fields):
            return None          # a device placement or debug info: not ours to rewrite
        values = {k: [v for f, _, v in fields if f == k]
                  for k in (NODE_NAME, NODE_OP, NODE_INPUT, NODE_ATTR)}
        nodes.append(GraphNode(values[NODE_NAME][0].decode(), values[NODE_OP][0].decode(),
                               [i.decode() for i in values[NODE_INPUT]], values[NODE_ATTR]))
    return nodes


def node_attr(node, key):
    """The fields of a node's attribute `key` (an AttrValue message), or []."""
    for entry in node.attrs:
        name, value = (v for _, _, v in protobuf_fields(entry))
        if name == key.encode():
            return protobuf_fields(value)
    return []


def const_floats(node):
    """The float tensor of a Const node, in its shape; None for anything else."""
    if node is None or node.op != "Const":
        return None
    for number, _, tensor in node_attr(node, "value"):
        if number != ATTR_TENSOR:
            continue
        parts = protobuf_fields(tensor)
        if (TENSOR_DTYPE, 0, DT_FLOAT) not in parts:
            return None
        shape = [protobuf_fields(d)[0][2] if d else 1 for f, _, s in parts
                 if f == TENSOR_SHAPE for n, _, d in protobuf_fields(s) if n == SHAPE_DIM]
        raw = b"".join(v for f, _, v in parts if f in (TENSOR_CONTENT, TENSOR_FLOATS))
        values = np.frombuffer(raw, "<f4")
        if values.size == 1:             # one value stands for the whole tensor
            return np.full(shape, values[0], np.float32)
        return values.reshape(shape) if values.size == math.prod(shape) else None
    return None


def is_scalar(values, wanted=None):
    """Whether a Const's values are one number (equal to wanted, if given)."""
    return values is not None and values.size == 1 and wanted in (None, float(values.flat[0]))


def float_const(name, values):
    """A Const node holding a 1-D float32 tensor."""
    values = np.asarray(values, "<f4")
    shape = protobuf_message([(SHAPE_DIM, 2, protobuf_message([(DIM_SIZE, 0, values.size)]))])
    tensor = protobuf_message([(TENSOR_DTYPE, 0, DT_FLOAT), (TENSOR_SHAPE, 2, shape),
                               (TENSOR_CONTENT, 2, values.tobytes())])
    attrs = [protobuf_message([(1, 2, b"dtype"), (2, 2, protobuf_message(
                 [(ATTR_TYPE, 0, DT_FLOAT)]))]),
             protobuf_message([(1, 2, b"value"), (2, 2, protobuf_message(
                 [(ATTR_TENSOR, 2, tensor)]))])]
    return GraphNode(name, "Const", [], attrs)


def fuse_prelu(nodes):
    """Each relu(x) + alpha * (x - |x|) * 0.5 becomes one PReLU(x, alpha) node."""
    by_name = {n.name: n for n in nodes}

    def pick(names, op):       # (the input that is an `op` node, the other one)
        a, b = (by_name.get(n) for n in names)
        return (a, b) if a and a.op == op else (b, a)

    dropped, fused = set(), {}
    for node in nodes:
        if node.op not in ("Add", "AddV2") or len(node.inputs) != 2:
            continue
        relu, half = pick(node.inputs, "Relu")
        if not relu or relu.op != "Relu" or not half or half.op != "Mul":
            continue
        scaled, y = pick(half.inputs, "Mul")
        if not scaled or scaled.op != "Mul" or not is_scalar(const_floats(y), 0.5):
            continue
        alpha, sub = pick(scaled.inputs, "Const")
        x = relu.inputs[0]
        absolute = by_name.get(sub.inputs[1]) if sub and len(sub.inputs) == 2 else None
        if not alpha or alpha.op != "Const" or sub.op != "Sub" or sub.inputs[0] != x or \
                not absolute or absolute.op != "Abs" or absolute.inputs != [x]:
            continue
        dropped |= {relu.name, half.name, scaled.name, sub.name, absolute.name}
        fused[node.name] = GraphNode(node.name, "PReLU", [x, alpha.name], [])
    return [fused.get(n.name, n) for n in nodes if n.name not in dropped]


def fuse_leaky_relu(nodes):
    """Each relu(x) - c1 * relu(c2 * x) with c2 < 0 (LapSRN's leaky ReLU) becomes one
    LeakyRelu(x) node of slope -c1 * c2."""
    by_name = {n.name: n for n in nodes}

    def scalar_times(node, op=None):
        """(c, other node) when node is Mul(c, other) with c a one-value Const."""
        if getattr(node, "op", "") != "Mul" or len(node.inputs) != 2:
            return None, None
        for const, other in (node.inputs, node.inputs[::-1]):
            value = const_floats(by_name.get(const))
            if is_scalar(value) and other in by_name and op in (None, by_name[other].op):
                return float(value.flat[0]), by_name[other]
        return None, None

    dropped, fused = set(), {}
    for node in nodes:
        positive, scaled = (by_name.get(n) for n in node.inputs) if len(node.inputs) == 2 \
            else (None, None)
        if node.op != "Sub" or getattr(positive, "op", "") != "Relu":
            continue
        x = positive.inputs[0]
        c1, negative = scalar_times(scaled, "Relu")
        c2, flipped_x = scalar_times(by_name.get(negative.inputs[0]) if negative else None)
        if c1 is None or c2 is None or c2 >= 0 or flipped_x.name != x:
            continue
        slope = protobuf_message([(1, 2, b"alpha"), (2, 2, protobuf_message(
            [(ATTR_FLOAT, 5, struct.pack("<f", -c1 * c2))]))])
        dropped |= {positive.name, scaled.name, negative.name, negative.inputs[0]}
        fused[node.name] = GraphNode(node.name, "LeakyRelu", [x], [slope])
    return [fused.get(n.name, n) for n in nodes if n.name not in dropped]


def fuse_bias(nodes):
    """Add(Conv2D, one value per output channel) becomes BiasAdd, which OpenCV folds into
    the convolution."""
    by_name = {n.name: n for n in nodes}
    for node in nodes:
        conv = by_name.get(node.inputs[0]) if len(node.inputs) == 2 else None
        if node.op not in ("Add", "AddV2") or not conv or conv.op != "Conv2D":
            continue
        bias = const_floats(by_name.get(node.inputs[1]))
        weights = const_floats(by_name.get(conv.inputs[1]))
        if bias is not None and weights is not None and weights.ndim == 4 and \
                bias.shape == weights.shape[3:]:           # filters are HWIO
            node.op = "BiasAdd"
    return nodes


@dataclass(frozen=True)
class FastGraph:
    """A rewritten graph and what its caller still has to do to its output."""
    graph: bytes = None        # None: no rewrite, use the original file
    block: int = 1             # > 1: output is block**2 planes for depth_to_space()
    tanh: bool = False         # output still needs tanh (OpenCV fuses it slowly into a conv)
    onnx: bool = False         # graph is that network as an ONNX model (onnx_model)


def cut_depth_to_space(nodes):
    """(nodes, block, tanh): the graph ending before its final DepthToSpace. A one-value
    bias that followed it moves in front of it (tiled to every plane); a final tanh is left
    to the caller, who also rearranges the planes. (nodes, 1, False) when the graph does not
    end that way."""
    by_name = {n.name: n for n in nodes}
    consumers = {}
    for n in nodes:
        for i in n.inputs:
            consumers.setdefault(i, []).append(n)
    shuffles = [n for n in nodes if n.op == "DepthToSpace"]
    unchanged = nodes, 1, False
    if len(shuffles) != 1:
        return unchanged
    shuffle = shuffles[0]
    block = next((v for f, _, v in node_attr(shuffle, "block_size") if f == ATTR_INT), None)
    tail, last = [], shuffle
    while len(consumers.get(last.name, [])) == 1 and \
            consumers[last.name][0].op in ("BiasAdd", "Tanh"):
        last = consumers[last.name][0]
        tail.append(last)
    ends = consumers.get(last.name, [])
    if not isinstance(block, int) or len(ends) != 1 or ends[0].op != "Transpose" or \
            consumers.get(ends[0].name):
        return unchanged
    tanh = bool(tail) and tail[-1].op == "Tanh"
    biases = tail[:-1] if tanh else tail
    values = [const_floats(by_name.get(b.inputs[-1])) for b in biases]
    if any(b.op != "BiasAdd" or v is None or v.size != 1 for b, v in zip(biases, values)):
        return unchanged
    replaced, previous = {}, shuffle.inputs[0]
    for node, bias in zip(biases, values):
        replaced[node.inputs[1]] = float_const(node.inputs[1], np.repeat(bias, block ** 2))
        replaced[node.name] = GraphNode(node.name, node.op, [previous, node.inputs[1]],
                                        node.attrs)
        previous = node.name
    dropped = {shuffle.name, ends[0].name} | ({tail[-1].name} if tanh else set())
    return [replaced.get(n.name, n) for n in nodes if n.name not in dropped], block, tanh


def fast_graph(graph):
    """A FastGraph computing what the GraphDef bytes `graph` compute, in fewer passes."""
    nodes = graph_nodes(graph)
    if not nodes:
        return FastGraph()
    nodes, block, tanh = cut_depth_to_space(fuse_bias(fuse_leaky_relu(fuse_prelu(nodes))))
    others = [f for f in protobuf_fields(graph) if f[0] != GRAPH_NODE]    # versions, library
    return FastGraph(protobuf_message([(GRAPH_NODE, 2, n.message()) for n in nodes] + others),
                     block, tanh)


def fast_planes(fast, out):
    """The (planes, h, w) values of a FastGraph network's output for one image."""
    return np.tanh(out[0]) if fast.tanh else out[0]


def fast_picture(fast, planes):
    """The (h, w) picture those planes make."""
    return depth_to_space(planes, fast.block) if fast.block > 1 else planes[0]


@functools.lru_cache(maxsize=None)
def checked_fast_graph(model_path, engine="classic", onnx=None):
    """The FastGraph of a model file when, on this OpenCV and engine, it computes what the
    original does (checked on a test image); FastGraph() when not: use the original.
    With onnx (the default on an OpenCV that reads no TensorFlow graphs, 5.1), the
    rewritten graph as an ONNX model, unchecked here (the tests check the translation on
    an OpenCV that reads both); FastGraph() when it has none: the file cannot run there.
    On 5.0 whole runs took 1.2-1.7x as long with it as with the TensorFlow graph (sample
    x4), so it is used only where it must be."""
    graph = Path(model_path).read_bytes()
    try:
        fast = fast_graph(graph)
    except (ValueError, IndexError):          # not a protobuf this parser understands
        return FastGraph()
    if onnx or (onnx is None and not reads_tensorflow()):
        model = fast.graph and onnx_model(fast.graph)
        return dataclasses.replace(fast, graph=model, onnx=True) if model else FastGraph()
    if fast.graph is None:
        return fast
    probe = np.random.default_rng(0).random((1, 1, 37, 53), np.float32)
    outputs = []
    register_superres_layers()
    try:
        for net in (read_network(graph), read_network(fast.graph, engine)):
            net.setInput(probe)
            outputs.append(net.forward())
    except cv2.error:
        return FastGraph()
    original, rewritten = outputs[0], fast_picture(fast, fast_planes(fast, outputs[1]))
    if original.shape[:2] != (1, 1) or original.shape[2:] != rewritten.shape or \
            np.abs(original[0, 0] - rewritten).max() > 1e-5:
        return FastGraph()
    return fast


def depth_to_space(planes, block):
    """The (block*h, block*w) image whose block x block cells are planes' block**2 values,
    in TensorFlow's DepthToSpace order (row of the cell major)."""
    count, h, w = planes.shape
    out = np.empty((h, block, w * block), planes.dtype)
    for dy in range(block):
        out[:, dy, :] = cv2.merge(list(planes[dy * block:(dy + 1) * block])).reshape(h, -1)
    return out.reshape(h * block, w * block)


# The rewritten luma graphs as ONNX models, for OpenCV 5.1 and later, which read ONNX but
#   no longer TensorFlow's files. What fast_graph leaves of FSRCNN, ESPCN and our networks
#   is convolutions, biases, PReLU, ReLU and additions: each becomes its ONNX operator, the
#   weights turned from TensorFlow's HWIO to ONNX's OIHW, each bias joined to its
#   convolution. Tensors are NCHW, as OpenCV's blobs are. LapSRN's and EDSR's graphs hold
#   more than that and are not translated.

# Field numbers in TensorFlow's attr_value.proto (AttrValue.s and .list, ListValue.i).
ATTR_STRING, ATTR_LIST, LIST_INTS = 2, 1, 3
# Field numbers in onnx.proto: ModelProto, OperatorSetIdProto, GraphProto, NodeProto,
# AttributeProto, TensorProto, ValueInfoProto, TypeProto, TypeProto.Tensor, TensorShapeProto.
ONNX_MODEL_IR_VERSION, ONNX_MODEL_GRAPH, ONNX_MODEL_OPSET, ONNX_OPSET_VERSION = 1, 7, 8, 2
ONNX_GRAPH_NODE, ONNX_GRAPH_NAME, ONNX_GRAPH_INITIALIZER = 1, 2, 5
ONNX_GRAPH_INPUT, ONNX_GRAPH_OUTPUT = 11, 12
ONNX_NODE_INPUTS, ONNX_NODE_OUTPUTS, ONNX_NODE_NAME, ONNX_NODE_TYPE = 1, 2, 3, 4
ONNX_NODE_ATTRIBUTES = 5
ONNX_ATTRIBUTE_NAME, ONNX_ATTRIBUTE_INT, ONNX_ATTRIBUTE_INTS, ONNX_ATTRIBUTE_TYPE = 1, 3, 8, 20
ONNX_ATTRIBUTE_IS_INT, ONNX_ATTRIBUTE_IS_INTS = 2, 7
ONNX_TENSOR_DIMS, ONNX_TENSOR_TYPE, ONNX_TENSOR_NAME, ONNX_TENSOR_RAW = 1, 2, 8, 9
ONNX_VALUE_NAME, ONNX_VALUE_TYPE, ONNX_TYPE_TENSOR = 1, 2, 1
ONNX_TENSOR_ELEMENTS, ONNX_TENSOR_SHAPE_OF = 1, 2
ONNX_SHAPE_DIM_OF, ONNX_DIM_VALUE, ONNX_DIM_PARAM = 1, 1, 2
ONNX_FLOAT = 1
ONNX_IR, ONNX_OPSET = 7, 13      # ONNX 1.8's, which has every operator used here


def packed_varints(data):
    """The integers of a packed repeated varint field."""
    values, value, shift = [], 0, 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            values.append(value)
            value = shift = 0
    return values


def attr_ints(node, key):
    """The integers of a node's list attribute `key` ([] when it has none)."""
    values = []
    for number, _, listed in node_attr(node, key):
        for field_number, wire, item in protobuf_fields(listed) if number == ATTR_LIST else ():
            if field_number == LIST_INTS:
                values += packed_varints(item) if wire == 2 else [item]
    return values


def attr_string(node, key, default=""):
    """A node's string attribute `key`, or default."""
    return next((v.decode() for f, _, v in node_attr(node, key) if f == ATTR_STRING), default)


def onnx_tensor(name, values):
    values = np.ascontiguousarray(values, "<f4")
    return protobuf_message([(ONNX_TENSOR_DIMS, 0, d) for d in values.shape]
                            + [(ONNX_TENSOR_TYPE, 0, ONNX_FLOAT),
                               (ONNX_TENSOR_NAME, 2, name.encode()),
                               (ONNX_TENSOR_RAW, 2, values.tobytes())])


def onnx_node(op, inputs, output, **ints):
    """A NodeProto; each keyword an integer or list-of-integers attribute."""
    def attribute(key, value):
        if isinstance(value, list):
            typed = [(ONNX_ATTRIBUTE_INTS, 0, v) for v in value] + \
                [(ONNX_ATTRIBUTE_TYPE, 0, ONNX_ATTRIBUTE_IS_INTS)]
        else:
            typed = [(ONNX_ATTRIBUTE_INT, 0, value),
                     (ONNX_ATTRIBUTE_TYPE, 0, ONNX_ATTRIBUTE_IS_INT)]
        return protobuf_message([(ONNX_ATTRIBUTE_NAME, 2, key.encode())] + typed)

    return protobuf_message(
        [(ONNX_NODE_INPUTS, 2, i.encode()) for i in inputs]
        + [(ONNX_NODE_OUTPUTS, 2, output.encode()), (ONNX_NODE_NAME, 2, output.encode()),
           (ONNX_NODE_TYPE, 2, op.encode())]
        + [(ONNX_NODE_ATTRIBUTES, 2, attribute(k, v)) for k, v in ints.items()])


def onnx_value(name, channels=None):
    """A ValueInfoProto: a float NCHW tensor of any size, of `channels` channels if given
    (OpenCV 4's importer needs the input's to size the first convolution)."""
    dims = [protobuf_message([(ONNX_DIM_VALUE, 0, channels)] if d == b"c" and channels else
                             [(ONNX_DIM_PARAM, 2, d)]) for d in (b"n", b"c", b"h", b"w")]
    shape = protobuf_message([(ONNX_SHAPE_DIM_OF, 2, d) for d in dims])
    tensor = protobuf_message([(ONNX_TENSOR_ELEMENTS, 0, ONNX_FLOAT),
                               (ONNX_TENSOR_SHAPE_OF, 2, shape)])
    kind = protobuf_message([(ONNX_TYPE_TENSOR, 2, tensor)])
    return protobuf_message([(ONNX_VALUE_NAME, 2, name.encode()), (ONNX_VALUE_TYPE, 2, kind)])


def onnx_convolution(node, weights, bias, output):
    """(ONNX nodes, initializers) of a stride-1 NHWC Conv2D, or None."""
    if weights is None or weights.ndim != 4 or \
            attr_string(node, "data_format", "NHWC") != "NHWC" or \
            any(v != 1 for v in attr_ints(node, "strides") + attr_ints(node, "dilations")):
        return None
    kh, kw = weights.shape[:2]
    padding = attr_string(node, "padding")
    if padding == "SAME":            # TensorFlow puts the odd pixel after
        pads = [(kh - 1) // 2, (kw - 1) // 2, kh // 2, kw // 2]
    elif padding == "VALID":
        pads = [0, 0, 0, 0]
    else:
        return None
    tensors = [onnx_tensor(output + "/weights", weights.transpose(3, 2, 0, 1))]
    if bias is not None:
        tensors.append(onnx_tensor(output + "/bias", bias.reshape(-1)))
    inputs = [node.inputs[0]] + [output + "/weights"] + \
        ([output + "/bias"] if bias is not None else [])
    return [onnx_node("Conv", inputs, output, kernel_shape=[kh, kw], pads=pads)], tensors


def onnx_model(graph, whole=None):
    """The ONNX model (bytes) that computes what a rewritten luma GraphDef computes, from
    a (1, 1, H, W) luma blob; None when the graph holds anything else. With whole (the
    graph's FastGraph), the model also does what FastGraph leaves to its caller (tanh,
    DepthToSpace) and outputs the picture, as the original graph does (the tests compare
    it with the training framework's own output)."""
    nodes = graph_nodes(graph) or []
    by_name = {n.name: n for n in nodes}
    uses = collections.Counter(i for n in nodes for i in n.inputs)
    inputs = [n for n in nodes if n.op == "Placeholder"]
    outputs = [n for n in nodes if n.op != "Const" and not uses[n.name]]
    if len(inputs) != 1 or len(outputs) != 1:
        return None

    def per_channel(name):                       # a 1-D Const as a (C, 1, 1) tensor
        values = const_floats(by_name.get(name))
        return None if values is None or values.ndim > 1 else values.reshape(-1, 1, 1)

    # A BiasAdd that alone uses a convolution's output becomes that convolution's bias.
    joined = {n.inputs[0]: n for n in nodes if n.op == "BiasAdd" and uses[n.inputs[0]] == 1
              and getattr(by_name.get(n.inputs[0]), "op", "") == "Conv2D"}
    made, tensors = [], []
    for node in nodes:
        if node.op in ("Placeholder", "Const") or node in joined.values():
            continue
        constants = [per_channel(i) for i in node.inputs[1:]]
        if node.op == "Conv2D":
            bias = joined.get(node.name)
            translated = onnx_convolution(
                node, const_floats(by_name.get(node.inputs[1])),
                bias and per_channel(bias.inputs[1]), bias.name if bias else node.name)
        elif node.op in ("BiasAdd", "PReLU") and constants[0] is not None:
            name = node.name + "/" + node.op
            translated = ([onnx_node("Add" if node.op == "BiasAdd" else "PRelu",
                                     [node.inputs[0], name], node.name)],
                          [onnx_tensor(name, constants[0])])
        elif node.op in ("Add", "AddV2") and len(node.inputs) == 2 and \
                not any(getattr(by_name.get(i), "op", "") == "Const" for i in node.inputs):
            translated = [onnx_node("Add", node.inputs, node.name)], []
        elif node.op == "Relu":
            translated = [onnx_node("Relu", node.inputs[:1], node.name)], []
        else:
            translated = None
        if translated is None:
            return None
        made += translated[0]
        tensors += translated[1]
    output = outputs[0].name
    if whole and whole.tanh:
        made.append(onnx_node("Tanh", [output], output + "/tanh"))
        output += "/tanh"
    if whole and whole.block > 1:       # ONNX's default order (DCR) is TensorFlow's
        made.append(onnx_node("DepthToSpace", [output], output + "/picture",
                              blocksize=whole.block))
        output += "/picture"
    onnx_graph = protobuf_message(
        [(ONNX_GRAPH_NODE, 2, n) for n in made] + [(ONNX_GRAPH_NAME, 2, b"upscale")]
        + [(ONNX_GRAPH_INITIALIZER, 2, t) for t in tensors]
        + [(ONNX_GRAPH_INPUT, 2, onnx_value(inputs[0].name, channels=1)),
           (ONNX_GRAPH_OUTPUT, 2, onnx_value(output))])
    opset = protobuf_message([(ONNX_OPSET_VERSION, 0, ONNX_OPSET)])
    return protobuf_message([(ONNX_MODEL_IR_VERSION, 0, ONNX_IR),
                             (ONNX_MODEL_GRAPH, 2, onnx_graph), (ONNX_MODEL_OPSET, 2, opset)])


# ---------------------------------------------------------------------------------------------
# Command line: the parser, its checks into Settings, and main()
# ---------------------------------------------------------------------------------------------

EXAMPLES = """\
examples:
  python upscale.py clip.mp4                          our fast network, as big as fits 4K
                                                      (x4 for 640x360) -> clip_fast_x4.mp4
  python upscale.py clip720.mp4 --height 1080         make it 1080p -> clip720_fast_1080p.mp4
  python upscale.py clip.mp4 --scale 1.5              any scale from 1 to 8
  python upscale.py clip.mp4 --model fsrcnn --scale 2 FSRCNN x2 -> clip_fsrcnn_x2.mp4
  python upscale.py clip.mp4 --model hq --scale 2     sharper still, about 3x the time
  python upscale.py clip.mov -o big.mkv --codec h265  choose the output name and codec
  python upscale.py clip.mp4 --codec av1              smaller files (-o clip.webm: VP9 WebM)
  python upscale.py dvd.mkv --deinterlace film        a telecined NTSC DVD's film frames
  python upscale.py tape.dv --deinterlace field       50i as 50p, as smooth as the original
  python upscale.py IMG_0001.HEIC                     a phone photo (any picture too)
                                                      -> IMG_0001_fast_x2.jpg
  python upscale.py clips/ --output-dir big/          every video and picture directly
                                                      inside clips/
  for f in clips/*.mp4; do python upscale.py "$f" --quiet; done
  python upscale.py film.mkv                          stopped by anything? the same command
                                                      goes on from the last finished segment
  parallel -S :,host2 --wd "$PWD" python3 upscale.py film.mkv --part {{}}/8 ::: 1 2 3 4 5 6 7 8
  python upscale.py film.mkv                          ...then joins the parts

models (scales): {models}
our own weights (fast, hq, fsrcnn) ship in {default_dir}; the official files are searched
in --model-dir, $UPSCALE_MODEL_DIR, then {default_dir}, and downloaded there on first use if
missing.
ffmpeg: $UPSCALE_FFMPEG if set, else the one pip's imageio-ffmpeg brings (the build this
tool is tested with), else the first on PATH.
exit status: 0 all done (or already done), 1 some input failed, 2 usage error,
130/143/129 interrupted (Ctrl-C, SIGTERM, SIGHUP).
"""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        console.error(f"{message} (see --help)")
        sys.exit(EXIT_USAGE)


def scale_arg(text):
    """--scale: a SizeRequest for a number from 1 to 8 (2, 1.5), or a height ("1080p")."""
    height = re.fullmatch(r"\s*(\d+)\s*[pP]\s*", text)
    if height:
        return side_arg("height")(height[1])
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (1.0 <= value <= MAX_SCALE and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"scale must be a number from 1 to {MAX_SCALE:g} "
                                         f"(2, 1.5) or a height like 1080p, not {text!r}")
    return SizeRequest("scale", value)


def side_arg(kind):
    """--height / --width: a SizeRequest for that many pixels."""
    pixels = whole_number(kind, MIN_SIDE, MAX_SIDE)

    def parse(text):
        return SizeRequest(kind, pixels(text))
    parse.__name__ = kind
    return parse


def tile_arg(text):
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"tile must be auto, 0 or a size in pixels like "
                                         f"256, not {text!r}") from None
    if value < 0 or 0 < value < 16:
        raise argparse.ArgumentTypeError(f"tile must be 0 (never) or at least 16, not {value}")
    return value


class Part(tuple):
    """--part K/N as (K, N); written back as K/N (for the child processes of --jobs)."""

    def __str__(self):
        return f"{self[0]}/{self[1]}"


def part_arg(text):
    """--part K/N: a Part with 1 <= K <= N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N with 1 <= K <= N (3/8 is the "
                                         "third of eight parts)")
    return Part((int(match[1]), int(match[2])))


def segment_arg(text):
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0.5 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0.5 to "
                                         "3600")
    return seconds


def whole_number(name, low=1, high=None, hint=""):
    """An argparse type: a whole number from low (up to high), its error naming the option
    and saying what to do (hint)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low or high is not None and value > high:
            span = f"from {low} to {high}" if high is not None else f"of {low} or more"
            raise argparse.ArgumentTypeError(f"{name} must be a whole number {span}, not "
                                             f"{text!r}{hint}")
        return value
    parse.__name__ = name              # (argparse names the type in its messages)
    return parse


frames_arg = whole_number("frames", hint="; leave --frames out to do every frame")
jobs_arg = whole_number("jobs")


def build_parser():
    models = ", ".join(f"{m.name} ({'/'.join(map(str, m.scales))})"
                       for m in METHODS.values() if m.is_network)
    parser = Parser(
        prog="upscale.py",
        description="Make videos and pictures sharper and bigger with super-resolution "
                    "networks (our own, or OpenCV's), keeping a video's sound, subtitles and "
                    "frame times.",
        epilog=EXAMPLES.format(models=models, default_dir=DEFAULT_MODEL_DIR),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="videos or pictures, or folders whose videos and pictures are "
                             "all upscaled")
    parser.add_argument("-m", "--model", default=DEFAULT_METHOD, choices=list(METHODS),
                        metavar="NAME", help="super-resolution model or baseline: "
                        + ", ".join(METHODS) + f" (default: {DEFAULT_METHOD})")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("-s", "--scale", type=scale_arg, default=None, dest="size",
                      help="enlargement: any number from 1 to 8 (2, 1.5), or a height like "
                           "1080p; a network runs at the smallest of its scales that reaches "
                           "it, then the picture is brought to the exact size (default: the "
                           "largest of the model's scales up to 4 that stays within 4K)")
    size.add_argument("--height", type=side_arg("height"), dest="size", metavar="H",
                      help="output height in pixels; the width follows the picture's shape "
                           "as players show it")
    size.add_argument("--width", type=side_arg("width"), dest="size", metavar="W",
                      help="output width in pixels; the height follows")
    parser.add_argument("-o", "--output", metavar="PATH",
                        help="output file (one input only); .mkv gives Matroska; .png, .jpg, "
                             ".webp or .avif for a picture")
    parser.add_argument("--output-dir", type=Path, metavar="DIR",
                        help="folder for outputs (created if missing); default: beside "
                             "each input")
    parser.add_argument("--format", choices=list(CONTAINERS), default="",
                        help="output container (default: from -o's extension, else the "
                             "codec's: mp4, webm for vp9, mkv for ffv1)")
    parser.add_argument("--codec", choices=list(CODECS), default=None,
                        help="video codec of the output: " + "; ".join(
                            f"{c.name}: {c.about}" for c in CODECS.values())
                        + f" (default: {DEFAULT_CODEC}; vp9 for a .webm output)")
    tuned = [c for c in CODECS.values() if c.tuned]
    parser.add_argument("--crf", type=int, default=None,
                        help="quality for " + "/".join(c.name for c in tuned) + ", on the "
                             "encoder's own scale, lower is better (default: " + ", ".join(
                                 f"{c.crf} for {c.name}" for c in tuned) + ")")
    parser.add_argument("--preset", default=None, choices=X264_PRESETS, metavar="PRESET",
                        help="encoding speed, x264's names for every codec above: "
                             + ", ".join(X264_PRESETS) + f" (default: {DEFAULT_PRESET})")
    parser.add_argument("--deinterlace", choices=[k for k, d in DEINTERLACING.items()
                                                  if d.asked], default="frame",
                        help="interlaced video (DV, DVD, broadcast, 1080i camcorders): "
                             "'frame' makes a frame of each frame (50i becomes 25p, the "
                             "default), 'field' one of each field (50i becomes 50p: motion "
                             "as smooth as the original's, twice the frames to upscale), "
                             "'film' the frames of a film telecined to 29.97i (NTSC DVDs and "
                             "broadcasts of films, cartoons, series shot on film): 23.976p, "
                             "without the judder of repeated fields")
    parser.add_argument("--sdr", action="store_true",
                        help="make HDR and wide-gamut video BT.709 SDR, 8-bit, as OpenCV's "
                             "decoder maps it, for screens and players without HDR (default: "
                             "kept as it is, an HDR source of 10 bits as 10-bit H.265 unless "
                             "--codec names another)")
    parser.add_argument("--tile", type=tile_arg, default=None, metavar="SIZE",
                        help="run the network on tiles of SIZE input pixels (overlapping, "
                             "seamless) to bound memory; 0 never tiles (default: auto: "
                             "FSRCNN/ESPCN frames over 256x256 in 128-pixel tiles, about "
                             "twice as fast on the CPU; other frames only when too big for "
                             "about 768 MB of network memory)")
    parser.add_argument("--device", choices=("cpu", "opencl", "cuda", "auto"), default="cpu",
                        help="where the network runs: an unavailable device is an error, "
                             "auto takes the best available and falls back to the CPU "
                             "(default: cpu)")
    parser.add_argument("-j", "--jobs", type=jobs_arg, default=1, metavar="N",
                        help="upscale N inputs at once, each with a fair share of the CPU "
                             "threads (default: 1)")
    parser.add_argument("--part", type=part_arg, metavar="K/N",
                        help="do only the K-th of N equal shares of each video's segments and "
                             "stop; run the N parts anywhere that sees the same folder (GNU "
                             "parallel, a Slurm array), then the command without --part joins "
                             "them")
    parser.add_argument("--segment", type=segment_arg, default=0.0, metavar="SECONDS",
                        help="seconds of video in a resumable segment: an interrupted run "
                             "loses at most one, and a rerun goes on from there (default: "
                             "about a minute of work)")
    parser.add_argument("--model-dir", type=Path, metavar="DIR",
                        help="folder of model files searched first, and where downloads go")
    overwrite = parser.add_mutually_exclusive_group()
    overwrite.add_argument("-y", "--overwrite", action="store_true",
                           help="replace existing outputs (default: skip them, so a rerun "
                                "resumes a batch)")
    overwrite.add_argument("-n", "--no-overwrite", action="store_true",
                           help="never replace an existing output (the default; as ffmpeg's "
                                "-n)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress or notes; errors and warnings only")
    compare = parser.add_argument_group(
        "comparing methods", "python upscale.py --compare INPUT --scale 4 [--methods ...]: "
        "each INPUT (video, image, or folder of images) is taken as the high-resolution "
        "truth, made small as real footage is (antialiased bicubic, as the SR papers, "
        "ffmpeg's scaler and image editors shrink pictures), enlarged by each "
        "method and measured against the truth (PSNR, SSIM, VMAF, ms per frame, and the "
        "same after mp4v encoding); writes <name>_compare_x<scale>.mp4 (videos) and .png")
    compare.add_argument("--compare", action="store_true",
                         help="compare methods instead of upscaling")
    compare.add_argument("--methods", default=default_compare_methods(),
                         help="comma-separated methods to compare (default: %(default)s)")
    compare.add_argument("--no-reference", action="store_true",
                         help="the inputs are already low-resolution footage: no "
                              "measurements, just the side-by-side pictures")
    compare.add_argument("--report", type=Path, metavar="FILE.json",
                         help="also write the measurements as JSON")
    parser.add_argument("--frames", type=frames_arg, default=0, metavar="N",
                        help="only the first N frames: a quick try before a long run (the "
                             "output is named ..._firstN, its sound cut to match); with "
                             "--compare, compare only a video's first N frames (default: all)")
    parser.add_argument("--benchmark", action="store_true",
                        help="measure each stage, the pipeline and the plain sequential loop "
                             "on the first input, and print the figures (writes no output)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def opencv_problem(methods, cv2_module=cv2):
    """Why this OpenCV cannot run these methods' networks, or "" when it can. Every model
    file here is a frozen TensorFlow graph; an OpenCV without that importer (5.1) runs
    those whose graphs translate to ONNX (Method.onnx)."""
    networks = [m for m in methods if m.is_network]
    if networks and not hasattr(cv2_module, "dnn_superres"):
        return (f"OpenCV {cv2_module.__version__} has no dnn_superres module (the contrib "
                "build); install it with: pip install -r requirements.txt")
    unreadable = [m.name for m in networks if not m.onnx]
    if unreadable and not reads_tensorflow(cv2_module):
        readable = ", ".join(m.name for m in METHODS.values() if m.onnx)
        return (f"OpenCV {cv2_module.__version__} cannot run {', '.join(unreadable)}: it reads "
                f"no TensorFlow model files (5.1 dropped them; it runs {readable}); install "
                "5.0 with: pip install -r requirements.txt")
    return ""


def default_compare_methods(cv2_module=cv2):
    """--compare's methods when none are named: COMPARE_METHODS less those this OpenCV
    cannot run (LapSRN and EDSR on 5.1)."""
    return ",".join(m for m in COMPARE_METHODS
                    if not opencv_problem([METHODS[m]], cv2_module))


COMPARE_ONLY = {"methods": default_compare_methods(), "no_reference": False,
                "report": None}                   # options of --compare, and their defaults


def settings_from_args(args):
    """Checked Settings, or UsageError before any work is done."""
    method = METHODS[args.model]
    wanted = [METHODS.get(m) for m in args.methods.split(",")] if args.compare else [method]
    problem = opencv_problem([m for m in wanted if m])
    if problem:
        raise UsageError(problem)
    if args.benchmark and method.is_network and not reads_tensorflow():
        raise UsageError(f"--benchmark measures the pipeline against DnnSuperResImpl, which "
                         f"OpenCV {cv2.__version__} cannot run on TensorFlow model files; "
                         "benchmark under OpenCV 5.0 (pip install -r requirements.txt)")
    output = Path(args.output) if args.output else None       # (Path drops a final "/")
    url = next((i for i in args.inputs if URL_RE.match(i)), None)
    if url:
        raise UsageError(f"{url}: URLs are not supported; download the file first and give "
                         "its path")
    if not args.compare:
        given = [k for k, default in COMPARE_ONLY.items() if getattr(args, k) != default]
        if given:
            option = "--" + given[0].replace("_", "-")
            raise UsageError(f"{option} applies to --compare only; add --compare, or leave "
                             f"{option} out")
    if (args.compare or args.benchmark) and (args.part or args.segment):
        option = "--part" if args.part else "--segment"
        raise UsageError(f"{option} applies to upscaling; --compare and --benchmark work on "
                         "whole inputs, so leave it out")
    if args.compare:
        unknown = [m for m in args.methods.split(",") if m not in METHODS]
        if unknown:
            raise UsageError(f"unknown method {unknown[0]!r} in --methods; choose from "
                             + ", ".join(METHODS))
        size = args.size or SizeRequest("scale", 4)
        if size.kind != "scale" or size.value <= 1:
            raise UsageError("--compare shrinks each input by a scale and measures how well "
                             "each method brings it back: give --scale above 1 (2, 1.5, 4)")
        return Settings(method=method, size=size, codec=CODECS["mp4v"],
                        output=output, output_dir=args.output_dir,
                        overwrite=args.overwrite, model_dir=args.model_dir,
                        tile=args.tile, device=args.device)
    if args.output and len(args.inputs) > 1:
        raise UsageError("-o/--output takes one input; use --output-dir for several")
    if args.output and args.output_dir:
        raise UsageError("use either -o/--output or --output-dir, not both")
    if output and (args.output.endswith(("/", os.sep)) or output.is_dir()):
        raise UsageError(f"-o {args.output} is a folder; -o names the output file, "
                         f"--output-dir {output} puts outputs in a folder")
    fmt = args.format
    if output and not fmt and output.suffix.lower() not in PICTURE_WRITES:
        container = container_for_extension(output.suffix)
        if container is None:
            known = [e for c in CONTAINERS.values() for e in c.extensions]
            raise UsageError(f"output {output} must end in {', '.join(known[:-1])} or "
                             f"{known[-1]} (or give --format)")
        fmt = container.name
    codec = CODECS[args.codec or default_codec(fmt)]
    if fmt and codec not in [CODECS[c] for c in CONTAINERS[fmt].codecs or CODECS]:
        fits = containers_for(codec)
        raise UsageError(f"--codec {codec.name} cannot go into {fmt.upper()}: give an "
                         f"{fits[0].extensions[0]} output name or --format {fits[0].name}")
    if not codec.tuned:
        given = "--crf" if args.crf is not None else "--preset" if args.preset else ""
        if given:
            tuned = [c.name for c in CODECS.values() if c.tuned]
            raise UsageError(f"{given} applies to --codec {', '.join(tuned[:-1])} or "
                             f"{tuned[-1]}; the {codec.name} output has no such setting")
    crf = codec.crf if args.crf is None else args.crf
    if not 0 <= crf <= codec.crf_max:
        raise UsageError(f"--crf for {codec.name} must be between 0 and {codec.crf_max}, "
                         f"not {crf} (lower is better; its default is {codec.crf})")
    if args.part and args.frames:
        raise UsageError("--part shares a whole video; a --frames try is one piece, so "
                         "leave one of them out")
    if (args.part or args.segment) and method.kind.whole_files:
        raise UsageError(f"--{'part' if args.part else 'segment'} needs a model or cv2 "
                         "baseline; the ffmpeg baseline scales a video in one piece")
    return Settings(method=method, size=args.size or SizeRequest(), codec=codec, crf=crf,
                    preset=args.preset or DEFAULT_PRESET, format=fmt, output=output,
                    output_dir=args.output_dir, overwrite=args.overwrite,
                    model_dir=args.model_dir, tile=args.tile, device=args.device,
                    jobs=args.jobs, frames=args.frames, part=args.part or (),
                    segment=args.segment, sdr=args.sdr, codec_named=args.codec is not None,
                    deinterlace=args.deinterlace)


def main(argv=None):
    sys.stderr.reconfigure(errors=BYTES_SHOWN)
    parser = build_parser()
    args = parser.parse_args(argv)
    console.quiet = args.quiet
    try:
        settings = dataclasses.replace(settings_from_args(args),
                                       argv=forwarded_options(parser, args))
    except UsageError as exc:
        console.error(exc)
        return EXIT_USAGE
    for signum in STOP_SIGNALS:
        signal.signal(signum, handle_stop)
    if os.environ.get("UPSCALE_THREADS", "").isdigit():     # set by a parent's --jobs
        cv2.setNumThreads(int(os.environ["UPSCALE_THREADS"]))
    try:
        if args.benchmark:
            report_benchmark(measure_benchmark(expand_inputs(args.inputs)[0], settings))
            return EXIT_OK
        if args.compare:
            return compare(args.inputs, settings, args.methods.split(","),
                           reference=not args.no_reference, max_frames=args.frames,
                           report=args.report)
        unsearched = unsearched_subfolders(args.inputs)
        if unsearched:
            console.say(subfolders_note(unsearched))
        return run(settings, expand_inputs(args.inputs))
    except Exception as exc:
        console.error(describe(exc, (args.inputs or [""])[0]))
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED
    except KeyboardInterrupt:
        # (a new line first ends the progress line a terminal shows)
        console.say("\n" * sys.stderr.isatty() + "upscale: interrupted; unfinished output "
                    "removed", always=True)
        return EXIT_SIGINT
    except Terminated as exc:
        name = signal.Signals(exc.signum).name
        console.say(f"upscale: terminated by {name}; unfinished output removed", always=True)
        return 128 + exc.signum


if __name__ == "__main__":
    sys.exit(main())
