#!/usr/bin/env python3
"""Train upscale.py's networks and export them as frozen TensorFlow graphs.

The families (models/nets.py): fsrcnn, exactly the network of OpenCV's official FSRCNN
files, node names included; fast and hq, plain 3x3 networks trained with collapsible linear
blocks. Every export is read by DnnSuperResImpl with setModel("fsrcnn", scale) (luma in,
luma out) and rewritten by upscale.py into its fast graph.

Data: the training split of ../shared/datasets (models/srdata.py holds one image in ten
out for validation). Low-resolution patches are made the way the papers make them
(antialiased bicubic, MATLAB's imresize); with --degradation mix, half of them then go
through libx264 at CRF 18-23, as small video often does.

    pip install -r models/requirements-train.txt
    python models/train.py train --family fast --scale 2 --run runs/fast-x2 --steps 25000
    python models/train.py train --family fast --scale 3 --run runs/fast-x3 \
        --init runs/fast-x2 --steps 15000
    python models/train.py export --run runs/fast-x3 --out models/fast-upscalepy_x3.pb

With --teacher FILE (an exported hq file of the same scale, say), part of the loss is the
distance to that larger network's output on each patch instead of to the truth (knowledge
distillation): the last phase of the shipped fast and fsrcnn files.

Training is deterministic given --seed (batch k is drawn from a generator seeded by
(seed, k)) and resumable: a checkpoint is written every few minutes, and running the same
command again continues from it.

Two frameworks run the same step (the class of each below): TensorFlow, the reference, on
the CPU; PyTorch with --backend torch, on a CUDA GPU where there is one (else the CPU), for
a GPU machine whose image has no TensorFlow. Their checkpoints are the same, so a run
started on one goes on with the other; export always uses TensorFlow.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

import nets
import srdata

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PATCH = {2: 36, 3: 32, 4: 28}             # low-resolution patch side per scale
BATCH = 32
PAN_FRAMES, PAN_STEP = 8, 3             # --degradation pan: frames, pixels moved a frame
# How many of a pan's last frames the pairs take in turn, image by image: pan's last frame is
# always a P-frame; among the last four x264 also makes B-frames, as most of a video's frames.
PAN_ENDS = {"pan": 1, "pan4": 4}
DEGRADATIONS = ("clean", "mix", "video", *PAN_ENDS)
DOWNSCALED_COPIES = (0.9, 0.8, 0.7, 0.6)   # --copies: the FSRCNN paper's data augmentation
# Near a patch's edge the network sees the convolutions' zero padding, as it does at a
# picture's edge; but in a patch that margin (the network's reach) is most of the pixels, in
# a picture a few percent. The loss weighs the margin down so that both are learnt in about
# the proportion a picture has them.
MARGIN_WEIGHT = 0.2
# --loss: each pixel's error, before the weights above. L1 is the papers' (and the shipped
# runs'); PSNR is mean squared error, so a last short phase on L2 aims at the measure itself.
# On the mix it also weighs compressed patches (the larger errors) up: tried from the shipped
# files, it gained on CRF 18/23 and video but cost fast x2 0.13 dB on clean images.
# Plain arithmetic, so that numpy arrays and both frameworks' tensors take the same function.
LOSSES = {"l1": lambda error: abs(error), "l2": lambda error: error * error}


def loss_weights(family, scale):
    """Per-pixel loss weights of a high-resolution patch (summing to 1)."""
    side, margin = PATCH[scale] * scale, family.reach(scale) * scale
    w = np.full((side, side), MARGIN_WEIGHT, np.float32)
    w[margin:-margin, margin:-margin] = 1.0
    return (w / w.sum())[None, :, :, None]


def exported_shapes(family, scale):
    """{name: shape} of the Const nodes that hold an exported file's weights."""
    if not family.plain:
        return nets.fsrcnn_shapes(scale)
    shapes = {}
    for i, (k, cin, cout, act) in enumerate(family.layers(scale)):
        shapes.update({f"w{i}": (k, k, cin, cout), f"b{i}": (cout,)})
        if act:
            shapes[f"alpha{i}"] = (cout,)
    return shapes


def pb_weights(path, family, scale):
    """{name: array} of the weights in a frozen graph this script exported (or an official
    FSRCNN file), to go on training from. upscale.py's own reader parses it, so this needs
    no TensorFlow (a GPU machine may have another framework only)."""
    try:
        nodes = srdata.upscale.graph_nodes(Path(path).read_bytes()) or []
    except (OSError, ValueError, IndexError) as exc:
        raise SystemExit(f"{path}: cannot read it as a frozen graph ({exc})")
    shapes = exported_shapes(family, scale)
    found = {n.name: srdata.upscale.const_floats(n) for n in nodes if n.name in shapes}
    found = {k: v for k, v in found.items() if v is not None}
    wrong = sorted(k for k, v in shapes.items() if k not in found or found[k].shape != v)
    if wrong:
        raise SystemExit(f"{path}: not a x{scale} {family.name} graph ({', '.join(wrong)} "
                         "missing or of another shape)")
    return {k: v.astype(np.float32) for k, v in found.items()}


