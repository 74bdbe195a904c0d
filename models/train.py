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

def cache_path(cache_dir, scale, degradation):
    return Path(cache_dir) / f"train_x{scale}_{degradation}_8bit.npz"


def training_pairs(scale, degradation, cache_dir):
    """[(high-resolution luma, [low-resolution luma, ...])], all 8-bit as upscale.py sees
    pictures, for every training image: the clean low-resolution image first, then its
    compressed one (mix only). Cached in cache_dir, since the x264 round trips take a
    minute; models/carry.py moves a cache to a machine without the images."""
    cache = cache_path(cache_dir, scale, degradation)
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        count = int(data["count"])
        return [(data[f"hr{i}"], [data[f"lr{i}_{j}"] for j in range(int(data[f"n{i}"]))])
                for i in range(count)]
    names = srdata.image_names("train")
    pairs, started = [], time.monotonic()
    ffmpeg = srdata.find_ffmpeg() if degradation == "mix" else None
    for i, name in enumerate(names):
        hr = srdata.modcrop(srdata.read_bgr(name), 2 * scale)
        lows = [srdata.low_resolution(hr, scale)]
        if degradation == "mix":
            crf = 18 + i % 6                          # 18..23, spread over the images
            lows.append(srdata.h264_frames([lows[0]], crf, ffmpeg)[0])
        pairs.append((srdata.luma(hr), [srdata.luma(low) for low in lows]))
        srdata.progress(i + 1, len(names), started, f"x{scale} {degradation} data")
    save_pairs(cache, pairs)
    return pairs


def save_pairs(path, pairs):
    """Write training_pairs()'s list as its cache file (complete or not at all)."""
    arrays = {"count": np.int64(len(pairs))}
    for k, (hr, lows) in enumerate(pairs):
        arrays.update({f"hr{k}": hr, f"n{k}": np.int64(len(lows))})
        arrays.update({f"lr{k}_{j}": y for j, y in enumerate(lows)})
    save_npz(path, arrays)


