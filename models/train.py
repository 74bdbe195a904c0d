#!/usr/bin/env python3
"""Train FSRCNN weights for upscale.py and export them as frozen TensorFlow graphs.

The network is exactly the one in OpenCV's official FSRCNN files (d=56, s=12, m=4: a 5x5
conv to 56 features, a 1x1 shrink to 12, four 3x3 maps, a 1x1 expand to 56, all with PReLU,
then a 1x1 conv to scale**2 planes and DepthToSpace), spelled with the same operations and
node names, so DnnSuperResImpl reads the export with setModel("fsrcnn", scale) and
upscale.py's graph rewrite applies to it unchanged: same speed per frame.

Data: the training split of ../shared/datasets (models/srdata.py holds one image in ten
out for validation). Low-resolution patches are made the way the papers make them
(antialiased bicubic, MATLAB's imresize); with --degradation mix, half of them then go
through libx264 at CRF 18-23, as small video often does.

    pip install -r models/requirements-train.txt
    python models/train.py train --scale 3 --run runs/x3 --steps 40000
    python models/train.py train --scale 4 --run runs/x4 --init runs/x3 --steps 30000
    python models/train.py export --run runs/x4 --out models/FSRCNN-ours_x4.pb

Training is deterministic given --seed (batch k is drawn from a generator seeded by
(seed, k)) and resumable: a checkpoint is written every few minutes, and running the same
command again continues from it.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

import srdata

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

D, S, M = 56, 12, 4                        # FSRCNN(d, s, m) of the official files
PATCH = {2: 36, 3: 32, 4: 28}             # low-resolution patch side per scale
BATCH = 32
# Input pixels each output pixel sees on every side (5x5, then four 3x3). Near a patch's
# edge the network sees the convolutions' zero padding, as it does at a picture's edge; but
# in a patch that margin is most of the pixels, in a picture a few percent. The loss weighs
# the margin down so that both are learnt in about the proportion a picture has them.
REACH = 2 + M
MARGIN_WEIGHT = 0.2


def loss_weights(scale):
    """Per-pixel loss weights of a high-resolution patch (summing to 1)."""
    side, margin = PATCH[scale] * scale, REACH * scale
    w = np.full((side, side), MARGIN_WEIGHT, np.float32)
    w[margin:-margin, margin:-margin] = 1.0
    return (w / w.sum())[None, :, :, None]


def layer_shapes(scale):
    """{name: shape} of every weight, named as in the official graphs (HWIO filters)."""
    shapes = {"f1": (5, 5, 1, D), "b1": (D,), "alpha1": (D,),
              "f2": (1, 1, D, S), "b2": (S,), "alpha2": (S,)}
    for i in range(3, 3 + M):
        shapes.update({f"f{i}": (3, 3, S, S), f"b{i}": (S,), f"alpha{i}": (S,)})
    shapes.update({"f7": (1, 1, S, D), "b7": (D,), "alpha7": (D,),
                   "f8": (1, 1, D, scale * scale), "b8": (1,)})
    return shapes


def initial_weights(scale, seed):
    rng = np.random.default_rng([seed, 0xF5])
    weights = {}
    for name, shape in layer_shapes(scale).items():
        if name.startswith("f"):
            std = 0.001 if name == "f8" else np.sqrt(2.0 / np.prod(shape[:3]))
            weights[name] = rng.normal(0, std, shape).astype(np.float32)
        elif name.startswith("alpha"):
            weights[name] = np.full(shape, 0.25, np.float32)
        else:
            weights[name] = np.zeros(shape, np.float32)
    return weights


def seeded_weights(source, scale):
    """Weights for `scale` from another scale's network: every feature layer as it is (the
    paper's transfer), and each output plane from the source plane of the nearest sub-pixel
    position."""
    weights = {k: v.copy() for k, v in source.items() if k != "f8"}
    old = int(round(np.sqrt(source["f8"].shape[3])))
    phase = [min(old - 1, int((i + 0.5) / scale * old)) for i in range(scale)]
    planes = [source["f8"][..., phase[r] * old + phase[c]] for r in range(scale)
              for c in range(scale)]
    weights["f8"] = np.stack(planes, axis=-1).astype(np.float32)
    return weights


def fsrcnn(tf, x, w, scale):
    """The network on NHWC luma in [0, 1], with the official graph's operations and names
    (a plain Add for each bias, PReLU as relu(x) + alpha * (x - |x|) * 0.5)."""
    ops = tf.raw_ops
    counters = {}

    def numbered(base):        # TensorFlow's own numbering: add, add_1, add_2, ...
        n = counters.get(base, 0)
        counters[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    h = x
    for i in range(1, 8):
        h = ops.Conv2D(input=h, filter=w[f"f{i}"], strides=[1, 1, 1, 1], padding="SAME",
                       name=f"conv{i}")
        h = ops.Add(x=h, y=w[f"b{i}"], name=numbered("add"))
        absolute = ops.Abs(x=h, name=numbered("Abs"))
        sub = ops.Sub(x=h, y=absolute, name=numbered("sub"))
        scaled = ops.Mul(x=w[f"alpha{i}"], y=sub, name=numbered("mul"))
        half = ops.Mul(x=scaled, y=w["half"], name=numbered("mul"))
        relu = ops.Relu(features=h, name=numbered("Relu"))
        h = ops.Add(x=relu, y=half, name=numbered("add"))
    h = ops.Conv2D(input=h, filter=w["f8"], strides=[1, 1, 1, 1], padding="SAME",
                   name="conv8")
    h = ops.DepthToSpace(input=h, block_size=scale, name="DepthToSpace")
    return ops.BiasAdd(value=h, bias=w["b8"], name="NHWC_output")


# --- Data ---------------------------------------------------------------------------------------

def training_pairs(scale, degradation, cache_dir):
    """[(hr luma float32 in [0, 1], [low-resolution luma uint8, ...])] for every training
    image: the clean low-resolution image first, then its compressed one (mix only).
    Cached in cache_dir, since the x264 round trips take a minute."""
    cache = Path(cache_dir) / f"train_x{scale}_{degradation}.npz"
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        count = int(data["count"])
        return [(data[f"hr{i}"], [data[f"lr{i}_{j}"] for j in range(int(data[f"n{i}"]))])
                for i in range(count)]
    names = srdata.image_names("train")
    pairs, arrays, started = [], {}, time.monotonic()
    ffmpeg = srdata.find_ffmpeg() if degradation == "mix" else None
    for i, name in enumerate(names):
        hr = srdata.modcrop(srdata.read_bgr(name), 2 * scale)
        lows = [srdata.low_resolution(hr, scale)]
        if degradation == "mix":
            crf = 18 + i % 6                          # 18..23, spread over the images
            lows.append(srdata.h264_frames([lows[0]], crf, ffmpeg)[0])
        hr_y = hr.astype(np.float32) @ np.float32([0.114, 0.587, 0.299]) / 255.0
        low_y = [srdata.luma(low) for low in lows]
        k = len(pairs)
        arrays.update({f"hr{k}": hr_y, f"n{k}": np.int64(len(low_y))})
        arrays.update({f"lr{k}_{j}": y for j, y in enumerate(low_y)})
        pairs.append((hr_y, low_y))
        srdata.progress(i + 1, len(names), started, f"x{scale} {degradation} data")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, count=np.int64(len(pairs)), **arrays)
    os.replace(tmp, cache)
    return pairs


def batch(pairs, areas, scale, seed, step):
    """Batch `step`: (low-resolution patches, high-resolution patches), NHWC float32. It
    depends on (seed, step) alone, so a resumed run draws what an uninterrupted one would."""
    rng = np.random.default_rng([seed, step])
    p = PATCH[scale]
    lows, highs = [], []
    for k in rng.choice(len(pairs), BATCH, p=areas):
        hr, variants = pairs[k]
        low = variants[rng.integers(len(variants))]
        y = rng.integers(low.shape[0] - p + 1)
        x = rng.integers(low.shape[1] - p + 1)
        lo = low[y:y + p, x:x + p].astype(np.float32) / 255.0
        hi = hr[y * scale:(y + p) * scale, x * scale:(x + p) * scale]
        turns, flip = rng.integers(4), rng.integers(2)
        lo, hi = np.rot90(lo, turns), np.rot90(hi, turns)
        if flip:
            lo, hi = lo[:, ::-1], hi[:, ::-1]
        lows.append(lo)
        highs.append(hi)
    return np.stack(lows)[..., None], np.stack(highs)[..., None]


def validation_set(scale, limit=16, side=480):
    """[(low-resolution luma, matlab luma of the high-resolution image)] for quick figures
    while training: the first `limit` held-out images, centre crops of at most side."""
    out = []
    for name in srdata.image_names("validation")[:limit]:
        hr = srdata.read_bgr(name)
        h, w = hr.shape[:2]
        y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
        hr = srdata.modcrop(hr[y0:y0 + side, x0:x0 + side], scale)
        low = srdata.low_resolution(hr, scale)
        out.append((srdata.luma(low), np.round(srdata.matlab_y(hr))))
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

def save_checkpoint(run, state):
    path = Path(run) / "checkpoint.npz"
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **state)
    os.replace(tmp, path)


def load_checkpoint(run):
    path = Path(run) / "checkpoint.npz"
    if not path.exists():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def weights_of(state):
    return {k[2:]: v for k, v in state.items() if k.startswith("w_")}


# --- Training ---------------------------------------------------------------------------------

def learning_rate(step, steps, peak, warmup=500):
    """Linear warm-up, then a cosine down to 1% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * min(1.0, t))))