# --- Data ---------------------------------------------------------------------------------------

def pan(hr, scale):
    """--degradation pan's frames: windows of the image, each PAN_STEP pixels on."""
    return srdata.pan_windows(hr, PAN_FRAMES, PAN_STEP, 2 * scale)


def pan_frame(degradation, index):
    """Which frame of the pan the index-th image's pair takes (pan, pan4)."""
    return PAN_FRAMES - 1 - index % PAN_ENDS[degradation]


def target(hr, scale, degradation, index):
    """The high-resolution image the index-th training pair holds: with a pan, the window of
    the frame it takes."""
    return pan(hr, scale)[pan_frame(degradation, index)] if degradation in PAN_ENDS else hr


def cache_path(cache_dir, scale, degradation, copies=False):
    extra = "_copies" if copies else ""
    return Path(cache_dir) / f"train_x{scale}_{degradation}{extra}_8bit.npz"


def training_pairs(scale, degradation, cache_dir, copies=False):
    """[(high-resolution luma, [low-resolution luma, ...])], all 8-bit as upscale.py sees
    pictures, for every training image: the clean low-resolution image first, then (all
    but clean) that image through libx264, then (video) the image made small by ffmpeg's
    scale filter and then libx264, as small video is made, or (pan) the last frame of a
    short pan over the image made small and encoded that way, so an inter-coded frame with
    motion, as most of a video's frames are (the image is then the pan's last window; with
    pan4, the window of one of the last four frames, taken in turn).
    With copies, every image also comes made smaller by each of DOWNSCALED_COPIES (MATLAB's
    bicubic), as more images with finer detail per pixel. Cached in cache_dir, since the
    x264 round trips take a minute; models/carry.py moves a cache to a machine without the
    images."""
    cache = cache_path(cache_dir, scale, degradation, copies)
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        count = int(data["count"])
        return [(data[f"hr{i}"], [data[f"lr{i}_{j}"] for j in range(int(data[f"n{i}"]))])
                for i in range(count)]
    sources = [(name, factor) for name in srdata.image_names("train")
               for factor in (1.0, *(DOWNSCALED_COPIES if copies else ()))]
    pairs, started = [], time.monotonic()
    ffmpeg = srdata.find_ffmpeg() if degradation != "clean" else None
    for i, (name, factor) in enumerate(sources):
        hr = srdata.read_bgr(name)
        whole = srdata.modcrop(hr if factor == 1.0 else srdata.imresize(hr, factor), 2 * scale)
        hr = target(whole, scale, degradation, i)
        lows = [srdata.low_resolution(hr, scale)]
        if degradation != "clean":
            crf = 18 + i % 6                          # 18..23, spread over the images
            lows.append(srdata.h264_frames([lows[0]], crf, ffmpeg)[0])
        if degradation not in ("clean", "mix"):
            h, w = hr.shape[:2]
            made_small = ("-threads", "1", "-vf", f"scale={w // scale}:{h // scale}")
            crf = 18 + (i + 3) % 6
            lows.append(srdata.h264_frames([hr], crf, ffmpeg, made_small)[0]
                        if degradation == "video" else
                        srdata.h264_frames(pan(whole, scale), crf, ffmpeg,
                                           made_small)[pan_frame(degradation, i)])
        pairs.append((srdata.luma(hr), [srdata.luma(low) for low in lows]))
        srdata.progress(i + 1, len(sources), started, f"x{scale} {degradation} data")
    save_pairs(cache, pairs)
    return pairs


def save_pairs(path, pairs):
    """Write training_pairs()'s list as its cache file (complete or not at all)."""
    arrays = {"count": np.int64(len(pairs))}
    for k, (hr, lows) in enumerate(pairs):
        arrays.update({f"hr{k}": hr, f"n{k}": np.int64(len(lows))})
        arrays.update({f"lr{k}_{j}": y for j, y in enumerate(lows)})
    save_npz(path, arrays)


def exported_family(path, scale):
    """(family, weights) of the file at path: the plain family (hq, fast) whose x`scale`
    export it is, and its weights."""
    for family in nets.FAMILIES.values():
        if family.plain:
            try:
                return family, pb_weights(path, family, scale)
            except SystemExit:
                continue
    raise SystemExit(f"{path}: not a x{scale} export of fast or hq")