def batch(pairs, areas, scale, seed, step, size=BATCH):
    """Batch `step`: (low-resolution patches, high-resolution patches), NHWC float32 in
    [0, 1]. It depends on (seed, step, size) alone, so a resumed run draws what an
    uninterrupted one would."""
    rng = np.random.default_rng([seed, step])
    p = PATCH[scale]
    picks = rng.choice(len(pairs), size, p=areas)
    variant = rng.random(size)
    where = rng.random((size, 2))
    turns, flips = rng.integers(4, size=size), rng.integers(2, size=size)
    lows, highs = [], []
    for i, k in enumerate(picks):
        hr, variants = pairs[k]
        low = variants[int(variant[i] * len(variants))]
        y = int(where[i, 0] * (low.shape[0] - p + 1))
        x = int(where[i, 1] * (low.shape[1] - p + 1))
        lo = np.rot90(low[y:y + p, x:x + p], turns[i])
        hi = np.rot90(hr[y * scale:(y + p) * scale, x * scale:(x + p) * scale], turns[i])
        if flips[i]:
            lo, hi = lo[:, ::-1], hi[:, ::-1]
        lows.append(lo)
        highs.append(hi)
    return (np.stack(lows)[..., None].astype(np.float32) / 255,
            np.stack(highs)[..., None].astype(np.float32) / 255)


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
    """Write arrays to path complete or not at all (an interrupted run leaves the old file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
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
# Both take the same weights and Adam moments (numpy, the checkpoint's form), take the same
# batches and do the same arithmetic: a run may be started with one and resumed with the
# other. TensorFlow is the reference, on the CPU; PyTorch is there for a GPU machine, whose
# image may have no TensorFlow.

ADAM = (0.9, 0.999, 1e-8)                 # beta1, beta2, epsilon


class TensorflowSteps:
    def __init__(self, family, scale, weights, moments, pixel_weights, args):
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.experimental.enable_op_determinism()
        self.names = sorted(weights)
        variables = {k: tf.Variable(v) for k, v in weights.items()}
        self.variables, self.moments = variables, {
            k: [tf.Variable(m), tf.Variable(v)] for k, (m, v) in moments.items()}
        fixed = {k: tf.constant(v) for k, v in nets.constants(scale).items()}
        pixel_weights = tf.constant(pixel_weights)

        def network(low):
            w = nets.folded(family, variables, scale, einsum=tf.einsum, constant=tf.constant)
            return nets.forward(tf, family, low, dict(w, **fixed), scale)

        @tf.function(jit_compile=args.xla)
        def step(low, high, lr, t):
            with tf.GradientTape() as tape:
                out = network(low)
                loss = tf.reduce_sum(tf.abs(out - high) * pixel_weights) / low.shape[0]
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
        self.where = "tensorflow, CPU"

    def step(self, low, high, lr, t):
        """One Adam step on a batch; the loss, as something float() reads."""
        return self._step(low, high, self.tf.constant(lr, self.tf.float32),
                          self.tf.constant(t, self.tf.float32))

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
    def __init__(self, family, scale, weights, moments, pixel_weights, args):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        import torch
        torch.set_num_threads(args.threads)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        gpu = self.device.type == "cuda"
        self.where = f"torch, {torch.cuda.get_device_name() if gpu else 'CPU'}"
        self.names = sorted(weights)
        self.params = [torch.tensor(weights[k], device=self.device, requires_grad=True)
                       for k in self.names]
        self.m = [torch.tensor(moments[k][0], device=self.device) for k in self.names]
        self.v = [torch.tensor(moments[k][1], device=self.device) for k in self.names]
        self.pixel_weights = torch.tensor(pixel_weights, device=self.device)
        self.fixed = {k: torch.tensor(v, device=self.device)
                      for k, v in nets.constants(scale).items()}
        self.family, self.scale, self.ops = family, scale, TorchOps(torch)
        self.identities = {}

    def constant(self, array):
        key = (array.shape, array.tobytes())
        if key not in self.identities:
            self.identities[key] = self.torch.tensor(array, device=self.device)
        return self.identities[key]

    def network(self, low):
        w = nets.folded(self.family, dict(zip(self.names, self.params)), self.scale,
                        einsum=self.torch.einsum, constant=self.constant)
        return nets.forward(self.ops, self.family, low, dict(w, **self.fixed), self.scale)

    def tensor(self, array):
        return self.torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def step(self, low, high, lr, t):
        torch = self.torch
        low, high = self.tensor(low), self.tensor(high)
        loss = (torch.abs(self.network(low) - high) * self.pixel_weights).sum() / low.shape[0]
        grads = torch.autograd.grad(loss, self.params)
        b1, b2, eps = ADAM
        with torch.no_grad():           # TensorflowSteps' Adam, as the same formula
            torch._foreach_mul_(self.m, b1)
            torch._foreach_add_(self.m, grads, alpha=1 - b1)
            torch._foreach_mul_(self.v, b2)
            torch._foreach_addcmul_(self.v, grads, grads, value=1 - b2)
            denominators = torch._foreach_sqrt(torch._foreach_div(self.v, 1 - b2 ** t))
            torch._foreach_add_(denominators, eps)
            torch._foreach_addcdiv_(self.params, self.m, denominators,
                                    value=-lr / (1 - b1 ** t))
        return loss.detach()            # read at the next report: no wait for the GPU

    def infer(self, low):
        with self.torch.no_grad():
            return self.network(self.tensor(low)).cpu().numpy()[0, :, :, 0]

    def state(self):
        return {k: tuple(x.detach().cpu().numpy() for x in (p, m, v))
                for k, p, m, v in zip(self.names, self.params, self.m, self.v)}


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
    steps = BACKENDS[args.backend](family, args.scale, weights, moments,
                                   loss_weights(family, args.scale), args)

    def validate(val):
        figures = [luma_psnr(steps.infer(low[None, :, :, None].astype(np.float32) / 255.0),
                             truth, args.scale) for low, truth in val]
        return float(np.mean(figures))

    pairs = [(hr, lows) for hr, lows in training_pairs(args.scale, args.degradation, args.cache)
             if min(lows[0].shape) >= PATCH[args.scale]]
    areas = np.array([low[0].size for _, low in pairs], np.float64)
    areas /= areas.sum()
    val = validation_set(args.scale, args.cache)
    report(f"x{args.scale} {family.name} ({family.multiply_adds(args.scale)} multiply-adds a "
           f"pixel): {len(pairs)} training images ({args.degradation}), {len(val)} "
           f"validation images; bicubic {bicubic_psnr(val, args.scale):.2f} dB; "
           f"{steps.where}, batch {args.batch}")

    def checkpoint(step):
        state = {"family": np.str_(family.name), "scale": np.int64(args.scale),
                 "step": np.int64(step)}
        for k, (w, m, v) in steps.state().items():
            state[f"w_{k}"], state[f"m_{k}"], state[f"v_{k}"] = w, m, v
        save_checkpoint(run, state)

    started, saved, losses = time.monotonic(), time.monotonic(), []
    stop = min(args.steps, args.stop_at or args.steps)
    for step in range(start, stop):
        low, high = batch(pairs, areas, args.scale, args.seed, step, args.batch)
        lr = learning_rate(step, args.steps, args.lr)
        losses.append(steps.step(low, high, lr, step + 1))
        done = step + 1
        if done % args.val_every == 0 or done == args.steps:
            loss = np.mean([float(x) for x in losses])
            rate = (done - start) / (time.monotonic() - started)
            report(f"step {done}/{args.steps}  loss {loss:.5f}  lr {lr:.2e}  "
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
    t.add_argument("--init-pb", help="start from an exported file of this family and scale "
                   "(a shipped one, or an official FSRCNN file)")
    t.add_argument("--degradation", choices=("clean", "mix"), default="mix")
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
    e = sub.add_parser("export", help="write a run's weights as a .pb")
    e.add_argument("--run", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--reference", help="also add the network's own output to this .npz")
    args = parser.parse_args()
    (train if args.command == "train" else export)(args)


if __name__ == "__main__":
    sys.exit(main())
