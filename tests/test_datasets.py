"""Data pipelines: downsampled-ImageNet npz and pickle batches (the release's train and val
folders together, every malformed file refused with its name), class subsets,
standardisation and unit scaling, seeded shuffling, splits and augmentation, the synthetic
ImageNet-shaped data. Every file is made here, in ``tmp_path``, from small arrays whose
downsampled values are known exactly. Image-file trees: test_folders.py."""
import pickle

import numpy as np
import pytest

from tallskinny_np.training.datasets import (augment, batch_index, channel_statistics,
                                             digits_data, imagenet_batches_data, load_data,
                                             pixel_scaling, split_train_val, standardize,
                                             synthetic_imagenet)


def blocky(rng, side, block):
    """A random RGB image (side x side) made of constant block x block squares, so that a
    box filter down to side / block pixels returns the square values exactly."""
    small = rng.integers(0, 256, (side // block, side // block, 3), dtype=np.uint8)
    return small.repeat(block, axis=0).repeat(block, axis=1), small


def planes(images):
    """Images (N, s, s, 3) as downsampled-ImageNet rows of three colour planes."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


@pytest.mark.parametrize("fmt", ["npz", "pickle"])
def test_downsampled_imagenet_batches(tmp_path, fmt):
    rng = np.random.default_rng(3)
    sets = {}
    for name, n in [("train_data_batch_1", 6), ("train_data_batch_2", 5),
                    ("train_data_batch_10", 4), ("val_data", 5)]:
        big, small = zip(*(blocky(rng, 8, 2) for _ in range(n)))
        labels = rng.integers(1, 5, n)                     # 1-based, as the release
        sets[name] = (np.stack(big), np.stack(small), labels)
        d = {"data": planes(np.stack(big)), "labels": list(labels), "mean": np.zeros(192)}
        if fmt == "npz":
            np.savez(tmp_path / f"{name}.npz", **d)
        else:
            with open(tmp_path / name, "wb") as f:
                pickle.dump(d, f)
    data = imagenet_batches_data(str(tmp_path))
    order = ["train_data_batch_1", "train_data_batch_2", "train_data_batch_10"]
    images, labels = data.train.batch(np.arange(len(data.train)))
    np.testing.assert_array_equal(images, np.concatenate([sets[k][0] for k in order]))
    np.testing.assert_array_equal(labels, np.concatenate([sets[k][2] for k in order]) - 1)
    sub = imagenet_batches_data(str(tmp_path), resolution=4, classes=2)
    images, labels = sub.val.batch(np.arange(len(sub.val)))
    keep = sets["val_data"][2] <= 2
    np.testing.assert_array_equal(images, sets["val_data"][1][keep])
    np.testing.assert_array_equal(labels, sets["val_data"][2][keep] - 1)
    assert sub.classes == ["1", "2"]                       # the release's label numbers
    with pytest.raises(ValueError, match="must divide 8"):
        imagenet_batches_data(str(tmp_path), resolution=3)


def test_downsampled_imagenet_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        imagenet_batches_data(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no downsampled-ImageNet batch files"):
        imagenet_batches_data(str(tmp_path))
    np.savez(tmp_path / "train_data_batch_1.npz", data=np.zeros((2, 10), np.uint8),
             labels=[1, 2])
    with pytest.raises(ValueError, match="three s x s colour planes"):
        imagenet_batches_data(str(tmp_path))


def test_release_layout_uses_the_official_validation_folder(tmp_path):
    """The downloaded Imagenet32 layout: the train and val folders side by side, passed
    together or through their parent; the official val_data is the validation split."""
    rng = np.random.default_rng(5)
    for folder, name, n in [("Imagenet32_train_npz", "train_data_batch_1.npz", 12),
                            ("Imagenet32_train_npz", "train_data_batch_2.npz", 8),
                            ("Imagenet32_val_npz", "val_data.npz", 7)]:
        (tmp_path / folder).mkdir(exist_ok=True)
        np.savez(tmp_path / folder / name, data=rng.integers(0, 256, (n, 12), dtype=np.uint8),
                 labels=rng.integers(1, 4, n))
    both = [str(tmp_path / "Imagenet32_train_npz"), str(tmp_path / "Imagenet32_val_npz")]
    for paths in (both, [str(tmp_path)]):
        data = imagenet_batches_data(paths, val_fraction=0.5)
        assert (len(data.train), len(data.val)) == (20, 7)
    alone = imagenet_batches_data(both[:1], val_fraction=0.25)
    assert (len(alone.train), len(alone.val)) == (15, 5)


def bad_batch_files(tmp_path):
    """Malformed batch files, each with the words its message must contain."""
    ok = dict(data=np.zeros((4, 12), np.uint8), labels=np.array([1, 2, 3, 1]))
    cases = {
        "other_keys.npz": (dict(x=ok["data"], y=ok["labels"]), "found x, y"),
        "counts.npz": (dict(data=np.zeros((300, 12), np.uint8), labels=np.ones(200, int)),
                       "do not match"),
        "float_pixels.npz": (dict(data=np.full((4, 12), 0.5), labels=ok["labels"]),
                             "float64 values; expected integers 0..255"),
        "wide_pixels.npz": (dict(data=np.full((4, 12), 300), labels=ok["labels"]),
                            "values 300..300; expected 0..255"),
        "labels_zero.npz": (dict(data=ok["data"], labels=np.array([0, 1, 2, 3])),
                            "expected 1..1000"),
        "three_d.npz": (dict(data=np.zeros((4, 2, 6), np.uint8), labels=ok["labels"]),
                        "do not match"),
    }
    out = []
    for name, (arrays, words) in cases.items():
        np.savez(tmp_path / name, **arrays)
        out.append((tmp_path / name, words))
    with open(tmp_path / "no_data", "wb") as f:
        pickle.dump({"labels": [1, 2]}, f)
    out.append((tmp_path / "no_data", "found labels"))
    (tmp_path / "garbage").write_bytes(b"\x80\x04this is not a pickle")
    out.append((tmp_path / "garbage", "not a downsampled-ImageNet batch file"))
    (tmp_path / "empty.npz").write_bytes(b"")
    out.append((tmp_path / "empty.npz", "not a downsampled-ImageNet batch file"))
    with open(tmp_path / "a_list", "wb") as f:
        pickle.dump([1, 2, 3], f)
    out.append((tmp_path / "a_list", "found list"))
    return out


def test_every_malformed_batch_file_is_refused_with_its_name(tmp_path):
    for path, words in bad_batch_files(tmp_path):
        with pytest.raises(ValueError) as info:
            imagenet_batches_data(str(path))
        assert str(path) in str(info.value) and words in str(info.value), info.value


def test_augmentation_crops_and_flips_reproducibly():
    images = np.arange(2 * 8 * 8 * 1, dtype=np.uint8).reshape(2, 8, 8, 1) + 1
    a, b = augment(images, seed=3, step=7), augment(images, seed=3, step=7)
    np.testing.assert_array_equal(a, b)
    assert a.shape == images.shape and a.dtype == np.uint8
    assert not np.array_equal(augment(images, seed=3, step=8), a)
    seen = set()
    for step in range(200):
        out = augment(images, seed=0, step=step)[0, ..., 0]
        # Every output is a shifted (padding 1 = 8 // 8), possibly mirrored copy.
        for flip in (False, True):
            src = images[0, :, ::-1, 0] if flip else images[0, ..., 0]
            padded = np.pad(src, 1)
            for dy in range(3):
                for dx in range(3):
                    if np.array_equal(padded[dy:dy + 8, dx:dx + 8], out):
                        seen.add((flip, dy, dx))
    assert len(seen) == 18                                 # every offset, both ways


def test_standardisation_uses_training_channel_statistics():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (50, 3, 3, 3)).astype(np.uint8)
    images[..., 2] = 9                                     # a constant channel
    train, _ = split_train_val(images, np.zeros(50, np.int64), 0.2, seed=0)
    mean, std = channel_statistics(train, chunk=7)
    pixels = images[train.rows].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(std[:2], pixels.std(axis=0)[:2], rtol=1e-12)
    assert std[2] == 1.0
    X = standardize(images[train.rows], mean, std, np.float64)
    assert X.shape == (40, 27)
    per_channel = X.reshape(-1, 3)
    np.testing.assert_allclose(per_channel.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(per_channel[:, :2].std(axis=0), 1, rtol=1e-12)


def test_batch_order_is_a_seeded_function_of_the_step():
    n, batch = 23, 5
    epoch0 = np.concatenate([batch_index(n, batch, k, seed=3) for k in range(4)])
    assert len(set(epoch0)) == 20                          # 4 full batches, no repeats
    epoch1 = np.concatenate([batch_index(n, batch, k, seed=3) for k in range(4, 8)])
    assert not np.array_equal(epoch0, epoch1)
    np.testing.assert_array_equal(batch_index(n, batch, 5, seed=3), epoch1[5:10])
    assert not np.array_equal(batch_index(n, batch, 0, seed=4), epoch0[:5])
    with pytest.raises(ValueError, match="batch size"):
        batch_index(n, 24, 0, seed=3)


def test_synthetic_imagenet_and_digits():
    a, la = synthetic_imagenet(40, resolution=8, classes=5, seed=1)
    b, lb = synthetic_imagenet(40, resolution=8, classes=5, seed=1)
    assert a.shape == (40, 8, 8, 3) and a.dtype == np.uint8 and la.max() < 5
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    data = load_data("synthetic", resolution=8, classes=5, synthetic_size=40)
    assert data.n_features == 192 and len(data.classes) == 5
    digits = digits_data(classes=3, val_fraction=0.25)
    assert digits.train.images.shape[1:] == (8, 8, 1)
    assert set(digits.train.labels) == {0, 1, 2}
    with pytest.raises(ValueError, match="8x8"):
        digits_data(resolution=16)
    with pytest.raises(ValueError, match="needs a path"):
        load_data("imagefolder")


def test_unit_scaling_divides_by_the_sources_largest_pixel():
    """``--scale unit``: the digits (0..16) over 16 and 8-bit images over 255, onto
    [0, 1] with both ends reached; ``standard`` is the training split's statistics."""
    digits = digits_data()
    images = digits.train.batch(np.arange(len(digits.train)))[0]
    shift, divisor = pixel_scaling(digits, "unit")
    np.testing.assert_array_equal(shift, [0.0])
    np.testing.assert_array_equal(divisor, [16.0])
    X = standardize(images, shift, divisor, np.float64)
    np.testing.assert_array_equal(X, images.reshape(len(images), -1) / 16)
    assert X.min() == 0 and X.max() == 1
    synthetic = load_data("synthetic", synthetic_size=40, classes=2)
    np.testing.assert_array_equal(pixel_scaling(synthetic, "unit")[1], [255.0] * 3)
    for got, want in zip(pixel_scaling(digits, "standard"), channel_statistics(digits.train)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="unknown pixel scaling 'max'"):
        pixel_scaling(digits, "max")
