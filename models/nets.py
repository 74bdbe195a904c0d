"""The networks models/train.py trains, one table row a family, and their frozen-graph form.

Every family reads luma in [0, 1] (NHWC) and writes luma at scale times the size, through
operations OpenCV's TensorFlow importer and upscale.py's graph rewrite both know: Conv2D, an
Add for each bias, PReLU spelled as FSRCNN's official files spell it (relu(x) + alpha *
(x - |x|) * 0.5), Add, DepthToSpace and a final Transpose to NCHW.

- fsrcnn: exactly the official FSRCNN files' network (d=56, s=12, m=4), node names included.
- fast, hq: plain networks of the ECBSR/SESR kind. A 5x5 convolution to C channels, M 3x3
  convolutions C -> C each with PReLU, a long residual from the first layer's output, a 3x3
  convolution to scale**2 planes, and the input itself added to every plane (so the network
  learns the difference from a nearest-neighbour enlargement) before DepthToSpace.

Training-time re-parameterization (SESR's collapsible linear blocks, RepVGG's idea): in
training, each convolution of the plain families is a kxk convolution to E channels followed
by a 1x1 back to C, plus an identity in the C -> C layers. That is one linear map, so the
step folds the factors into a single kxk kernel before convolving: training costs what the
exported network costs per pixel, while the optimiser works on the over-parameterized
factors. The export writes only the folded kernels.
"""

from dataclasses import dataclass

import numpy as np

FSRCNN_D, FSRCNN_S, FSRCNN_M = 56, 12, 4        # FSRCNN(d, s, m) of the official files


