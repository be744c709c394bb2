"""ImageNet as image files, read with torchvision (skipped without it): ImageFolder trees
and the ILSVRC2012 layout as distributed (flat val/ labelled by the devkit), decoded by
DataLoader workers, resized and cached as a uint8 memmap; an unreadable file is refused by
name, or skipped and named with ``skip_unreadable``; a class folder without images is
refused, or kept and named with ``allow_empty_classes``. Every tree is made here from small
arrays whose resized values are known exactly."""
import multiprocessing
import os
import time

import numpy as np
import pytest

pytest.importorskip("torchvision")
from PIL import Image  # noqa: E402
from scipy.io import savemat  # noqa: E402

from tallskinny_np.training import folders  # noqa: E402
from tallskinny_np.training.folders import image_folder_data  # noqa: E402
from tallskinny_np.training.train import main  # noqa: E402


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
    with pytest.raises(ValueError, match=r"a/broken.jpg: cannot be decoded as an image .*"
                                         r"pass --skip-unreadable"):
        image_folder_data(str(tmp_path / "data"), resolution=4, cache_dir=str(cache),
                          workers=2)
    assert not list(cache.rglob("*.npy"))                  # nothing half-built
    data = image_folder_data(str(tmp_path / "data"), resolution=4, cache_dir=str(cache),
                             workers=2, skip_unreadable=True)
    assert data.classes == ["a", "b", "c"]                 # sorted, as ImageFolder
    assert data.skipped == 1
    assert [w for w in data.warnings if "broken.jpg: skipped, cannot be decoded" in w]
    assert not data.decode[0]["cached"]
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
    monkeypatch.setattr(folders, "read_image", no_reading)
    again = image_folder_data(str(tmp_path / "data"), resolution=4, cache_dir=str(cache),
                              skip_unreadable=True)
    np.testing.assert_array_equal(again.train.batch(np.arange(len(again.train)))[0],
                                  train_images)
    assert again.skipped == 1 and again.decode[0]["cached"]
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
    with pytest.raises(ValueError, match="no class folders"):
        image_folder_data(str(tmp_path / "empty"), cache_dir=str(tmp_path))
    (tmp_path / "noimages" / "cat").mkdir(parents=True)
    (tmp_path / "noimages" / "cat" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="hold no image files"):
        image_folder_data(str(tmp_path / "noimages"), cache_dir=str(tmp_path))
    make_tree(tmp_path / "allbad", ["cat"], 0, None, bad=[("cat", "1.jpg"), ("cat", "2.jpg")])
    with pytest.raises(ValueError, match="cat/1.jpg: cannot be decoded"):
        image_folder_data(str(tmp_path / "allbad"), cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="none of the 2 image files could be read"):
        image_folder_data(str(tmp_path / "allbad"), cache_dir=str(tmp_path / "c"),
                          skip_unreadable=True)
    make_tree(tmp_path / "one", ["cat"], 1, np.random.default_rng(2))
    with pytest.raises(ValueError, match=r"--classes must lie in \[1, 1\]"):
        image_folder_data(str(tmp_path / "one"), classes=2, cache_dir=str(tmp_path / "c"))




def make_devkit(root, wnids, val_labels):
    """A devkit folder: meta.mat (leaf synsets with ILSVRC2012_ID 1.. in ``wnids`` order,
    plus one inner node) and the ground truth (an ID per validation image)."""
    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    synsets = np.zeros(len(wnids) + 1, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"),
                                              ("num_children", "O")])
    for k, w in enumerate(wnids):
        synsets[k] = (k + 1, w, 0)
    synsets[-1] = (len(wnids) + 1, "n00000000", 2)
    savemat(data / "meta.mat", {"synsets": synsets})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{i}\n" for i in val_labels))


def test_ilsvrc2012_flat_validation_folder_with_devkit_labels(tmp_path):
    rng = np.random.default_rng(4)
    wnids = ["n02", "n01", "n03"]                     # devkit ID order is not sorted order
    make_tree(tmp_path / "train", wnids, 2, rng)
    (tmp_path / "val").mkdir()
    ids = [2, 1, 3, 3, 2]                             # ILSVRC2012_IDs of val images 1..5
    expected = []
    for k, i in enumerate(ids):
        big, small = blocky(rng, 8, 2)
        Image.fromarray(big).save(tmp_path / "val" / f"ILSVRC2012_val_{k + 1:08d}.png")
        expected.append(small)
    with pytest.raises(ValueError, match="labels are in the devkit"):
        image_folder_data(str(tmp_path), resolution=4, cache_dir=str(tmp_path / "c"), workers=0)
    make_devkit(tmp_path, wnids, ids)
    data = image_folder_data(str(tmp_path), resolution=4, cache_dir=str(tmp_path / "c"),
                             workers=0)
    assert data.classes == ["n01", "n02", "n03"]
    images, labels = data.val.batch(np.arange(len(data.val)))
    # ID 1 is n02 (class 1), ID 2 is n01 (class 0), ID 3 is n03 (class 2).
    assert labels.tolist() == [0, 1, 2, 2, 0]
    np.testing.assert_array_equal(images, np.stack(expected))
    sub = image_folder_data(str(tmp_path), resolution=4, classes=2,
                            cache_dir=str(tmp_path / "c"), workers=0)
    assert sub.val.batch(np.arange(len(sub.val)))[1].tolist() == [0, 1, 0]
    (tmp_path / "val" / "ILSVRC2012_val_00000006.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="holds 6 images but the devkit"):
        image_folder_data(str(tmp_path), cache_dir=str(tmp_path / "c"), workers=0)


def test_empty_class_folder_is_named_and_small_sets_refuse_large_batches(tmp_path, capsys):
    make_tree(tmp_path / "tree", ["cat", "dog"], 15, np.random.default_rng(5))
    (tmp_path / "tree" / "emu").mkdir()
    run = ["--data", "imagefolder", str(tmp_path / "tree"), "--cache-dir",
           str(tmp_path / "c"), "--workers", "0", "--resolution", "2", "--depth", "3",
           "--width", "3", "--optimizer", "adam", "--task", "train", "--steps", "3"]
    assert main(run + ["--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err == (f"tallskinny-train: error: the class folder {tmp_path / 'tree' / 'emu'} "
                   f"holds no images; its class would be an output never trained: remove "
                   f"it or pass --allow-empty-classes\n")
    run.append("--allow-empty-classes")
    assert main(run + ["--out", str(tmp_path / "a")]) == 2     # 30 images, batch 32
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'tree'}/emu: no images" in err
    assert "--batch 32 is larger than the 24 training images; pass --batch 24 or less" in err
    assert main(run + ["--batch", "24", "--out", str(tmp_path / "b")]) == 0


def test_a_build_stopped_by_a_bad_file_leaves_no_decoding_worker(tmp_path):
    """With torch's DataLoader and two worker processes, a cache build stopped by an
    unreadable file names it and leaves no worker process behind (within 5 s)."""
    make_tree(tmp_path / "data", ["a", "b"], 40, np.random.default_rng(0), bad=[("b", "x.png")])
    with pytest.raises(ValueError, match=r"x\.png: cannot be decoded"):
        image_folder_data(str(tmp_path / "data"), resolution=4,
                          cache_dir=str(tmp_path / "cache"), workers=2)
    deadline = time.monotonic() + 5
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert multiprocessing.active_children() == []
