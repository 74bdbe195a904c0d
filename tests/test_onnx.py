"""Our networks and OpenCV's FSRCNN and ESPCN as ONNX models (onnx_model), which is how
they run on OpenCV 5.1 and later, whose DNN module reads no TensorFlow graphs. Checked here
against the original TensorFlow graphs on an OpenCV that reads both (4.14, 5.0)."""
import cv2
import numpy as np
import pytest

import upscale
from conftest import model_file

LUMA = [(name, scale) for name in ("fast", "hq", "fsrcnn", "fsrcnn-opencv", "fsrcnn-small",
                                   "espcn") for scale in (2, 3, 4)]
needs_tensorflow = pytest.mark.skipif(
    not upscale.reads_tensorflow(), reason=f"OpenCV {cv2.__version__} reads no TensorFlow "
    "graphs to compare with (the CI's OpenCV does)")


@pytest.fixture(scope="module")
def luma_blob():
    """An odd-sized luma blob with edges and flat parts."""
    picture = np.zeros((61, 83), np.float32)
    picture[10:50, 20:70] = 0.8
    picture += np.random.default_rng(7).random(picture.shape, np.float32) * 0.2
    return picture[None, None]


def forward(net, blob):
    net.setInput(blob)
    return net.forward()


def tensorflow_picture(path, blob):
    upscale.register_superres_layers()
    return forward(upscale.read_network(path), blob)[0, 0]


@needs_tensorflow
@pytest.mark.parametrize("name,scale", LUMA)
def test_onnx_model_computes_what_the_tensorflow_graph_computes(luma_blob, name, scale):
    path = model_file(name, scale)
    fast = upscale.fast_graph(path.read_bytes())
    model = upscale.onnx_model(fast.graph)
    planes = forward(upscale.read_network(model, onnx=True), luma_blob)
    picture = upscale.fast_picture(fast, upscale.fast_planes(fast, planes))
    expected = tensorflow_picture(path, luma_blob)
    assert picture.shape == expected.shape == (61 * scale, 83 * scale)
    assert np.abs(picture - expected).max() <= 5e-5


@needs_tensorflow
@pytest.mark.parametrize("name,scale", [("fast", 3), ("espcn", 4), ("fsrcnn-small", 2)])
def test_whole_onnx_model_ends_in_the_picture_itself(luma_blob, name, scale):
    # tanh (ESPCN) and DepthToSpace inside the model, as DnnSuperResImpl wants its output
    path = model_file(name, scale)
    fast = upscale.fast_graph(path.read_bytes())
    picture = forward(upscale.read_network(upscale.onnx_model(fast.graph, fast), onnx=True),
                      luma_blob)
    assert picture.shape == (1, 1, 61 * scale, 83 * scale)
    assert np.abs(picture[0, 0] - tensorflow_picture(path, luma_blob)).max() <= 5e-5


@pytest.mark.parametrize("name,scale", [("fast", 4), ("hq", 2), ("espcn", 3)])
def test_network_upscaler_on_onnx_gives_the_frames_of_the_tensorflow_graph(name, scale):
    frame = np.random.default_rng(scale).integers(0, 256, (45, 62, 3), np.uint8)
    frame[10:30, 5:40] = (200, 60, 90)
    method, path = upscale.METHODS[name], model_file(name, scale)
    onnx = upscale.NetworkUpscaler(method, scale, path, onnx=True)
    assert onnx.fast.onnx
    ours = onnx.upscale(frame)
    assert ours.shape == (45 * scale, 62 * scale, 3)
    if upscale.reads_tensorflow():
        tensorflow = upscale.NetworkUpscaler(method, scale, path, onnx=False)
        assert not tensorflow.fast.onnx
        # float rounding may tip a pixel to the next level, no more
        assert np.abs(ours.astype(int) - tensorflow.upscale(frame)).max() <= 1


def test_a_clone_of_an_onnx_network_runs_onnx_too():
    upscaler = upscale.NetworkUpscaler(upscale.METHODS["fast"], 2, model_file("fast", 2),
                                       onnx=True)
    assert all(copy.fast.onnx for copy in upscaler.copies(2))


@pytest.mark.parametrize("name,scale", [("lapsrn", 2), ("lapsrn", 8)])
def test_lapsrn_graph_is_not_translated(name, scale):
    fast = upscale.fast_graph(model_file(name, scale).read_bytes())
    assert upscale.onnx_model(fast.graph) is None
    assert upscale.checked_fast_graph(str(model_file(name, scale)), onnx=True) == \
        upscale.FastGraph()


@pytest.mark.parametrize("name,scale", LUMA + [("lapsrn", 4)])
def test_methods_table_says_which_networks_translate(name, scale):
    fast = upscale.fast_graph(model_file(name, scale).read_bytes())
    assert (upscale.onnx_model(fast.graph) is not None) == upscale.METHODS[name].onnx


def test_edsr_is_not_marked_as_translating():
    # its graph (BGR, mean removed, dozens of residual blocks) is not a rewritten luma graph
    assert not upscale.METHODS["edsr"].onnx


def test_onnx_model_declares_its_operator_set_and_one_input():
    fast = upscale.fast_graph(model_file("fast", 2).read_bytes())
    model = upscale.protobuf_fields(upscale.onnx_model(fast.graph))
    fields = {number: value for number, _, value in model}
    assert fields[upscale.ONNX_MODEL_IR_VERSION] == upscale.ONNX_IR
    opset = upscale.protobuf_fields(fields[upscale.ONNX_MODEL_OPSET])
    assert (upscale.ONNX_OPSET_VERSION, 0, upscale.ONNX_OPSET) in opset
    graph = upscale.protobuf_fields(fields[upscale.ONNX_MODEL_GRAPH])
    operators = [dict((n, v) for n, _, v in upscale.protobuf_fields(value))[upscale.ONNX_NODE_TYPE]
                 for number, _, value in graph if number == upscale.ONNX_GRAPH_NODE]
    assert set(operators) == {b"Conv", b"PRelu", b"Add"}
    assert [number for number, _, _ in graph].count(upscale.ONNX_GRAPH_INPUT) == 1


def test_tensorflow_same_padding_puts_the_odd_pixel_after():
    # a 4x4 kernel (even): TensorFlow pads 1 before and 2 after
    weights = np.ones((4, 4, 1, 1), np.float32)
    conv = upscale.GraphNode("conv", "Conv2D", ["x", "w"], [upscale.protobuf_message(
        [(1, 2, b"padding"), (2, 2, upscale.protobuf_message([(2, 2, b"SAME")]))])])
    nodes, _ = upscale.onnx_convolution(conv, weights, None, "conv")
    attributes = [upscale.protobuf_fields(v) for n, _, v in upscale.protobuf_fields(nodes[0])
                  if n == upscale.ONNX_NODE_ATTRIBUTES]
    pads = next([v for n, _, v in a if n == upscale.ONNX_ATTRIBUTE_INTS] for a in attributes
                if (upscale.ONNX_ATTRIBUTE_NAME, 2, b"pads") in a)
    assert pads == [1, 1, 2, 2]