def taught_images(pairs, scale, teacher, data_cache, threads):
    """--teacher's outputs, 8-bit, one for each low-resolution image of every pair (in
    training_pairs()'s order): the larger network's picture of what that image shows, which
    the student learns beside the truth. Computed once with TensorFlow and cached beside
    the pairs' own cache file, named by the teacher file's checksum."""
    import hashlib
    digest = hashlib.sha256(Path(teacher).read_bytes()).hexdigest()[:12]
    cache = Path(data_cache).with_name(f"{Path(data_cache).stem}_taught_{digest}.npz")
    if cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            flat = [data[f"t{i}"] for i in range(int(data["count"]))]
    else:
        family, weights = exported_family(teacher, scale)
        tf = tensorflow(threads)
        w = {k: tf.constant(v) for k, v in dict(weights, **nets.constants(scale)).items()}
        flat, started = [], time.monotonic()
        lows = [low for _, variants in pairs for low in variants]
        for i, low in enumerate(lows):
            out = nets.forward(tf, family, tf.constant(low[None, :, :, None] / 255.0,
                                                       tf.float32), w, scale)
            flat.append(np.round(np.clip(out.numpy()[0, :, :, 0], 0, 1) * 255)
                        .astype(np.uint8))
            srdata.progress(i + 1, len(lows), started, f"x{scale} {family.name} teacher")
        save_npz(cache, {"count": np.int64(len(flat)),
                         **{f"t{i}": t for i, t in enumerate(flat)}})
    taught, k = [], 0
    for _, variants in pairs:
        taught.append(flat[k:k + len(variants)])
        k += len(variants)
    return taught


class TrainingImages:
    """The training images of one scale as flat 8-bit buffers (high resolution, and every
    low-resolution variant), from which a batch is gathered by index arithmetic alone: the
    same arithmetic in NumPy (TensorFlow's batches) and on a GPU (PyTorch's), so that both
    draw exactly the same patches, and a GPU step needs no data from the host but the draws."""

    def __init__(self, pairs, scale, taught=None):
        big_enough = [min(lows[0].shape) >= PATCH[scale] for _, lows in pairs]
        pairs = [pair for pair, keep in zip(pairs, big_enough) if keep]
        self.scale, self.count = scale, len(pairs)
        areas = np.array([lows[0].size for _, lows in pairs], np.float64)
        self.areas = areas / areas.sum()
        self.variants = np.array([len(lows) for _, lows in pairs])
        self.low_shapes = np.array([lows[0].shape for _, lows in pairs])
        self.high_width = np.array([hr.shape[1] for hr, _ in pairs])
        self.high = np.concatenate([hr.ravel() for hr, _ in pairs])
        self.high_start = np.cumsum([0] + [hr.size for hr, _ in pairs])[:-1]
        lows = [low for _, variants in pairs for low in variants]
        self.low = np.concatenate([low.ravel() for low in lows])
        first = np.cumsum([0] + list(self.variants))[:-1]       # each image's first variant
        sizes = np.array([low.size for low in lows])
        self.low_start = (np.cumsum(np.concatenate([[0], sizes]))[:-1], first)
        # With a teacher, its output for each low-resolution image, at the high resolution.
        self.taught = None
        if taught is not None:
            taught = [t for ts, keep in zip(taught, big_enough) if keep for t in ts]
            self.taught = np.concatenate([t.ravel() for t in taught])
            self.taught_start = np.cumsum([0] + [t.size for t in taught])[:-1]
        p = PATCH[scale]
        self.low_grid, self.high_grid = transform_grids(p), transform_grids(p * scale)

    def draws(self, seed, step, size):
        """Batch `step`'s random draws as index columns [size, 5] (int64): where each
        low- and high-resolution patch starts in the flat buffers, the two row widths, and
        which of the 8 flips and turns; with a teacher, a sixth: where its patch starts.
        They depend on (seed, step, size) alone, so a resumed run draws what an
        uninterrupted one would."""
        rng = np.random.default_rng([seed, step])
        s, p = self.scale, PATCH[self.scale]
        picks = rng.choice(self.count, size, p=self.areas)
        variant = rng.random(size)
        where = rng.random((size, 2))
        turns, flips = rng.integers(4, size=size), rng.integers(2, size=size)
        starts, first = self.low_start
        which = first[picks] + (variant * self.variants[picks]).astype(np.int64)
        low_start = starts[which]
        h, w = self.low_shapes[picks, 0], self.low_shapes[picks, 1]
        y = (where[:, 0] * (h - p + 1)).astype(np.int64)
        x = (where[:, 1] * (w - p + 1)).astype(np.int64)
        wide = self.high_width[picks]
        columns = [low_start + y * w + x, w, self.high_start[picks] + y * s * wide + x * s,
                   wide, turns * 2 + flips]
        if self.taught is not None:
            columns.append(self.taught_start[which] + y * s * wide + x * s)
        return np.stack(columns, axis=1).astype(np.int64)

    def batch(self, draws):
        """(low-resolution patches, high-resolution patches, the teacher's patches or None)
        of the draws, NHWC float32 in [0, 1], with NumPy."""
        def gathered(flat, start, width, grid):
            return patches(flat, start, width, draws[:, 4], grid)[..., None] \
                .astype(np.float32) / 255
        low = gathered(self.low, draws[:, 0], draws[:, 1], self.low_grid)
        high = gathered(self.high, draws[:, 2], draws[:, 3], self.high_grid)
        taught = None if self.taught is None else \
            gathered(self.taught, draws[:, 5], draws[:, 3], self.high_grid)
        return low, high, taught