def train(args):
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    log = open(run / "log.txt", "a")

    def report(line):
        print(line, flush=True)
        print(line, file=log, flush=True)

    state = load_checkpoint(run)
    if state is not None:
        if int(state["scale"]) != args.scale:
            raise SystemExit(f"{run} holds a x{int(state['scale'])} run, not x{args.scale}")
        start = int(state["step"])
        report(f"resuming {run} at step {start} of {args.steps}")
        weights = weights_of(state)
    else:
        start = 0
        if args.init:
            source = load_checkpoint(args.init)
            if source is None:
                raise SystemExit(f"--init {args.init}: no checkpoint there")
            weights = seeded_weights(weights_of(source), args.scale)
            report(f"x{args.scale} seeded from {args.init} (x{int(source['scale'])})")
        else:
            weights = initial_weights(args.scale, args.seed)
    variables = {k: tf.Variable(v) for k, v in weights.items()}
    moments = {k: [tf.Variable(state[f"m_{k}"] if state else np.zeros_like(v)),
                   tf.Variable(state[f"v_{k}"] if state else np.zeros_like(v))]
               for k, v in weights.items()}
    half = tf.constant(0.5, tf.float32)
    weights = tf.constant(loss_weights(args.scale))
    names = sorted(variables)

    @tf.function(jit_compile=args.xla)
    def step_fn(low, high, lr, t):
        with tf.GradientTape() as tape:
            out = fsrcnn(tf, low, dict(variables, half=half), args.scale)
            loss = tf.reduce_sum(tf.abs(out - high) * weights) / BATCH
        grads = tape.gradient(loss, [variables[k] for k in names])
        b1, b2, eps = 0.9, 0.999, 1e-8
        for k, g in zip(names, grads):
            m, v = moments[k]
            m.assign(b1 * m + (1 - b1) * g)
            v.assign(b2 * v + (1 - b2) * g * g)
            mhat = m / (1 - b1 ** t)
            vhat = v / (1 - b2 ** t)
            variables[k].assign_sub(lr * mhat / (tf.sqrt(vhat) + eps))
        return loss

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 1], tf.float32)])
    def infer(low):
        return fsrcnn(tf, low, dict(variables, half=half), args.scale)

    def validate(val):
        figures = [luma_psnr(infer(low[None, :, :, None].astype(np.float32) / 255.0)
                             .numpy()[0, :, :, 0], truth, args.scale) for low, truth in val]
        return float(np.mean(figures))

    pairs = [(hr, lows) for hr, lows in training_pairs(args.scale, args.degradation, args.cache)
             if min(lows[0].shape) >= PATCH[args.scale]]
    areas = np.array([low[0].size for _, low in pairs], np.float64)
    areas /= areas.sum()
    val = validation_set(args.scale)
    report(f"x{args.scale}: {len(pairs)} training images ({args.degradation}), "
           f"{len(val)} validation images; bicubic {bicubic_psnr(val, args.scale):.2f} dB")

    def checkpoint(step):
        state = {"scale": np.int64(args.scale), "step": np.int64(step)}
        for k in names:
            state[f"w_{k}"] = variables[k].numpy()
            state[f"m_{k}"], state[f"v_{k}"] = (x.numpy() for x in moments[k])
        save_checkpoint(run, state)

    started, saved, losses = time.monotonic(), time.monotonic(), []
    for step in range(start, args.steps):
        low, high = batch(pairs, areas, args.scale, args.seed, step)
        lr = learning_rate(step, args.steps, args.lr)
        losses.append(float(step_fn(low, high, tf.constant(lr, tf.float32),
                                    tf.constant(step + 1, tf.float32))))
        done = step + 1
        if done % args.val_every == 0 or done == args.steps:
            rate = (done - start) / (time.monotonic() - started)
            report(f"step {done}/{args.steps}  loss {np.mean(losses):.5f}  lr {lr:.2e}  "
                   f"val {validate(val):.2f} dB  {rate:.1f} steps/s  "
                   f"ETA {(args.steps - done) / rate / 60:.0f} min")
            losses = []
        if time.monotonic() - saved >= args.checkpoint_seconds or done == args.steps:
            checkpoint(done)
            saved = time.monotonic()
    report(f"done: {run} at step {args.steps}")


