"""models/train.py's batches: each patch is the crop at its drawn place in its drawn image,
turned and mirrored as drawn, and its high-resolution patch is the same place at the scale.
TrainingImages gathers patches by index arithmetic (the same code runs on a GPU with
PyTorch); these tests hold it to the plain slicing and np.rot90 it replaced."""
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "models"))
import train  # noqa: E402


def synthetic_pairs(scale, variants):
    """Images of several sizes whose pixels are all distinct enough to tell places apart."""
    rng = np.random.default_rng(scale)
    pairs = []
    for h, w in ((90, 130), (75, 75), (140, 96)):
        hr = rng.integers(0, 256, (h * scale, w * scale), dtype=np.uint8)
        lows = [rng.integers(0, 256, (h, w), dtype=np.uint8) for _ in range(variants)]
        pairs.append((hr, lows))
    return pairs


def sliced_patch(image, y, x, side, turn, flip):
    patch = np.rot90(image[y:y + side, x:x + side], turn)
    return patch[:, ::-1] if flip else patch


def as_float(patch):
    return patch.astype(np.float32) / 255


def drawn_places(images, pairs, draws):
    """(image, variant, y, x, turn, flip) of each draw, recovered from its index columns."""
    places = []
    for low_start, width, _, _, transform in draws:
        for k, (hr, lows) in enumerate(pairs):
            for j, low in enumerate(lows):
                starts, first = images.low_start
                offset = low_start - starts[first[k] + j]
                if low.shape[1] == width and 0 <= offset < low.size:
                    places.append((k, j, offset // width, offset % width,
                                   transform // 2, transform % 2))
    return places


@pytest.mark.parametrize("scale", (2, 3, 4))
def test_every_patch_is_its_drawn_crop_turned_and_mirrored_at_both_resolutions(scale):
    pairs = synthetic_pairs(scale, variants=2)
    images = train.TrainingImages(pairs, scale)
    draws = images.draws(seed=3, step=11, size=64)
    low, high, taught = images.batch(draws)
    assert taught is None
    places = drawn_places(images, pairs, draws)
    assert len(places) == len(draws)
    p = train.PATCH[scale]
    for i, (k, j, y, x, turn, flip) in enumerate(places):
        hr, lows = pairs[k]
        expected = sliced_patch(lows[j], y, x, p, turn, flip)
        assert np.array_equal(low[i, :, :, 0], as_float(expected))
        assert np.array_equal(high[i, :, :, 0], as_float(
            sliced_patch(hr, y * scale, x * scale, p * scale, turn, flip)))


@pytest.mark.parametrize("scale", (2, 4))
def test_a_teachers_patch_is_its_output_for_the_drawn_low_resolution_image_at_the_same_place(
        scale):
    pairs = synthetic_pairs(scale, variants=3)
    rng = np.random.default_rng(7)
    taught = [[rng.integers(0, 256, hr.shape, dtype=np.uint8) for _ in lows]
              for hr, lows in pairs]
    images = train.TrainingImages(pairs, scale, taught)
    draws = images.draws(seed=2, step=5, size=64)
    _, _, patches = images.batch(draws)
    places = drawn_places(images, pairs, draws[:, :5])
    assert {j for _, j, *_ in places} == {0, 1, 2}
    p = train.PATCH[scale] * scale
    for i, (k, j, y, x, turn, flip) in enumerate(places):
        assert np.array_equal(patches[i, :, :, 0], as_float(
            sliced_patch(taught[k][j], y * scale, x * scale, p, turn, flip)))


def test_draws_cover_all_eight_turns_and_mirrors_and_every_variant():
    pairs = synthetic_pairs(2, variants=3)
    images = train.TrainingImages(pairs, 2)
    draws = images.draws(seed=1, step=0, size=512)
    places = drawn_places(images, pairs, draws)
    every = {(turn, flip) for turn in range(4) for flip in range(2)}
    assert {(turn, flip) for *_, turn, flip in places} == every
    assert {j for _, j, *_ in places} == {0, 1, 2}


def test_a_batch_depends_on_the_seed_and_step_alone():
    images = train.TrainingImages(synthetic_pairs(3, variants=2), 3)
    assert np.array_equal(images.draws(5, 40, 32), images.draws(5, 40, 32))
    assert not np.array_equal(images.draws(5, 40, 32), images.draws(5, 41, 32))
    assert not np.array_equal(images.draws(5, 40, 32), images.draws(6, 40, 32))


def test_images_smaller_than_a_patch_are_left_out():
    pairs = synthetic_pairs(4, variants=1)
    side = train.PATCH[4] - 1
    pairs.append((np.zeros((side * 4, side * 4), np.uint8), [np.zeros((side, side), np.uint8)]))
    assert train.TrainingImages(pairs, 4).count == 3


# --- Pans: the video protocol's clips (measure.py) and --degradation pan -----------------

PAN_IMAGE = np.arange(100 * 130).reshape(100, 130)


def test_each_pan_window_is_the_one_before_moved_step_pixels_right_and_down():
    frames = train.srdata.pan_windows(PAN_IMAGE, 5, 3, 8)
    for i, frame in enumerate(frames):
        assert frame.shape == frames[0].shape
        assert frame[0, 0] == PAN_IMAGE[3 * i, 3 * i]


def test_pan_window_sides_are_multiples_within_the_cap_less_the_pans_margin():
    frames = train.srdata.pan_windows(PAN_IMAGE, 4, 3, 8, (60, None))
    assert frames[0].shape == ((60 - 12) // 8 * 8, (130 - 12) // 8 * 8)
    assert frames[-1][-1, -1] == PAN_IMAGE[9 + 47, 9 + 111]


def test_pan_pairs_hold_the_last_frames_window():
    for index in range(5):
        assert train.target(PAN_IMAGE, 4, "pan", index)[0, 0] == PAN_IMAGE[21, 21]


def test_pan4_pairs_take_the_last_four_frames_windows_in_turn():
    corners = [train.target(PAN_IMAGE, 4, "pan4", index)[0, 0] for index in range(5)]
    assert corners == [PAN_IMAGE[3 * f, 3 * f] for f in (7, 6, 5, 4, 7)]


def test_degradations_without_a_pan_keep_the_whole_image():
    assert train.target(PAN_IMAGE, 4, "mix", 3) is PAN_IMAGE


# --- Losses and files ---------------------------------------------------------------------

def test_l1_loss_is_each_pixels_absolute_error_and_l2_its_square():
    error = np.array([-0.5, 0.0, 0.25])
    assert train.LOSSES["l1"](error).tolist() == [0.5, 0.0, 0.25]
    assert train.LOSSES["l2"](error).tolist() == [0.25, 0.0, 0.0625]


def test_saving_a_cache_leaves_another_processs_temporary_file_alone(tmp_path):
    path = tmp_path / "train_x4_mix_8bit.npz"
    theirs = path.with_suffix(".tmp.npz")       # another run, writing the same cache
    theirs.write_bytes(b"half written")
    train.save_npz(path, {"a": np.arange(3)})
    assert theirs.read_bytes() == b"half written"
    assert np.load(path)["a"].tolist() == [0, 1, 2]