@dataclass(frozen=True)
class Family:
    """One kind of network: its shape per scale and the data it is trained on."""
    name: str
    plain: bool                 # a plain network (collapsed linear blocks), else FSRCNN
    channels: int = 0           # C
    middle: dict = None         # M, the number of 3x3 C -> C layers, per scale
    expand: int = 0             # E, the width of each training-time linear block
    head: int = 5               # kernel side of the first layer

    def layers(self, scale):
        """[(kernel side, channels in, channels out, activation)] of the exported network."""
        if not self.plain:
            d, s = FSRCNN_D, FSRCNN_S
            return ([(5, 1, d, True), (1, d, s, True)] + [(3, s, s, True)] * FSRCNN_M +
                    [(1, s, d, True), (1, d, scale * scale, False)])
        c = self.channels
        return ([(self.head, 1, c, True)] + [(3, c, c, True)] * self.middle[scale] +
                [(3, c, scale * scale, False)])

    def reach(self, scale):
        """Input pixels each output pixel sees on every side."""
        return sum(k // 2 for k, *_ in self.layers(scale))

    def multiply_adds(self, scale):
        """Multiply-adds per input pixel of the exported network (the input residual of the
        plain families included)."""
        total = sum(k * k * cin * cout for k, cin, cout, _ in self.layers(scale))
        return total + (scale * scale if self.plain else 0)


# Sizes chosen against FSRCNN's cost per frame (multiply_adds): fast at most 1.3x at every
# scale (x2 1.25x, x3 1.29x, x4 1.09x: a fifth layer would put x4 at 1.36x), hq at most 8x.
FAMILIES = {f.name: f for f in (
    Family("fsrcnn", plain=False),
    Family("fast", plain=True, channels=16, middle={2: 4, 3: 4, 4: 3}, expand=64),
    Family("hq", plain=True, channels=32, middle={2: 6, 3: 6, 4: 6}, expand=128),
    # fast without the training-time blocks (expand 0: each kernel trained as it is), kept
    # for the comparison in models/README.md.
    Family("fast-plain", plain=True, channels=16, middle={2: 4, 3: 4, 4: 3}, expand=0),
)}


# --- Weights ----------------------------------------------------------------------------------

def fsrcnn_shapes(scale):
    """{name: shape} of FSRCNN's weights, named as in the official graphs (HWIO filters)."""
    shapes = {}
    for i, (k, cin, cout, act) in enumerate(FAMILIES["fsrcnn"].layers(scale), start=1):
        shapes[f"f{i}"] = (k, k, cin, cout)
        shapes[f"b{i}"] = (cout,) if act else (1,)    # the last bias follows DepthToSpace
        if act:
            shapes[f"alpha{i}"] = (cout,)
    return shapes


def training_shapes(family, scale):
    """{name: shape} of the weights the optimiser works on."""
    if not family.plain:
        return fsrcnn_shapes(scale)
    shapes = {}
    for i, (k, cin, cout, act) in enumerate(family.layers(scale)):
        if family.expand:
            shapes.update({f"a{i}": (k, k, cin, family.expand), f"p{i}": (family.expand, cout)})
        else:
            shapes[f"a{i}"] = (k, k, cin, cout)
        shapes[f"b{i}"] = (cout,)
        if act:
            shapes[f"alpha{i}"] = (cout,)
    return shapes


def initial_weights(family, scale, seed):
    """Weights to start from: He-scaled filters (the folded kernel of a linear block has
    He's variance), PReLU slopes of 0.25, zero biases, and a last layer near zero so that
    the untrained network is close to its starting point (nearest neighbour, or FSRCNN's
    flat output)."""
    rng = np.random.default_rng([seed, 0xF5])
    weights = {}
    last = len(family.layers(scale))          # FSRCNN's f8; the plain ones' p{last - 1}
    for name, shape in training_shapes(family, scale).items():
        if name.startswith("alpha"):
            weights[name] = np.full(shape, 0.25, np.float32)
        elif name.startswith("b"):
            weights[name] = np.zeros(shape, np.float32)
        elif name.startswith("f"):                                   # FSRCNN
            std = 0.001 if name == f"f{last}" else np.sqrt(2.0 / np.prod(shape[:3]))
            weights[name] = rng.normal(0, std, shape).astype(np.float32)
        elif name.startswith("a") and not family.expand:             # plain kernel
            std = np.sqrt(2.0 / np.prod(shape[:3])) * (0.01 if name == f"a{last - 1}" else 1)
            weights[name] = rng.normal(0, std, shape).astype(np.float32)
        elif name.startswith("a"):                                   # kxk factor
            weights[name] = rng.normal(0, np.sqrt(1.0 / np.prod(shape[:3])),
                                       shape).astype(np.float32)
        else:                                                        # 1x1 factor
            std = np.sqrt(2.0 / shape[0]) * (0.01 if name == f"p{last - 1}" else 1.0)
            weights[name] = rng.normal(0, std, shape).astype(np.float32)
    return weights


def seeded_weights(family, source, scale):
    """Weights for `scale` from another scale's run of the same family: every layer but the
    last as it is, and each output plane from the source plane of the nearest sub-pixel
    position (the FSRCNN paper's transfer between scales). Layers the source lacks keep
    their fresh initial values."""
    weights = initial_weights(family, scale, 0)
    last_names = {"f8"} if not family.plain else \
        {f"p{len(family.layers(scale)) - 1}", f"a{len(family.layers(scale)) - 1}",
         f"b{len(family.layers(scale)) - 1}"}
    for name, value in source.items():
        if name in weights and name not in last_names and value.shape == weights[name].shape:
            weights[name] = value.copy()
    # The last layer: output planes by sub-pixel position.
    out_name = "f8" if not family.plain else f"p{len(family.layers(scale)) - 1}"
    src_name = "f8" if not family.plain else max(
        (n for n in source if n.startswith("p")), key=lambda n: int(n[1:]))
    old = int(round(np.sqrt(source[src_name].shape[-1])))
    phase = [min(old - 1, int((i + 0.5) / scale * old)) for i in range(scale)]
    planes = [source[src_name][..., phase[r] * old + phase[c]] for r in range(scale)
              for c in range(scale)]
    weights[out_name] = np.stack(planes, axis=-1).astype(np.float32)
    if family.plain:
        last = len(family.layers(scale)) - 1
        src_last = int(src_name[1:])
        weights[f"a{last}"] = source[f"a{src_last}"].copy()
        bias = source[f"b{src_last}"]
        weights[f"b{last}"] = np.array([bias[phase[r] * old + phase[c]] for r in range(scale)
                                        for c in range(scale)], np.float32)
    return weights


def widened_weights(family, source_family, source, scale, seed):
    """Training weights of `family` that compute exactly what a trained, narrower and
    shallower plain network of the same scale computes (Net2Net's function-preserving
    widening), so that hq starts where fast ended. Each layer's folded kernel holds the
    source's in its first channels; new channels get fresh random inputs and no outputs
    into the old ones (their outgoing weights start at zero and are trained); the extra
    middle layers are identities (kernel I, PReLU slope 1)."""
    small, big = source_family.layers(scale), family.layers(scale)
    if not (family.plain and source_family.plain and family.expand
            and source_family.channels <= family.channels and len(small) <= len(big)):
        raise ValueError(f"{source_family.name} does not fit inside {family.name}")
    src = folded(source_family, source, scale)
    start = folded(family, initial_weights(family, scale, seed), scale)
    target = {}
    for i, (k, cin, cout, act) in enumerate(big):
        kernel = np.array(start[f"w{i}"])
        bias = np.zeros(cout, np.float32)
        alpha = np.full(cout, 0.25, np.float32)
        j = len(small) - 1 if i == len(big) - 1 else i if i < len(small) - 1 else None
        if j is None:                                        # an extra middle layer
            kernel = np.zeros_like(kernel)
            kernel[k // 2, k // 2] = np.eye(cin, dtype=np.float32)
            alpha[:] = 1.0
        else:
            ks, ci, co, _ = small[j]
            if ks != k:
                raise ValueError(f"layer {i}: kernel {ks} does not fit {k}")
            kernel[:, :, :ci, :co] = src[f"w{j}"]
            kernel[:, :, ci:, :co] = 0.0
            bias[:co] = src[f"b{j}"]
            if act:
                alpha[:co] = src[f"alpha{j}"]
        target.update({f"w{i}": kernel, f"b{i}": bias})
        if act:
            target[f"alpha{i}"] = alpha
    return factored_weights(family, target, scale, seed)


def factored_weights(family, target, scale, seed):
    """Training weights of a plain family whose folded() form is exactly `target` (folded
    weights: an exported file's, or a widened network's). Each kernel T is written as
    factors with the 1x1 factor [I; 0]; the kxk factor's remaining columns keep fresh
    random values, which the optimiser brings in once their 1x1 rows leave zero."""
    fresh = initial_weights(family, scale, seed)
    weights = {}
    for i, (k, cin, cout, act) in enumerate(family.layers(scale)):
        kernel = np.array(target[f"w{i}"], np.float32)
        if family.expand:
            if act and cin == cout:
                kernel[k // 2, k // 2] -= np.eye(cin, dtype=np.float32)  # folded() adds it
            a = fresh[f"a{i}"].copy()
            a[..., :cout] = kernel
            p = np.zeros((family.expand, cout), np.float32)
            p[:cout, :cout] = np.eye(cout, dtype=np.float32)
            weights.update({f"a{i}": a, f"p{i}": p})
        else:
            weights[f"a{i}"] = kernel
        weights[f"b{i}"] = np.array(target[f"b{i}"], np.float32)
        if act:
            weights[f"alpha{i}"] = np.array(target[f"alpha{i}"], np.float32)
    return weights


def folded(family, weights, scale, einsum=np.einsum, constant=np.asarray):
    """{name: value} of the exported network's weights: for the plain families each linear
    block's factors multiplied into one kernel (kxk E, then 1x1 to C), plus an identity at
    the centre tap of every C -> C layer; FSRCNN's as they are. einsum and constant are the
    training framework's (weights are its tensors), so training folds inside the step."""
    if not family.plain:
        return dict(weights)
    out = {}
    for i, (k, cin, cout, act) in enumerate(family.layers(scale)):
        if not family.expand:
            kernel = weights[f"a{i}"]
        else:
            kernel = einsum("hwie,eo->hwio", weights[f"a{i}"], weights[f"p{i}"])
        if act and cin == cout and family.expand:
            eye = np.zeros((k, k, cin, cout), np.float32)
            eye[k // 2, k // 2] = np.eye(cin, dtype=np.float32)
            kernel = kernel + constant(eye)
        out[f"w{i}"] = kernel
        out[f"b{i}"] = weights[f"b{i}"]
        if act:
            out[f"alpha{i}"] = weights[f"alpha{i}"]
    return out


# --- The forward pass, in the official graphs' operations ----------------------------------

class Namer:
    """TensorFlow's own numbering of repeated node names: add, add_1, add_2, ..."""

    def __init__(self):
        self.counts = {}

    def __call__(self, base):
        n = self.counts.get(base, 0)
        self.counts[base] = n + 1
        return base if n == 0 else f"{base}_{n}"


def prelu(ops, h, alpha, half, name):
    """PReLU as the official FSRCNN graphs spell it, which upscale.py fuses back into one."""
    absolute = ops.Abs(x=h, name=name("Abs"))
    sub = ops.Sub(x=h, y=absolute, name=name("sub"))
    scaled = ops.Mul(x=alpha, y=sub, name=name("mul"))
    halved = ops.Mul(x=scaled, y=half, name=name("mul"))
    relu = ops.Relu(features=h, name=name("Relu"))
    return ops.Add(x=relu, y=halved, name=name("add"))


def forward(tf, family, x, w, scale):
    """The network on NHWC luma x; w holds the folded weights (folded()) and "half" (0.5),
    and, for the plain families, "ones" (1x1x1xscale**2) for the input residual."""
    ops, name = tf.raw_ops, Namer()
    one = [1, 1, 1, 1]
    if not family.plain:
        h = x
        for i in range(1, 8):
            h = ops.Conv2D(input=h, filter=w[f"f{i}"], strides=one, padding="SAME",
                           name=f"conv{i}")
            h = ops.Add(x=h, y=w[f"b{i}"], name=name("add"))
            h = prelu(ops, h, w[f"alpha{i}"], w["half"], name)
        h = ops.Conv2D(input=h, filter=w["f8"], strides=one, padding="SAME", name="conv8")
        h = ops.DepthToSpace(input=h, block_size=scale, name="DepthToSpace")
        return ops.BiasAdd(value=h, bias=w["b8"], name="NHWC_output")
    layers = family.layers(scale)
    h, head = x, None
    for i, (k, cin, cout, act) in enumerate(layers):
        if i == len(layers) - 1:
            h = ops.Add(x=h, y=head, name=name("add"))               # the long residual
        h = ops.Conv2D(input=h, filter=w[f"w{i}"], strides=one, padding="SAME",
                       name=name("conv"))
        h = ops.Add(x=h, y=w[f"b{i}"], name=name("add"))
        if act:
            h = prelu(ops, h, w[f"alpha{i}"], w["half"], name)
        if i == 0:
            head = h
    nearest = ops.Conv2D(input=x, filter=w["ones"], strides=one, padding="SAME",
                         name=name("conv"))
    h = ops.Add(x=h, y=nearest, name=name("add"))
    return ops.DepthToSpace(input=h, block_size=scale, name="NHWC_output")


def constants(scale):
    """The fixed tensors forward() needs besides the weights."""
    return {"half": np.float32(0.5), "ones": np.ones((1, 1, 1, scale * scale), np.float32)}
