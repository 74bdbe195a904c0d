"""Our own networks (models/train.py): shipped in models/, pinned, read by DnnSuperResImpl
like the official files, reproducing the training framework's output, and each sharper than
the tier below it on images that no training step saw."""
import shutil
import sys

import cv2
import numpy as np
import pytest

import upscale
from conftest import ROOT, cli_env, make_clip, needs_tensorflow, run_cli, video_size

sys.path.insert(0, str(ROOT / "models"))
import srdata  # noqa: E402

SCALES = (2, 3, 4)
OURS = ("fast", "hq", "fsrcnn")
SHIPPED = [(name, scale) for name in OURS for scale in SCALES]
# The least gain each network must keep over the tier below it (hq over fast, fast over our
# FSRCNN, our FSRCNN over cv2's cubic) on the held-out images below (PSNR, MATLAB luma,
# border = scale). OpenCV's official FSRCNN weights gain 0.45, -0.27 and -0.24 dB over cubic
# there.
MARGIN_DB = {("fsrcnn", 2): 1.0, ("fsrcnn", 3): 0.7, ("fsrcnn", 4): 0.8,  # 1.32, 1.04, 1.20
             ("fast", 2): 0.1, ("fast", 3): 0.2, ("fast", 4): 0.15,   # 0.24, 0.29, 0.23
             ("hq", 2): 0.2, ("hq", 3): 0.3, ("hq", 4): 0.15}         # 0.36, 0.45, 0.32
BELOW = {"hq": "fast", "fast": "fsrcnn", "fsrcnn": "cubic"}
HELD_OUT = ("T91/t1.bmp", "T91/t17.bmp", "T91/t25.bmp", "BSD200/100080.png")


def shipped(name, scale):
    return upscale.DEFAULT_MODEL_DIR / upscale.METHODS[name].file_name(scale)


def reference_file(name):
    """The training framework's own output on a held-out crop, saved by `train.py export`."""
    pattern = upscale.METHODS[name].file_pattern
    return upscale.DEFAULT_MODEL_DIR / pattern.replace("_x{scale}.pb", "_reference.npz")


@pytest.mark.parametrize("name,scale", SHIPPED)
def test_shipped_file_matches_its_pinned_checksum(name, scale):
    path = shipped(name, scale)
    checksum = upscale.MODEL_CHECKSUMS[path.name]
    assert upscale.file_digest(path, checksum) == checksum


@needs_tensorflow
@pytest.mark.parametrize("name,scale", SHIPPED)
def test_shipped_file_loads_through_dnn_superres_as_fsrcnn_does(name, scale):
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(str(shipped(name, scale)))
    sr.setModel("fsrcnn", scale)
    frame = np.random.default_rng(scale).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    out = sr.upsample(frame)
    assert out.shape == (30 * scale, 41 * scale, 3)
    # and the tool's own path gives the same picture
    method = upscale.METHODS[name]
    assert cv2.PSNR(upscale.NetworkUpscaler(method, scale, shipped(name, scale)).upscale(frame),
                    out) >= 45


@needs_tensorflow
@pytest.mark.parametrize("name,scale", SHIPPED)
def test_shipped_file_is_rewritten_into_the_fast_graph(name, scale):
    method = upscale.METHODS[name]
    fast = upscale.checked_fast_graph(str(shipped(name, scale)), method.engine)
    assert fast.graph is not None and fast.block == scale and not fast.tanh
    ops = {node.op for node in upscale.graph_nodes(fast.graph)}
    assert "PReLU" in ops and not ops & {"Abs", "Relu", "DepthToSpace"}


@needs_tensorflow
@pytest.mark.parametrize("scale", SCALES)
def test_our_fsrcnn_gets_the_same_fast_graph_as_the_official_file(model_dir, scale):
    method = upscale.METHODS["fsrcnn"]
    ours = upscale.checked_fast_graph(str(shipped("fsrcnn", scale)), method.engine)
    official = upscale.checked_fast_graph(str(model_dir / f"FSRCNN_x{scale}.pb"), method.engine)
    upscale.register_superres_layers()
    layers = [upscale.read_network(f.graph, method.engine).getLayerNames()
              for f in (ours, official)]
    assert len(layers[0]) == len(layers[1])


@pytest.mark.parametrize("read_as", [pytest.param("tensorflow", marks=needs_tensorflow),
                                     "onnx"])
