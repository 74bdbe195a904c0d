"""Our own FSRCNN weights (models/train.py): shipped in models/, pinned, the default for
--model fsrcnn, read by DnnSuperResImpl like the official files, and sharper than cubic
on images that no training step saw."""
import shutil
import sys

import cv2
import numpy as np
import pytest

import upscale
from conftest import ROOT, cli_env, make_clip, run_cli, video_size

sys.path.insert(0, str(ROOT / "models"))
import srdata  # noqa: E402

SCALES = (2, 3, 4)
OURS = upscale.METHODS["fsrcnn"]
REFERENCE = ROOT / "models" / "FSRCNN-upscalepy_reference.npz"
# The least gain over cv2's cubic each scale must keep on the held-out images below (PSNR,
# MATLAB luma, border = scale); OpenCV's official weights gain 0.45, -0.27 and -0.24 dB there.
MARGIN_OVER_CUBIC_DB = {2: 1.0, 3: 0.7, 4: 0.8}     # measured: 1.27, 0.90, 1.12
HELD_OUT = ("T91/t1.bmp", "T91/t17.bmp", "T91/t25.bmp", "BSD200/100080.png")


def shipped(scale):
    return upscale.DEFAULT_MODEL_DIR / OURS.file_name(scale)


@pytest.mark.parametrize("scale", SCALES)
def test_shipped_file_matches_its_pinned_checksum(scale):
    path = shipped(scale)
    checksum = upscale.MODEL_CHECKSUMS[path.name]
    assert upscale.file_digest(path, checksum) == checksum


@pytest.mark.parametrize("scale", SCALES)
def test_shipped_file_loads_through_dnn_superres_as_fsrcnn(scale):
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(str(shipped(scale)))
    sr.setModel("fsrcnn", scale)
    frame = np.random.default_rng(scale).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    out = sr.upsample(frame)
    assert out.shape == (30 * scale, 41 * scale, 3)
    # and the tool's own path gives the same picture
    assert cv2.PSNR(upscale.NetworkUpscaler(OURS, scale, shipped(scale)).upscale(frame),
                    out) >= 45


@pytest.mark.parametrize("scale", SCALES)
def test_shipped_file_gets_the_same_fast_graph_as_the_official_file(model_dir, scale):
    ours = upscale.checked_fast_graph(str(shipped(scale)), OURS.engine)
    official = upscale.checked_fast_graph(str(model_dir / f"FSRCNN_x{scale}.pb"), OURS.engine)
    assert ours.graph is not None and ours.block == scale and not ours.tanh
    upscale.register_superres_layers()
    layers = [upscale.read_network(f.graph, OURS.engine).getLayerNames()
              for f in (ours, official)]
    assert len(layers[0]) == len(layers[1])


@pytest.mark.parametrize("scale", SCALES)
def test_exported_graph_reproduces_the_trained_network(scale):
    # The training framework's own output on a held-out crop, saved by `train.py export`.
    with np.load(REFERENCE) as reference:
        low, expected = reference[f"low_x{scale}"], reference[f"out_x{scale}"]
    upscale.register_superres_layers()
    net = upscale.read_network(shipped(scale))
    net.setInput(cv2.dnn.blobFromImage(low, 1.0 / 255.0))
    out = net.forward()[0, 0]
    assert out.shape == expected.shape == (low.shape[0] * scale, low.shape[1] * scale)
    assert np.abs(out - expected).max() <= 1e-4


@pytest.mark.parametrize("scale", SCALES)
def test_shipped_weights_beat_cubic_on_held_out_images(scale):
    assert all(srdata.is_validation(name) for name in HELD_OUT)
    net = upscale.NetworkUpscaler(OURS, scale, shipped(scale))
    gains = []
    for name in HELD_OUT:
        hr = srdata.modcrop(srdata.read_bgr(name), scale)
        low = srdata.low_resolution(hr, scale)
        cubic = cv2.resize(low, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        gains.append(srdata.psnr_y(hr, net.upscale(low), scale) -
                     srdata.psnr_y(hr, cubic, scale))
    assert np.mean(gains) >= MARGIN_OVER_CUBIC_DB[scale], gains


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
    assert video_size(tmp_path / "clip_fsrcnn_x2.mp4") == (128, 96)


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
    assert "FSRCNN-upscalepy_x4.pb" in line and "models" in line
    assert not (tmp_path / "clip_fsrcnn_x4.mp4").exists()
