"""The rewritten luma graphs (fast_graph): same function as the official files, fewer passes.
Checked on the real model files and on a real frame decoded from an ffmpeg clip."""
import cv2
import numpy as np
import pytest

import upscale
from conftest import make_clip, needs_tensorflow

LUMA_FILES = [f"{name}_x{scale}.pb" for name in ("FSRCNN", "FSRCNN-small", "ESPCN")
              for scale in (2, 3, 4)]
ALL_FILES = LUMA_FILES + [f"LapSRN_x{scale}.pb" for scale in (2, 4, 8)]


@pytest.fixture(scope="module")
def luma_blob(ffmpeg, tmp_path_factory):
    """The luma plane of a real decoded frame (odd-sized, so no tiling trick hides)."""
    clip = make_clip(ffmpeg, tmp_path_factory.mktemp("fast") / "clip.mp4", size="96x72",
                     audio=False, vfilter="format=yuv444p,crop=91:67",
                     vcodec=("-c:v", "libx264", "-pix_fmt", "yuv444p"))
    cap = cv2.VideoCapture(str(clip))
    ok, frame = cap.read()
    cap.release()
    assert ok
    y = cv2.cvtColor(frame, cv2.COLOR_BGR2YCrCb)[:, :, 0]
    return cv2.dnn.blobFromImage(y, 1.0 / 255.0)


def forward(net, blob):
    net.setInput(blob)
    return net.forward()


@pytest.mark.parametrize("name", ALL_FILES)
def test_protobuf_reader_and_writer_round_trip_every_model_file_exactly(model_dir, name):
    data = (model_dir / name).read_bytes()
    assert upscale.protobuf_message(upscale.protobuf_fields(data)) == data


@pytest.mark.parametrize("name", LUMA_FILES)
def test_fsrcnn_and_espcn_files_get_a_rewritten_graph_ending_before_depth_to_space(
        model_dir, name):
    fast = upscale.checked_fast_graph(str(model_dir / name))
    assert fast.graph is not None
    assert fast.block == int(name[-4])
    assert fast.tanh == name.startswith("ESPCN")


@needs_tensorflow
@pytest.mark.parametrize("engine", ["classic", "new"])
@pytest.mark.parametrize("name", ALL_FILES)
def test_rewritten_graph_computes_what_the_official_graph_computes(model_dir, luma_blob,
                                                                   name, engine):
    upscale.register_superres_layers()
    graph = (model_dir / name).read_bytes()
    fast = upscale.checked_fast_graph(str(model_dir / name), engine)
    official = forward(upscale.read_network(graph), luma_blob)[0, 0]
    rewritten = upscale.fast_picture(fast, upscale.fast_planes(
        fast, forward(upscale.read_network(fast.graph, engine), luma_blob)))
    scale = int(name[-4])
    assert rewritten.shape == official.shape == (67 * scale, 91 * scale)
    assert np.abs(rewritten - official).max() <= 1e-5


@needs_tensorflow
def test_rewritten_fsrcnn_runs_fewer_layers(model_dir):
    upscale.register_superres_layers()
    path = model_dir / "FSRCNN_x4.pb"
    official = upscale.read_network(path).getLayerNames()
    rewritten = upscale.read_network(upscale.checked_fast_graph(str(path)).graph)
    names = rewritten.getLayerNames()
    assert not any(n.startswith(("Abs", "sub", "mul", "DepthToSpace")) for n in names)
    assert len(names) < len(official) // 2


@needs_tensorflow
@pytest.mark.parametrize("name", ["LapSRN_x2.pb", "LapSRN_x8.pb"])
def test_lapsrn_leaky_relus_are_fused_and_its_depth_to_space_layers_kept(model_dir, name):
    upscale.register_superres_layers()
    fast = upscale.checked_fast_graph(str(model_dir / name))
    assert fast.block == 1 and not fast.tanh
    official = upscale.read_network(model_dir / name)
    rewritten = upscale.read_network(fast.graph)
    types = [rewritten.getLayer(n).type for n in rewritten.getLayerNames()]
    assert len(types) < len(official.getLayerNames()) // 2
    assert types.count("DepthToSpace") == [official.getLayer(n).type for n in
                                           official.getLayerNames()].count("DepthToSpace")


def test_unparsable_model_gets_no_rewrite(tmp_path):
    bogus = tmp_path / "bogus.pb"
    bogus.write_bytes(b"\x0a\xff\xff\xff\xff\x0f not a graph")
    assert upscale.checked_fast_graph(str(bogus)) == upscale.FastGraph()


@pytest.mark.parametrize("block", [2, 3, 4])
def test_depth_to_space_follows_tensorflow_order(block):
    planes = np.arange(block * block * 5 * 7, dtype=np.uint8).reshape(block * block, 5, 7)
    picture = upscale.depth_to_space(planes, block)
    for dy in range(block):
        for dx in range(block):
            assert np.array_equal(picture[dy::block, dx::block], planes[dy * block + dx])
