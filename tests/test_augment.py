"""The numpy training augmentation and its batches (no TensorFlow in the pipeline)."""

import numpy as np
import pytest

from facexpr.learn.augment import Augmentation, augment_batch, batch_rng, epoch_order
from facexpr.learn.data import Dataset
from facexpr.learn.train import Recipe, _numpy_batches

STILL = {"rotation_deg": 0.0, "shift": 0.0, "zoom": 0.0, "erase_prob": 0.0}  # flip and contrast only


def faces(n: int, seed: int = 0) -> np.ndarray:
    """Smooth random blobs: something with structure at every scale, like a face crop."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    out = np.empty((n, 48, 48), np.uint8)
    for i in range(n):
        img = np.full((48, 48), 60.0)
        for _ in range(6):
            cy, cx, r = rng.uniform(8, 40, 2).tolist() + [rng.uniform(4, 12)]
            img += rng.uniform(40, 120) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        out[i] = np.clip(img, 0, 255)
    return out


def high_frequency(batch: np.ndarray) -> float:
    """Mean absolute difference between neighbouring pixels: fine detail and edges."""
    x = batch[..., 0] if batch.ndim == 4 else batch.astype(np.float32)
    return float(np.abs(np.diff(x, axis=2)).mean())


def test_a_batch_is_float_pixels_and_the_same_for_the_same_seed_epoch_and_index():
    images = faces(16)
    for kind in ("standard", "photo"):
        aug = Augmentation(kind)
        a = augment_batch(images, batch_rng(7, 2, 3), aug)
        assert a.shape == (16, 48, 48, 1) and a.dtype == np.float32
        assert 0.0 <= a.min() and a.max() <= 255.0
        np.testing.assert_array_equal(a, augment_batch(images, batch_rng(7, 2, 3), aug))
        assert not np.array_equal(a, augment_batch(images, batch_rng(7, 2, 4), aug))
        assert not np.array_equal(a, augment_batch(images, batch_rng(7, 3, 3), aug))


def test_mirroring_happens_to_about_half_the_images():
    image = np.zeros((48, 48), np.uint8)
    image[:, :24] = 200  # bright on the left
    out = augment_batch(np.repeat(image[None], 200, 0), batch_rng(0, 0, 0), Augmentation("standard", **STILL))
    left_brighter = out[:, :, :24, 0].mean(axis=(1, 2)) > out[:, :, 24:, 0].mean(axis=(1, 2))
    assert 70 < left_brighter.sum() < 130


def test_photo_framing_zooms_the_face_in_and_out_around_the_crop():
    image = np.zeros((48, 48), np.uint8)
    image[16:32, 16:32] = 255  # a centred square
    aug = Augmentation("photo", rotation_deg=0.0, erase_prob=0.0, frame_shift=0.0, lowres_prob=0.0,
                       blur_prob=0.0, sharpen_prob=0.0, noise_prob=0.0, jpeg_prob=0.0, gamma_prob=0.0,
                       side_light_prob=0.0)
    out = augment_batch(np.repeat(image[None], 300, 0), batch_rng(1, 0, 0), aug)[..., 0]
    # Brightness changes the level, not the area: count the pixels well above the background.
    area = (out > out.mean(axis=(1, 2), keepdims=True) + 40).sum(axis=(1, 2)) / 256
    # Crop side 0.85–1.2 × the original: the square's side scales by 1/side, i.e. 0.83–1.18
    # (13–19 px; a pixel more or less where the edge falls between pixels).
    side = np.sqrt(area) * 16
    assert 12 <= side.min() < 15 and 18 < side.max() <= 20


def test_photo_degradations_remove_fine_detail_that_standard_keeps():
    images = faces(64)
    edges = images.copy()
    edges[:, :, ::4] = 0  # thin dark lines: detail a blur, a small copy or JPEG loses
    always = Augmentation("photo", **STILL, lowres_prob=1.0, blur_prob=1.0, jpeg_prob=1.0,
                          noise_prob=0.0, side_light_prob=0.0, gamma_prob=0.0)
    standard = augment_batch(edges, batch_rng(0, 0, 0), Augmentation("standard", **STILL))
    photo = augment_batch(edges, batch_rng(0, 0, 0), always)
    assert high_frequency(photo) < 0.6 * high_frequency(standard)


def test_an_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="choose standard or photo"):
        Augmentation("sepia")


def test_batches_cover_every_image_once_per_epoch_and_resume_where_they_left_off():
    n = 70
    images = faces(n)
    targets = np.eye(n, dtype=np.float32)  # target i marks image i
    recipe = Recipe(batch_size=16, augment="photo", precision="float32")
    data = Dataset(images, np.zeros(n, np.int64), "test")
    batches = _numpy_batches(data, targets, recipe)
    assert len(batches) == 4  # the last 6 images wait for another epoch's order
    seen = np.concatenate([batches[i][1].argmax(1) for i in range(len(batches))])
    assert len(set(seen.tolist())) == 64
    first_epoch = batches[0]
    batches.on_epoch_end()
    second_epoch = batches[0]
    assert not np.array_equal(first_epoch[1], second_epoch[1])  # reshuffled

    resumed = _numpy_batches(data, targets, recipe)
    resumed.epoch = 1  # what train() sets when it resumes after one epoch
    np.testing.assert_array_equal(resumed[0][0], second_epoch[0])
    np.testing.assert_array_equal(resumed[0][1], second_epoch[1])
    assert sorted(epoch_order(n, 5, 0).tolist()) == list(range(n))