def transform_grids(side):
    """(rows, columns), each [8, side, side]: for transform 2a + f, where pixel (u, v) of a
    patch turned a quarter turns (np.rot90(patch, a)) and then, if f, mirrored left to right
    comes from in the unturned patch."""
    grid = np.arange(side * side).reshape(side, side)
    turned = [np.rot90(grid, a)[:, ::-1] if f else np.rot90(grid, a)
              for a in range(4) for f in range(2)]
    return np.stack(turned) // side, np.stack(turned) % side


def patches(flat, start, width, transform, grid):
    """The [n, side, side] patches of a flat image buffer that start at `start` (rows
    `width` long), each turned and mirrored by its transform. NumPy arrays or PyTorch
    tensors alike."""
    rows, columns = grid
    return flat[start[:, None, None] + rows[transform] * width[:, None, None]
                + columns[transform]]


def validation_path(cache_dir, scale):
    return Path(cache_dir) / f"validation_x{scale}.npz"


def validation_set(scale, cache_dir, limit=16, side=480):
    """[(low-resolution luma, MATLAB luma of the high-resolution image, rounded)] for quick
    figures while training: the first `limit` held-out images, centre crops of at most
    side. Cached in cache_dir, so that a machine without the images can train."""
    cache = validation_path(cache_dir, scale)
    if cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            return [(data[f"low{i}"], data[f"truth{i}"].astype(np.float64))
                    for i in range(int(data["count"]))]
    out = []
    for name in srdata.image_names("validation")[:limit]:
        hr = srdata.read_bgr(name)
        h, w = hr.shape[:2]
        y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
        hr = srdata.modcrop(hr[y0:y0 + side, x0:x0 + side], scale)
        low = srdata.low_resolution(hr, scale)
        out.append((srdata.luma(low), np.round(srdata.matlab_y(hr))))
    arrays = {"count": np.int64(len(out))}
    for i, (low, truth) in enumerate(out):
        arrays.update({f"low{i}": low, f"truth{i}": truth.astype(np.uint8)})
    save_npz(cache, arrays, compressed=True)
    return out


def luma_psnr(out_full, truth_matlab, border):
    """PSNR on MATLAB's luma scale of a full-range luma result in [0, 1]."""
    y = np.round(16.0 + 219.0 * np.clip(out_full, 0, 1))
    a = y[border:-border, border:-border]
    b = truth_matlab[border:-border, border:-border]
    return 10 * np.log10(255.0 ** 2 / np.mean((a - b) ** 2))


def bicubic_psnr(val, scale):
    import cv2
    figures = []
    for low, truth in val:
        up = cv2.resize(low, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        figures.append(luma_psnr(up / 255.0, truth, scale))
    return float(np.mean(figures))


# --- Checkpoints ------------------------------------------------------------------------------

def save_npz(path, arrays, compressed=False):
    """Write arrays to path complete or not at all (an interrupted run leaves the old file).
    The temporary name is the process's own: two runs started together on one cache each
    write the same data cache, and neither may move the other's file away."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
    os.replace(tmp, path)


def save_checkpoint(run, state):
    save_npz(Path(run) / "checkpoint.npz", state)


def load_checkpoint(run):
    path = Path(run) / "checkpoint.npz"
    if not path.exists():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def weights_of(state):
    return {k[2:]: v for k, v in state.items() if k.startswith("w_")}


# --- Schedule and starting point -------------------------------------------------------------

def learning_rate(step, steps, peak, warmup=500):
    """Linear warm-up, then a cosine down to 1% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * min(1.0, t))))


def starting_weights(args, family, report):
    """The weights a new run starts from: another run's (--init; another scale is seeded
    layer by layer, the same scale goes on as it is, a narrower family is widened), an
    exported file's (--init-pb: ours of the same family and scale, or an official FSRCNN
    file), or fresh ones."""
    if args.init:
        source = load_checkpoint(args.init)
        if source is None:
            raise SystemExit(f"--init {args.init}: no checkpoint there")
        held = nets.FAMILIES[str(source.get("family", "fsrcnn"))]
        report(f"x{args.scale} {family.name} from {args.init} ({held.name} x"
               f"{int(source['scale'])}, step {int(source['step'])})")
        if held != family:
            # A narrower network at the same scale is widened into this one (hq from fast).
            try:
                if int(source["scale"]) != args.scale:
                    raise ValueError("not the same scale")
                return nets.widened_weights(family, held, weights_of(source), args.scale,
                                            args.seed)
            except ValueError as exc:
                raise SystemExit(f"--init {args.init}: a x{int(source['scale'])} {held.name}"
                                 f" run cannot start x{args.scale} {family.name} ({exc})")
        if int(source["scale"]) == args.scale:
            return weights_of(source)
        return nets.seeded_weights(family, weights_of(source), args.scale)
    if args.init_pb:
        report(f"x{args.scale} {family.name} from {args.init_pb}")
        exported = pb_weights(args.init_pb, family, args.scale)
        return nets.factored_weights(family, exported, args.scale, args.seed) \
            if family.plain else exported
    return nets.initial_weights(family, args.scale, args.seed)