# --- Export -----------------------------------------------------------------------------------

def export(args):
    """Write the run's weights as a frozen graph in the official files' form, and the
    reference output the tests compare OpenCV's against."""
    import tensorflow as tf
    state = load_checkpoint(args.run)
    if state is None:
        raise SystemExit(f"{args.run}: no checkpoint")
    scale = int(state["scale"])
    weights = weights_of(state)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 1], name="IteratorGetNext")
        consts = {k: tf.constant(v, name=k) for k, v in weights.items()}
        consts["half"] = tf.constant(0.5, tf.float32, name="mul/y")
        y = fsrcnn(tf, x, consts, scale)
        tf.raw_ops.Transpose(x=y, perm=tf.constant([0, 3, 1, 2], name="NCHW_output/perm"),
                             name="NCHW_output")
    out = Path(args.out)
    out.write_bytes(graph.as_graph_def().SerializeToString())
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    if args.reference:
        # The trained network's own output on a held-out crop: OpenCV must reproduce it.
        name = srdata.image_names("validation")[0]
        low = srdata.luma(srdata.low_resolution(srdata.modcrop(srdata.read_bgr(name)[:96, :96],
                                                               scale), scale))
        reference = fsrcnn(tf, tf.constant(low[None, :, :, None] / 255.0, tf.float32),
                           dict({k: tf.constant(v) for k, v in weights.items()},
                                half=tf.constant(0.5)), scale).numpy()[0, :, :, 0]
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
    t.add_argument("--steps", type=int, default=40000)
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (Adam)")
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--init", help="seed the feature layers from this run (another scale)")
    t.add_argument("--degradation", choices=("clean", "mix"), default="mix")
    t.add_argument("--threads", type=int, default=os.cpu_count())
    t.add_argument("--val-every", type=int, default=1000)
    t.add_argument("--checkpoint-seconds", type=float, default=120,
                   help="how much work an interruption may lose (default 120)")
    t.add_argument("--cache", default=str(srdata.HERE / ".cache"))
    t.add_argument("--xla", action="store_true", help="compile the step with XLA")
    e = sub.add_parser("export", help="write a run's weights as a .pb")
    e.add_argument("--run", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--reference", help="also add the network's own output to this .npz")
    args = parser.parse_args()
    (train if args.command == "train" else export)(args)


if __name__ == "__main__":
    sys.exit(main())
