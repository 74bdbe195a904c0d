"""Data for training and measuring our networks: the image sets, the held-out split,
the super-resolution papers' degradation and metric, and the compressed degradation.

Shared by models/train.py (TensorFlow) and models/measure.py (NumPy and OpenCV only).

The papers' protocol, as Set5/Set14 figures are reported:
- the low-resolution image is MATLAB's imresize(HR, 1/s, 'bicubic'), antialiased, rounded
  to 8 bits (imresize() below reproduces it);
- PSNR is taken on BT.601 luma in MATLAB's rgb2ycbcr form (16..235), with `s` pixels cut
  off every edge (psnr_y()).
"""

import hashlib
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import upscale  # noqa: E402

HERE = Path(__file__).resolve().parent
DATASETS = Path(os.environ.get("UPSCALE_DATASETS", HERE.parent.parent / "shared" / "datasets"))
SETS = ("T91", "BSD200", "DIV2K_gray_crops_igv")
DUPLICATES = {"T91/t65.bmp"}          # byte-identical to T91/t36.bmp
VALIDATION_EVERY = 10                 # one image in ten is held out, chosen by a hash of its name
COMPRESSED_CRFS = (18, 23)            # libx264 CRF after the downscale: the range


def is_validation(name):
    """Whether an image (its path under the dataset folder) is in the held-out split. A hash
    of the name decides, so the split never depends on which files happen to be listed;
    crops of one DIV2K picture ("0168-1.png", "0168-2.png") fall on the same side."""
    group = name.split("-")[0] if name.startswith("DIV2K") else name
    return int(hashlib.sha256(group.encode()).hexdigest(), 16) % VALIDATION_EVERY == 0


def image_names(split, root=DATASETS):
    """Sorted names ("T91/t1.bmp") of the training or validation images."""
    names = []
    for folder in SETS:
        if not (Path(root) / folder).is_dir():
            raise SystemExit(f"no {folder} in {root}: set UPSCALE_DATASETS to the folder of "
                             "the training images (../shared/datasets)")
        for path in sorted((Path(root) / folder).iterdir()):
            name = f"{folder}/{path.name}"
            if path.suffix.lower() in (".bmp", ".png") and name not in DUPLICATES and \
                    is_validation(name) == (split == "validation"):
                names.append(name)
    return names


def read_bgr(name, root=DATASETS):
    """An image as 8-bit BGR (grayscale crops are repeated into three channels)."""
    image = cv2.imread(str(Path(root) / name), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read {Path(root) / name}")
    return image


def modcrop(image, multiple):
    h, w = image.shape[:2]
    return image[:h - h % multiple, :w - w % multiple]


def luma(bgr):
    """Full-range luma as upscale.py feeds the network: OpenCV's YCrCb Y, 8-bit."""
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)[:, :, 0]


def matlab_y(bgr):
    """MATLAB's rgb2ycbcr luma (16..235) of an 8-bit BGR image, as float64."""
    b, g, r = (bgr[:, :, i].astype(np.float64) for i in range(3))
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def psnr_y(truth_bgr, test_bgr, border):
    """The papers' PSNR: MATLAB luma, `border` pixels cut off every edge."""
    a, b = (np.round(matlab_y(x))[border:-border, border:-border]
            for x in (truth_bgr, test_bgr))
    mse = np.mean((a - b) ** 2)
    return 100.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


# --- MATLAB's imresize, bicubic with antialiasing --------------------------------------------

def imresize(image, scale):
    """MATLAB's imresize(image, scale, 'bicubic') of an 8-bit image, rounded to 8 bits: the
    papers' degradation (upscale.imresize, its one home; --compare makes footage small with
    the same function)."""
    return upscale.imresize(image, scale)


# --- Compression after the downscale ---------------------------------------------------------

def find_ffmpeg():
    """The ffmpeg upscale.py itself uses (one home for finding it: $UPSCALE_FFMPEG, then
    imageio-ffmpeg's pinned build, then PATH)."""
    try:
        return upscale.find_ffmpeg()
    except upscale.UpscaleError as exc:
        raise SystemExit(str(exc)) from None


def h264_frames(frames_bgr, crf, ffmpeg=None, options=("-threads", "1")):
    """The frames after libx264 at `crf` (yuv420p, default preset), decoded back to BGR the
    way OpenCV's reader does; options (ffmpeg output options, a -vf say) come before the
    encoder's. Sizes must be even."""
    ffmpeg = ffmpeg or find_ffmpeg()
    h, w = frames_bgr[0].shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        raw, clip = os.path.join(tmp, "frames.bgr"), os.path.join(tmp, "clip.mkv")
        Path(raw).write_bytes(b"".join(f.tobytes() for f in frames_bgr))
        upscale.run_ffmpeg(upscale.ffmpeg_args(
            ffmpeg, "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-r", "25",
            "-i", raw, *options, "-c:v", "libx264", "-crf", crf, "-pix_fmt", "yuv420p", clip),
            "encoding frames with libx264")
        cap = cv2.VideoCapture(clip)
        out = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            out.append(frame)
        cap.release()
    if len(out) != len(frames_bgr):
        raise SystemExit(f"x264 round trip gave {len(out)} frames, not {len(frames_bgr)}")
    return out


def pan_windows(image, count, step, multiple, most=(None, None)):
    """`count` windows of the image, each `step` pixels right of and below the one before,
    as the frames of a camera's diagonal pan; both sides a multiple of `multiple` and at most
    `most` (height, width) before the pan's margin comes off."""
    h, w = image.shape[:2]
    sides = [(min(full, cap or full) - count * step) // multiple * multiple
             for full, cap in zip((h, w), most)]
    return [image[i * step:i * step + sides[0], i * step:i * step + sides[1]]
            for i in range(count)]


def low_resolution(hr_bgr, scale, crf=None, ffmpeg=None):
    """The papers' low-resolution image, then (crf given) libx264 at that CRF."""
    low = imresize(hr_bgr, 1.0 / scale)
    return low if crf is None else h264_frames([low], crf, ffmpeg)[0]


def progress(done, total, started, what):
    """A line every tenth of the work, with the time left."""
    import time
    if done % max(1, total // 10) and done != total:
        return
    elapsed = time.monotonic() - started
    eta = elapsed / done * (total - done) if done else 0
    print(f"{what}: {done}/{total}, ETA {eta:.0f} s", file=sys.stderr, flush=True)