# --- The training step, one class a framework ----------------------------------------------
# Both take the same weights and Adam moments (numpy, the checkpoint's form), train on the
# same batches (TrainingImages' draws) and do the same arithmetic: a run may be started with
# one and resumed with the other. TensorFlow is the reference, on the CPU; PyTorch is there
# for a GPU machine, whose image may have no TensorFlow. Each offers step(draws, lr, t),
# mean_loss() (over the steps since the last call), infer(low) and state().

ADAM = (0.9, 0.999, 1e-8)                 # beta1, beta2, epsilon


def tensorflow(threads):
    """TensorFlow, set to `threads` threads and deterministic (before its first use: it
    takes no threading settings after)."""
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    return tf


class TensorflowSteps:
    def __init__(self, family, scale, weights, moments, pixel_weights, images, args):
        tf = tensorflow(args.threads)
        self.names = sorted(weights)
        variables = {k: tf.Variable(v) for k, v in weights.items()}
        self.variables, self.moments = variables, {
            k: [tf.Variable(m), tf.Variable(v)] for k, (m, v) in moments.items()}
        fixed = {k: tf.constant(v) for k, v in nets.constants(scale).items()}
        pixel_weights = tf.constant(pixel_weights)
        pixel_loss = LOSSES[args.loss]

        def network(low):
            w = nets.folded(family, variables, scale, einsum=tf.einsum, constant=tf.constant)
            return nets.forward(tf, family, low, dict(w, **fixed), scale)

        def batch_loss(out, truth):
            return tf.reduce_sum(pixel_loss(out - truth) * pixel_weights) / out.shape[0]

        @tf.function(jit_compile=args.xla)
        def step(low, high, taught, lr, t):
            with tf.GradientTape() as tape:
                out = network(low)
                loss = batch_loss(out, high)
                if taught is not None:     # --teacher: part of the aim is its picture
                    loss = (1 - args.teacher_weight) * loss + \
                        args.teacher_weight * batch_loss(out, taught)
            grads = tape.gradient(loss, [variables[k] for k in self.names])
            b1, b2, eps = ADAM
            for k, g in zip(self.names, grads):
                m, v = self.moments[k]
                m.assign(b1 * m + (1 - b1) * g)
                v.assign(b2 * v + (1 - b2) * g * g)
                mhat = m / (1 - b1 ** t)
                vhat = v / (1 - b2 ** t)
                variables[k].assign_sub(lr * mhat / (tf.sqrt(vhat) + eps))
            return loss

        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 1], tf.float32)])
        def infer(low):
            return network(low)

        self.tf, self._step, self._infer = tf, step, infer
        self.images, self.losses = images, []
        self.where = "tensorflow, CPU"

    def step(self, draws, lr, t):
        """One Adam step on the batch of these draws."""
        low, high, taught = self.images.batch(draws)
        self.losses.append(self._step(low, high, taught,
                                      self.tf.constant(lr, self.tf.float32),
                                      self.tf.constant(t, self.tf.float32)))

    def mean_loss(self):
        loss, self.losses = float(np.mean([float(x) for x in self.losses])), []
        return loss

    def infer(self, low):
        """The network's output for one NHWC float32 picture, as a 2-D array."""
        return self._infer(low).numpy()[0, :, :, 0]

    def state(self):
        """{name: (weight, first moment, second moment)} as numpy arrays."""
        return {k: (self.variables[k].numpy(), *(x.numpy() for x in self.moments[k]))
                for k in self.names}


