"""Data pipelines: ImageFolder trees read with Pillow, resized and cached
as a uint8 memmap, with unreadable files skipped and counted; downsampled-ImageNet npz and
pickle batches; class subsets; standardisation; seeded shuffling and splits; the synthetic
ImageNet-shaped data; clear errors for bad paths. Every tree and file is made here, in
``tmp_path``, from small arrays whose resized values are known exactly."""
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from tallskinny_np.training import datasets
from tallskinny_np.training.datasets import (batch_index, channel_statistics, digits_data,
                                    image_folder_data, imagenet_batches_data, load_data,
                                    split_train_val, standardize, synthetic_imagenet)


def blocky(rng, side, block):
    """A random RGB image (side x side) made of constant block x block squares, so that a
    box filter down to side / block pixels returns the square values exactly."""
    small = rng.integers(0, 256, (side // block, side // block, 3), dtype=np.uint8)
    return small.repeat(block, axis=0).repeat(block, axis=1), small


def make_tree(root, classes, per_class, rng, side=8, resolution=4, bad=()):
    """An ImageFolder tree ``root/<class>/<k>.png`` with blocky images; ``bad`` names
    (class, file) pairs written as garbage. Returns the expected small images, by class
    and file name."""
    expected = {}
    for c in classes:
        os.makedirs(root / c)
        for k in range(per_class):
            big, small = blocky(rng, side, side // resolution)
            Image.fromarray(big).save(root / c / f"{k}.png")
            expected[(c, f"{k}.png")] = small
        (root / c / "notes.txt").write_text("not an image")
    for c, name in bad:
        (root / c / name).write_bytes(b"\xff\xd8 this is not a JPEG")
    return expected


def test_image_folder_reads_resizes_caches_and_skips_unreadable(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    make_tree(tmp_path / "data" / "train", ["b", "a", "c"], 3, rng,
              bad=[("a", "broken.jpg")])
    expected_val = make_tree(tmp_path / "data" / "val", ["b", "a", "c"], 2, rng)
    # One JPEG (lossy) and one grayscale PNG: both become 4x4 RGB.
    Image.fromarray(blocky(rng, 8, 2)[0]).save(tmp_path / "data" / "train" / "a" / "x.jpg")
    Image.fromarray(np.full((6, 10), 77, np.uint8)).save(
        tmp_path / "data" / "train" / "b" / "gray.png")
    cache = tmp_path / "cache"
    data = image_folder_data(str(tmp_path / "data"), resolution=4, cache_dir=str(cache))
    assert data.classes == ["a", "b", "c"]                 # sorted, as ImageFolder
    assert data.skipped == 1
    train_images, train_labels = data.train.batch(np.arange(len(data.train)))
    assert train_images.shape == (3 * 3 + 2, 4, 4, 3) and train_images.dtype == np.uint8
    assert np.bincount(train_labels).tolist() == [4, 4, 3]
    gray = train_images[train_labels == 1][-1]             # b/gray.png sorts after b/2.png
    assert np.all(gray == 77)
    assert isinstance(data.train.images, np.memmap)
    val_images, val_labels = data.val.batch(np.arange(len(data.val)))
    names = ["a", "b", "c"]
    for i, (c, k) in enumerate((c, k) for c in names for k in range(2)):
        assert val_labels[i] == names.index(c)
        np.testing.assert_array_equal(val_images[i], expected_val[(c, f"{k}.png")])

    def no_reading(*args):
        raise AssertionError("the cache should have been used")
    monkeypatch.setattr(datasets, "read_image", no_reading)
    again = image_folder_data(str(tmp_path / "data"), resolution=4, cache_dir=str(cache))
    np.testing.assert_array_equal(again.train.batch(np.arange(len(again.train)))[0],
                                  train_images)
    assert again.skipped == 1
    assert not [p for p in os.listdir(next(cache.iterdir())) if "partial" in p or "tmp" in p]


def test_image_folder_class_subset_and_seeded_split(tmp_path):
    tree = tmp_path / "tree"
    make_tree(tree, ["k0", "k1", "k2"], 5, np.random.default_rng(1))
    cache = str(tmp_path / "cache")
    data = image_folder_data(str(tree), resolution=2, classes=2, val_fraction=0.3,
                             seed=7, cache_dir=cache)
    assert data.classes == ["k0", "k1"]
    assert len(data.train) + len(data.val) == 10 and len(data.val) == 3
    assert not set(data.train.rows) & set(data.val.rows)
    again = image_folder_data(str(tree), resolution=2, classes=2, val_fraction=0.3,
                              seed=7, cache_dir=cache)
    np.testing.assert_array_equal(again.val.rows, data.val.rows)
    other = image_folder_data(str(tree), resolution=2, classes=2, val_fraction=0.3,
                              seed=8, cache_dir=cache)
    assert not np.array_equal(other.val.rows, data.val.rows)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_folder_data(str(tmp_path / "missing"), cache_dir=str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class directories"):
        image_folder_data(str(tmp_path / "empty"), cache_dir=str(tmp_path))
    (tmp_path / "noimages" / "cat").mkdir(parents=True)
    (tmp_path / "noimages" / "cat" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no image files"):
        image_folder_data(str(tmp_path / "noimages"), cache_dir=str(tmp_path))
    make_tree(tmp_path / "allbad", ["cat"], 0, None, bad=[("cat", "1.jpg"), ("cat", "2.jpg")])
    with pytest.raises(ValueError, match="none of the 2 image files could be read"):
        image_folder_data(str(tmp_path / "allbad"), cache_dir=str(tmp_path / "c"))
    make_tree(tmp_path / "one", ["cat"], 1, np.random.default_rng(2))
    with pytest.raises(ValueError, match=r"--classes must lie in \[1, 1\]"):
        image_folder_data(str(tmp_path / "one"), classes=2, cache_dir=str(tmp_path / "c"))


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
    assert sub.classes == ["0", "1"]
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
