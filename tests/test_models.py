"""Model files: lookup order, download on demand, checksums, and the networks' output."""
import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

import upscale
from conftest import MODEL_DIR, cli_env, make_clip, model_file, needs_tensorflow, run_cli


class ModelServer(http.server.ThreadingHTTPServer):
    """A local HTTP server standing in for the official download hosts."""

    def __init__(self, folder, mode="ok"):
        self.folder, self.mode = Path(folder), mode
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/models"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.server.folder / Path(self.path).name
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        if self.server.mode == "corrupt":
            body = body[:-100] + b"\0" * 100
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.mode == "cut":
            self.wfile.write(body[:len(body) // 2])     # the connection drops halfway
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server(request, model_dir):
    srv = ModelServer(model_dir, getattr(request, "param", "ok"))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


OFFICIAL = "fsrcnn-opencv"     # FSRCNN with OpenCV's official weights: downloaded on demand


@pytest.fixture
def clip(ffmpeg, tmp_path):
    return make_clip(ffmpeg, tmp_path / "clip.mp4", seconds=0.2)


def download_env(server, tmp_path):
    # No model folder has the file, so it must be downloaded into --model-dir.
    return cli_env(UPSCALE_MODEL_DIR=str(tmp_path / "nothing-here"), UPSCALE_MODEL_URL=server.url)


def test_missing_model_is_downloaded_verified_and_used(server, clip, tmp_path):
    models = tmp_path / "models"
    result = run_cli(clip, "--model", OFFICIAL, "--scale", "2", "--model-dir", models,
                     env=download_env(server, tmp_path))
    assert result.returncode == 0, result.stderr
    assert (models / "FSRCNN_x2.pb").read_bytes() == (MODEL_DIR / "FSRCNN_x2.pb").read_bytes()
    assert sorted(p.name for p in models.iterdir()) == ["FSRCNN_x2.pb"]


@pytest.mark.parametrize("server", ["corrupt"], indirect=True)
def test_download_with_wrong_checksum_never_lands(server, clip, tmp_path):
    models = tmp_path / "models"
    result = run_cli(clip, "--model", OFFICIAL, "--scale", "2", "--model-dir", models,
                     env=download_env(server, tmp_path))
    assert result.returncode == 1
    assert "checksum" in result.stderr and "FSRCNN_x2.pb" in result.stderr
    assert list(models.iterdir()) == []


@pytest.mark.parametrize("server", ["cut"], indirect=True)
def test_download_cut_off_halfway_never_lands(server, clip, tmp_path):
    models = tmp_path / "models"
    result = run_cli(clip, "--model", OFFICIAL, "--scale", "2", "--model-dir", models,
                     env=download_env(server, tmp_path))
    assert result.returncode == 1 and "FSRCNN_x2.pb" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(models.iterdir()) == []


def test_no_network_error_names_file_url_and_folder(clip, tmp_path):
    models = tmp_path / "models"
    env = cli_env(UPSCALE_MODEL_DIR=str(tmp_path / "nothing-here"))
    result = run_cli(clip, "--model", OFFICIAL, "--scale", "2", "--model-dir", models, env=env)
    assert result.returncode == 1
    line = [x for x in result.stderr.splitlines() if x.startswith("upscale: error")][0]
    assert "FSRCNN_x2.pb" in line and "http://127.0.0.1:9/models/FSRCNN_x2.pb" in line
    assert str(models) in line


@needs_tensorflow
def test_edsr_without_its_file_reports_the_official_download(clip, tmp_path):
    env = cli_env(UPSCALE_MODEL_DIR=str(tmp_path / "nothing-here"), UPSCALE_MODEL_URL="")
    env.pop("UPSCALE_MODEL_URL")
    env["https_proxy"] = env["http_proxy"] = "http://127.0.0.1:9"   # keep it off the internet
    result = run_cli(clip, "--model", "edsr", "--scale", "3", "--model-dir", tmp_path / "m",
                     env=env)
    assert result.returncode == 1
    assert "EDSR_x3.pb" in result.stderr
    assert "Saafke/EDSR_Tensorflow/master/models/EDSR_x3.pb" in result.stderr


def test_corrupt_model_file_is_refused_with_the_fix(clip, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    good = (MODEL_DIR / "FSRCNN_x2.pb").read_bytes()
    (models / "FSRCNN_x2.pb").write_bytes(good[: len(good) // 2])
    result = run_cli(clip, "--model", OFFICIAL, "--scale", "2", "--model-dir", models)
    assert result.returncode == 1
    assert "FSRCNN_x2.pb" in result.stderr and "delete it" in result.stderr
    assert not (clip.parent / f"clip_{OFFICIAL}_x2.mp4").exists()


def test_model_dir_option_is_searched_before_the_environment(clip, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(MODEL_DIR / "ESPCN_x2.pb", models)
    env = cli_env(UPSCALE_MODEL_DIR=str(tmp_path / "nothing-here"))
    assert run_cli(clip, "--model", "espcn", "--scale", "2", "--model-dir", models,
                   env=env).returncode == 0


def test_git_blob_checksum_matches_git(tmp_path):
    data = b"hello world\n"
    path = tmp_path / "f"
    path.write_bytes(data)
    # `git hash-object` of "hello world\n"
    assert upscale.file_digest(path, "gitblob:x") == \
        "gitblob:3b18e512dba79e4c8300dd08aeb37f8e728b8dad"


def test_pinned_checksums_match_the_shared_model_files(model_dir):
    sums = dict(line.split()[::-1] for line in
                (model_dir / "SHA256SUMS").read_text().splitlines() if line.strip())
    for name, digest in sums.items():
        assert upscale.MODEL_CHECKSUMS[name] == f"sha256:{digest}"
        assert hashlib.sha256((model_dir / name).read_bytes()).hexdigest() == digest


@needs_tensorflow
@pytest.mark.parametrize("name,scale", [("fast", 4), ("fast", 3), ("fsrcnn", 4),
                                        ("fsrcnn-opencv", 4), ("espcn", 3), ("lapsrn", 2),
                                        ("fsrcnn-small", 2)])
def test_fast_luma_path_matches_dnn_superres(model_dir, name, scale):
    method = upscale.METHODS[name]
    path = model_file(name, scale)
    reference = cv2.dnn_superres.DnnSuperResImpl_create()
    reference.readModel(str(path))
    reference.setModel(method.algo, scale)
    rng = np.random.default_rng(1)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (56, 72, 3), dtype=np.uint8), (5, 5), 0)
    ours = upscale.NetworkUpscaler(method, scale, path).upscale(frame)
    theirs = reference.upsample(frame)
    assert ours.shape == theirs.shape == (56 * scale, 72 * scale, 3)
    assert cv2.PSNR(ours, theirs) >= 45


@pytest.mark.parametrize("name,scale", [("fast", 2), ("fsrcnn-opencv", 3),
                                        pytest.param("lapsrn", 2, marks=needs_tensorflow)])
def test_a_16_bit_frame_is_upscaled_as_its_8_bit_twin_with_its_finer_levels(
        model_dir, name, scale):
    # (HDR sources of 10 bits come to the networks as 16-bit BGR)
    method = upscale.METHODS[name]
    network = upscale.NetworkUpscaler(method, scale, model_file(name, scale))
    rng = np.random.default_rng(2)
    deep = cv2.GaussianBlur(rng.integers(0, 65536, (24, 32, 3)).astype(np.uint16), (5, 5), 0)
    twin = cv2.convertScaleAbs(deep, alpha=1 / 257)
    ours, theirs = network.upscale(deep), network.upscale(twin)
    assert ours.dtype == np.uint16 and ours.shape == theirs.shape
    assert np.abs(ours / 257.0 - theirs).mean() < 0.6
    assert np.count_nonzero(ours % 257) > 0.9 * ours.size        # not 8-bit levels