@pytest.mark.parametrize("name,scale", SHIPPED)
def test_exported_graph_reproduces_the_trained_network(name, scale, read_as):
    # as exported, and as translated for OpenCV 5.1 (the whole network: tanh, DepthToSpace)
    with np.load(reference_file(name)) as reference:
        low, expected = reference[f"low_x{scale}"], reference[f"out_x{scale}"]
    upscale.register_superres_layers()
    if read_as == "onnx":
        fast = upscale.fast_graph(shipped(name, scale).read_bytes())
        net = upscale.read_network(upscale.onnx_model(fast.graph, fast), onnx=True)
    else:
        net = upscale.read_network(shipped(name, scale))
    net.setInput(cv2.dnn.blobFromImage(low, 1.0 / 255.0))
    out = net.forward()[0, 0]
    assert out.shape == expected.shape == (low.shape[0] * scale, low.shape[1] * scale)
    assert np.abs(out - expected).max() <= 1e-4


def held_out_psnr(upscale_fn, scale):
    """Mean PSNR (MATLAB luma, border = scale) of upscale_fn on the held-out images."""
    figures = []
    for name in HELD_OUT:
        hr = srdata.modcrop(srdata.read_bgr(name), scale)
        figures.append(srdata.psnr_y(hr, upscale_fn(srdata.low_resolution(hr, scale)), scale))
    return float(np.mean(figures))


def tier_psnr(name, scale):
    if name == "cubic":
        return held_out_psnr(lambda low: cv2.resize(low, None, fx=scale, fy=scale,
                                                    interpolation=cv2.INTER_CUBIC), scale)
    net = upscale.NetworkUpscaler(upscale.METHODS[name], scale, shipped(name, scale))
    return held_out_psnr(net.upscale, scale)


@pytest.mark.parametrize("name,scale", SHIPPED)
def test_each_network_beats_the_tier_below_it_on_held_out_images(name, scale):
    assert all(srdata.is_validation(image) for image in HELD_OUT)
    ours, below = tier_psnr(name, scale), tier_psnr(BELOW[name], scale)
    assert ours - below >= MARGIN_DB[name, scale], (ours, below)


def test_matlab_imresize_keeps_a_flat_image_flat_and_sizes_by_the_scale():
    flat = np.full((24, 36, 3), 77, np.uint8)
    assert np.array_equal(srdata.imresize(flat, 1 / 3), np.full((8, 12, 3), 77, np.uint8))
    ramp = np.tile(np.arange(0, 240, 10, dtype=np.uint8), (8, 1))
    half = srdata.imresize(ramp, 0.5)
    assert half.shape == (4, 12)
    assert np.all(np.diff(half[:, 1:-1].astype(int), axis=1) == 20)     # linear stays linear


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_compare_makes_footage_small_exactly_as_training_does(scale):
    # --compare's downscale (OpenCV filters) and the training data's (a NumPy port of
    # MATLAB's imresize) are the same degradation, edges included
    image = np.random.default_rng(scale).integers(0, 256, (13 * scale, 17 * scale, 3),
                                                  dtype=np.uint8)
    assert np.array_equal(upscale.downscale(image, scale), srdata.imresize(image, 1 / scale))


def test_held_out_split_never_overlaps_the_training_split():
    train, held_out = srdata.image_names("train"), srdata.image_names("validation")
    assert held_out and len(train) > 8 * len(held_out)
    assert not set(train) & set(held_out)
    groups = {n.split("-")[0] for n in held_out if n.startswith("DIV2K")}
    assert not any(n.split("-")[0] in groups for n in train if n.startswith("DIV2K"))


def test_default_model_needs_no_download_and_no_model_folder(ffmpeg, tmp_path):
    clip = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.2)
    env = cli_env(UPSCALE_MODEL_DIR=None)              # and downloads go nowhere
    result = run_cli(clip, "--scale", "2", env=env)
    assert result.returncode == 0, result.stderr
    assert "download" not in result.stderr
    assert video_size(tmp_path / "clip_fast_x2.mp4") == (128, 96)


def test_official_fsrcnn_stays_selectable(ffmpeg, tmp_path):
    clip = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.2)
    result = run_cli(clip, "--model", "fsrcnn-opencv", "--scale", "2")
    assert result.returncode == 0, result.stderr
    assert video_size(tmp_path / "clip_fsrcnn-opencv_x2.mp4") == (128, 96)


def test_script_copied_without_its_models_folder_says_what_to_do(ffmpeg, tmp_path):
    lone = tmp_path / "bin"
    lone.mkdir()
    shutil.copy(ROOT / "upscale.py", lone)
    clip = make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.2)
    import subprocess
    result = subprocess.run([sys.executable, str(lone / "upscale.py"), str(clip)],
                            capture_output=True, text=True, env=cli_env(), timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = [x for x in result.stderr.splitlines() if "error" in x][0]
    assert "fast-upscalepy_x4.pb" in line and "models" in line
    assert not (tmp_path / "clip_fast_x4.mp4").exists()