class TorchOps:
    """The tf.raw_ops operations nets.forward() uses, on NHWC PyTorch tensors (as
    `ops.raw_ops`), so that both frameworks run the one definition of each network."""

    def __init__(self, torch):
        self.torch, self.raw_ops = torch, self

    def Conv2D(self, input, filter, strides, padding, name):  # tf.raw_ops' names
        # NHWC seen as NCHW is channels-last memory, which cuDNN takes as it is.
        out = self.torch.nn.functional.conv2d(input.permute(0, 3, 1, 2),
                                              filter.permute(3, 2, 0, 1),
                                              padding=filter.shape[0] // 2)
        return out.permute(0, 2, 3, 1)

    def DepthToSpace(self, input, block_size, name):
        n, h, w, c = input.shape
        s = block_size
        return (input.reshape(n, h, w, s, s, c // (s * s)).permute(0, 1, 3, 2, 4, 5)
                .reshape(n, h * s, w * s, c // (s * s)))

    def Add(self, x, y, name):
        return x + y

    def BiasAdd(self, value, bias, name):
        return value + bias

    def Sub(self, x, y, name):
        return x - y

    def Mul(self, x, y, name):
        return x * y

    def Abs(self, x, name):
        return x.abs()

    def Relu(self, features, name):
        return features.relu()


class TorchSteps:
    """The step in PyTorch, built to keep a GPU busy: the training images live on the device
    and each batch is gathered there from its draws (TrainingImages' arithmetic); weights and
    Adam's moments are each one flat tensor, so that Adam is a handful of operations; the
    steps are queued CHUNK at a time, their draws and schedule sent in one copy; and on CUDA
    the whole step (gather, network, gradient, Adam) is captured once as a CUDA graph and
    replayed, so that a step costs one launch instead of hundreds."""

    CHUNK = 200

    def __init__(self, family, scale, weights, moments, pixel_weights, images, args):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        import torch
        torch.set_num_threads(args.threads)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        gpu = self.device.type == "cuda"
        self.names = sorted(weights)
        self.shapes = [weights[k].shape for k in self.names]
        ends = np.cumsum([weights[k].size for k in self.names])
        self.spans = list(zip(np.concatenate([[0], ends[:-1]]), ends))

        def flat(arrays):
            return torch.tensor(np.concatenate([a.ravel() for a in arrays]), device=self.device)

        self.flat = flat(weights[k] for k in self.names).requires_grad_()
        self.m = flat(moments[k][0] for k in self.names)
        self.v = flat(moments[k][1] for k in self.names)
        self.pixel_weights = torch.tensor(pixel_weights, device=self.device)
        self.pixel_loss = LOSSES[args.loss]
        self.fixed = {k: torch.tensor(v, device=self.device)
                      for k, v in nets.constants(scale).items()}
        self.family, self.scale, self.ops = family, scale, TorchOps(torch)
        self.identities = {}
        self.low, self.high = (torch.from_numpy(x).to(self.device)
                               for x in (images.low, images.high))
        self.grids = [tuple(torch.from_numpy(g).to(self.device) for g in grid)
                      for grid in (images.low_grid, images.high_grid)]
        # The one step's inputs, which a captured graph reads from the same addresses.
        self.draws = torch.zeros((args.batch, 5), dtype=torch.int64, device=self.device)
        self.schedule = torch.zeros(3, device=self.device)    # lr, 1 - b1^t, 1 - b2^t
        self.loss_sum = torch.zeros((), device=self.device)
        self.pending, self.counted = [], 0
        self.graph = None if gpu and not args.no_graph else False
        self.where = (f"torch, {torch.cuda.get_device_name()}" if gpu else "torch, CPU")

    def constant(self, array):
        key = (array.shape, array.tobytes())
        if key not in self.identities:
            self.identities[key] = self.torch.tensor(array, device=self.device)
        return self.identities[key]

    def network(self, low):
        weights = {k: self.flat[a:b].view(shape)
                   for k, (a, b), shape in zip(self.names, self.spans, self.shapes)}
        w = nets.folded(self.family, weights, self.scale, einsum=self.torch.einsum,
                        constant=self.constant)
        return nets.forward(self.ops, self.family, low, dict(w, **self.fixed), self.scale)

    def one_step(self):
        """The step of self.draws at self.schedule, every operation on the device."""
        torch, d = self.torch, self.draws
        low, high = (patches(flat, d[:, i], d[:, i + 1], d[:, 4], grid)[..., None].float()
                     / 255 for i, flat, grid in ((0, self.low, self.grids[0]),
                                                 (2, self.high, self.grids[1])))
        loss = (self.pixel_loss(self.network(low) - high) * self.pixel_weights).sum() \
            / low.shape[0]
        grad, = torch.autograd.grad(loss, self.flat)
        b1, b2, eps = ADAM
        lr, c1, c2 = self.schedule
        with torch.no_grad():           # TensorflowSteps' Adam, as the same formula
            self.m.mul_(b1).add_(grad, alpha=1 - b1)
            self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            self.flat.sub_(lr * (self.m / c1) / (torch.sqrt(self.v / c2) + eps))
            self.loss_sum.add_(loss.detach())

    def captured(self):
        """The step as a CUDA graph (False when capture fails: then steps run one by one).
        Capture needs a few steps run first; they are undone, so that the run's arithmetic
        is what it would be without the graph."""
        torch = self.torch
        kept = [x.detach().clone() for x in (self.flat, self.m, self.v)]
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.one_step()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.one_step()
            print("the step is captured as a CUDA graph", flush=True)
        except RuntimeError as exc:
            print(f"no CUDA graph ({exc}); steps run one by one", flush=True)
            graph = False
        with torch.no_grad():
            for x, k in zip((self.flat, self.m, self.v), kept):
                x.copy_(k)
            self.loss_sum.zero_()
        torch.cuda.synchronize()
        return graph

    def step(self, draws, lr, t):
        """Queue one Adam step on the batch of these draws (run CHUNK at a time)."""
        b1, b2, _ = ADAM
        self.pending.append((draws, (lr, 1 - b1 ** t, 1 - b2 ** t)))
        if len(self.pending) == self.CHUNK:
            self.flush()

    def flush(self):
        if not self.pending:
            return
        torch = self.torch
        draws = torch.from_numpy(np.stack([d for d, _ in self.pending])).to(self.device)
        schedule = torch.tensor([s for _, s in self.pending], dtype=torch.float32,
                                device=self.device)
        for k in range(len(self.pending)):
            self.draws.copy_(draws[k])
            self.schedule.copy_(schedule[k])
            if self.graph is None:          # first step on CUDA: capture it
                self.graph = self.captured()
            if self.graph is False:
                self.one_step()
            else:
                self.graph.replay()
        self.counted += len(self.pending)
        self.pending = []

    def mean_loss(self):
        self.flush()
        loss = float(self.loss_sum) / max(1, self.counted)
        self.loss_sum.zero_()
        self.counted = 0
        return loss

    def infer(self, low):
        self.flush()
        with self.torch.no_grad():
            low = self.torch.from_numpy(np.ascontiguousarray(low)).to(self.device)
            return self.network(low).cpu().numpy()[0, :, :, 0]

    def state(self):
        self.flush()
        out = {}
        for k, (a, b), shape in zip(self.names, self.spans, self.shapes):
            out[k] = tuple(x[a:b].detach().view(shape).cpu().numpy()
                           for x in (self.flat, self.m, self.v))
        return out


BACKENDS = {"tensorflow": TensorflowSteps, "torch": TorchSteps}


# --- Training ---------------------------------------------------------------------------------

def train(args):
    family = nets.FAMILIES[args.family]
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    log = open(run / "log.txt", "a")

    def report(line):
        print(line, flush=True)
        print(line, file=log, flush=True)

    state = load_checkpoint(run)
    if state is not None:
        held = (str(state.get("family", "fsrcnn")), int(state["scale"]))
        if held != (family.name, args.scale):
            raise SystemExit(f"{run} holds a x{held[1]} {held[0]} run, "
                             f"not x{args.scale} {family.name}")
        start = int(state["step"])
        report(f"resuming {run} at step {start} of {args.steps}")
        weights = weights_of(state)
        moments = {k: (state[f"m_{k}"], state[f"v_{k}"]) for k in weights}
    else:
        start = 0
        weights = starting_weights(args, family, report)
        moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in weights.items()}
    pairs = training_pairs(args.scale, args.degradation, args.cache, args.copies)
    taught = None
    if args.teacher:
        if args.backend != "tensorflow":
            raise SystemExit("--teacher: only with the tensorflow backend")
        taught = taught_images(pairs, args.scale, args.teacher, cache_path(
            args.cache, args.scale, args.degradation, args.copies), args.threads)
    images = TrainingImages(pairs, args.scale, taught)
    steps = BACKENDS[args.backend](family, args.scale, weights, moments,
                                   loss_weights(family, args.scale), images, args)

    def validate(val):
        figures = [luma_psnr(steps.infer(low[None, :, :, None].astype(np.float32) / 255.0),
                             truth, args.scale) for low, truth in val]
        return float(np.mean(figures))

    val = validation_set(args.scale, args.cache)
    report(f"x{args.scale} {family.name} ({family.multiply_adds(args.scale)} multiply-adds a "
           f"pixel): {images.count} training images ({args.degradation}"
           f"{', downscaled copies' if args.copies else ''}), {len(val)} "
           f"validation images; bicubic {bicubic_psnr(val, args.scale):.2f} dB; "
           f"{steps.where}, batch {args.batch}, {args.loss.upper()} loss"
           + (f", {args.teacher_weight:g} of it to {args.teacher}'s output"
              if args.teacher else ""))

    def checkpoint(step):
        state = {"family": np.str_(family.name), "scale": np.int64(args.scale),
                 "step": np.int64(step)}
        for k, (w, m, v) in steps.state().items():
            state[f"w_{k}"], state[f"m_{k}"], state[f"v_{k}"] = w, m, v
        save_checkpoint(run, state)

    started, saved = time.monotonic(), time.monotonic()
    stop = min(args.steps, args.stop_at or args.steps)
    for step in range(start, stop):
        lr = learning_rate(step, args.steps, args.lr)
        steps.step(images.draws(args.seed, step, args.batch), lr, step + 1)
        done = step + 1
        if done % args.val_every == 0 or done == args.steps:
            loss = steps.mean_loss()
            rate = (done - start) / (time.monotonic() - started)
            report(f"step {done}/{args.steps}  loss {loss:.5f}  lr {lr:.2e}  "
                   f"val {validate(val):.2f} dB  {rate:.1f} steps/s  "
                   f"ETA {(args.steps - done) / rate / 60:.0f} min")
        if time.monotonic() - saved >= args.checkpoint_seconds or done == stop:
            checkpoint(done)
            saved = time.monotonic()
    report(f"done: {run} at step {stop}" + (f" of {args.steps} (--stop-at)" if stop < args.steps
                                            else ""))


# --- Export -----------------------------------------------------------------------------------

def reference_crop(scale):
    """The held-out low-resolution crop whose network output the tests keep."""
    name = srdata.image_names("validation")[0]
    hr = srdata.modcrop(srdata.read_bgr(name)[:96, :96], scale)
    return srdata.luma(srdata.low_resolution(hr, scale))


def export(args):
    """Write the run's folded weights as a frozen graph in the official files' form, and the
    reference output the tests compare OpenCV's against."""
    import tensorflow as tf
    state = load_checkpoint(args.run)
    if state is None:
        raise SystemExit(f"{args.run}: no checkpoint")
    family = nets.FAMILIES[str(state.get("family", "fsrcnn"))]
    scale = int(state["scale"])
    weights = nets.folded(family, weights_of(state), scale)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 1], name="IteratorGetNext")
        consts = {k: tf.constant(v, name=k) for k, v in weights.items()}
        consts["half"] = tf.constant(0.5, tf.float32, name="mul/y")
        consts["ones"] = tf.constant(nets.constants(scale)["ones"], name="ones")
        y = nets.forward(tf, family, x, consts, scale)
        tf.raw_ops.Transpose(x=y, perm=tf.constant([0, 3, 1, 2], name="NCHW_output/perm"),
                             name="NCHW_output")
    # The held-out crop first: without the images, nothing is written.
    low = reference_crop(scale) if args.reference else None
    out = Path(args.out)
    out.write_bytes(graph.as_graph_def().SerializeToString(deterministic=True))
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    if args.reference:
        # The trained network's own output on a held-out crop: OpenCV must reproduce it.
        fixed = {k: tf.constant(v) for k, v in nets.constants(scale).items()}
        reference = nets.forward(tf, family, tf.constant(low[None, :, :, None] / 255.0,
                                                         tf.float32),
                                 dict({k: tf.constant(v) for k, v in weights.items()}, **fixed),
                                 scale).numpy()[0, :, :, 0]
        path = Path(args.reference)
        existing = dict(np.load(path)) if path.exists() else {}
        existing.update({f"low_x{scale}": low, f"out_x{scale}": reference.astype(np.float32)})
        np.savez_compressed(path, **existing)
        print(f"wrote the reference output to {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train (or resume) one scale")
    t.add_argument("--scale", type=int, choices=(2, 3, 4), required=True)
    t.add_argument("--run", required=True, help="folder for the checkpoint and log")
    t.add_argument("--steps", type=int, default=40000,
                   help="length of the learning-rate schedule (a resumed run may change it: "
                   "the schedule goes on from where it stopped)")
    t.add_argument("--stop-at", type=int, default=0,
                   help="stop (with a checkpoint) after this step, to replay a run whose "
                   "--steps changed on the way (see models/logs)")
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (Adam)")
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--family", choices=sorted(nets.FAMILIES), default="fsrcnn",
                   help="which network (models/nets.py)")
    t.add_argument("--init", help="start from this run: of the same family, another scale "
                   "seeds every layer but the last and the same scale goes on from its "
                   "weights; a narrower plain family's run at the same scale is widened")
    t.add_argument("--init-pb", help="start from an exported file of this family and scale "
                   "(a shipped one, or an official FSRCNN file)")
    t.add_argument("--degradation", choices=DEGRADATIONS, default="mix",
                   help="the low-resolution images: the papers' (clean); those and the same "
                   "through libx264 at CRF 18-23 (mix); and a third, made small by ffmpeg's "
                   "scale filter before libx264 (video), or the last frame of a pan made "
                   "small so (pan), or one of its last four, image by image (pan4)")
    t.add_argument("--copies", action="store_true",
                   help="also train on every image made smaller by 0.9, 0.8, 0.7 and 0.6 "
                   "(the FSRCNN paper's augmentation)")
    t.add_argument("--loss", choices=sorted(LOSSES), default="l1",
                   help="each pixel's error: absolute (l1, the default) or squared (l2, for "
                   "a last phase: PSNR measures squared error)")
    t.add_argument("--teacher", help="an exported file of a larger family at this scale (hq "
                   "for fast): the loss also measures the distance to its output on each "
                   "patch (knowledge distillation)")
    t.add_argument("--teacher-weight", type=float, default=0.5,
                   help="with --teacher, the share of the loss that is the distance to the "
                   "teacher's output; the rest is the distance to the truth (default 0.5)")
    t.add_argument("--threads", type=int, default=os.cpu_count())
    t.add_argument("--val-every", type=int, default=1000)
    t.add_argument("--checkpoint-seconds", type=float, default=120,
                   help="how much work an interruption may lose (default 120)")
    t.add_argument("--cache", default=str(srdata.HERE / ".cache"))
    t.add_argument("--xla", action="store_true", help="compile the step with XLA")
    t.add_argument("--backend", choices=sorted(BACKENDS), default="tensorflow",
                   help="tensorflow (the reference, CPU) or torch (uses a CUDA GPU if "
                   "there is one; install torch yourself)")
    t.add_argument("--batch", type=int, default=BATCH, help=f"patches a step (default {BATCH})")
    t.add_argument("--no-graph", action="store_true",
                   help="with torch on a GPU, launch each step's operations one by one "
                   "instead of replaying them as one CUDA graph")
    e = sub.add_parser("export", help="write a run's weights as a .pb")
    e.add_argument("--run", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--reference", help="also add the network's own output to this .npz")
    args = parser.parse_args()
    (train if args.command == "train" else export)(args)


if __name__ == "__main__":
    sys.exit(main())
