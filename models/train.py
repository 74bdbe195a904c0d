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

import nets
import srdata

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PATCH = {2: 36, 3: 32, 4: 28}             # low-resolution patch side per scale
BATCH = 32
# Near a patch's edge the network sees the convolutions' zero padding, as it does at a
# picture's edge; but in a patch that margin (the network's reach) is most of the pixels, in
# a picture a few percent. The loss weighs the margin down so that both are learnt in about
# the proportion a picture has them.
MARGIN_WEIGHT = 0.2


def loss_weights(family, scale):
    """Per-pixel loss weights of a high-resolution patch (summing to 1)."""
    side, margin = PATCH[scale] * scale, family.reach(scale) * scale
    w = np.full((side, side), MARGIN_WEIGHT, np.float32)
    w[margin:-margin, margin:-margin] = 1.0
    return (w / w.sum())[None, :, :, None]


def pb_weights(path):
    """{name: array} of the Const nodes of a frozen graph this script exported: an FSRCNN
    file (ours or the official one) to go on training from."""
    import tensorflow as tf
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(Path(path).read_bytes())
    names = nets.fsrcnn_shapes(4).keys()
    found = {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in graph.node
             if n.op == "Const" and n.name in names}
    if set(found) != set(names):
        raise SystemExit(f"{path}: not an FSRCNN graph (missing {sorted(set(names) - set(found))})")
    return {k: v.astype(np.float32) for k, v in found.items()}


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


def starting_weights(args, family, report):
    """The weights a new run starts from: another run's (--init; another scale is seeded
    layer by layer, the same scale goes on as it is, a narrower family is widened), a frozen
    FSRCNN file's (--init-pb), or fresh ones."""
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
        if family.plain:
            raise SystemExit("--init-pb reads FSRCNN files only")
        report(f"x{args.scale} fsrcnn from {args.init_pb}")
        return pb_weights(args.init_pb)
    return nets.initial_weights(family, args.scale, args.seed)


def train(args):
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
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
    else:
        start = 0
        weights = starting_weights(args, family, report)
    variables = {k: tf.Variable(v) for k, v in weights.items()}
    moments = {k: [tf.Variable(state[f"m_{k}"] if state else np.zeros_like(v)),
                   tf.Variable(state[f"v_{k}"] if state else np.zeros_like(v))]
               for k, v in weights.items()}
    fixed = {k: tf.constant(v) for k, v in nets.constants(args.scale).items()}
    pixel_weights = tf.constant(loss_weights(family, args.scale))
    names = sorted(variables)

    def network(low):
        folded = nets.folded(family, variables, args.scale, xp=tf)
        return nets.forward(tf, family, low, dict(folded, **fixed), args.scale)

    @tf.function(jit_compile=args.xla)
    def step_fn(low, high, lr, t):
        with tf.GradientTape() as tape:
            out = network(low)
            loss = tf.reduce_sum(tf.abs(out - high) * pixel_weights) / BATCH
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
        return network(low)

    def validate(val):
        figures = [luma_psnr(infer(low[None, :, :, None].astype(np.float32) / 255.0)
                             .numpy()[0, :, :, 0], truth, args.scale) for low, truth in val]
        return float(np.mean(figures))

    pairs = [(hr, lows) for hr, lows in training_pairs(args.scale, args.degradation, args.cache)
             if min(lows[0].shape) >= PATCH[args.scale]]
    areas = np.array([low[0].size for _, low in pairs], np.float64)
    areas /= areas.sum()
    val = validation_set(args.scale)
    report(f"x{args.scale} {family.name} ({family.multiply_adds(args.scale)} multiply-adds a "
           f"pixel): {len(pairs)} training images ({args.degradation}), {len(val)} "
           f"validation images; bicubic {bicubic_psnr(val, args.scale):.2f} dB")

    def checkpoint(step):
        state = {"family": np.str_(family.name), "scale": np.int64(args.scale),
                 "step": np.int64(step)}
        for k in names:
            state[f"w_{k}"] = variables[k].numpy()
            state[f"m_{k}"], state[f"v_{k}"] = (x.numpy() for x in moments[k])
        save_checkpoint(run, state)

    started, saved, losses = time.monotonic(), time.monotonic(), []
    stop = min(args.steps, args.stop_at or args.steps)
    for step in range(start, stop):
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
    t.add_argument("--init-pb", help="start from a frozen FSRCNN file (ours or official)")
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
