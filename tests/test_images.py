"""Image files decoded to 8-bit RGB without torch (Pillow alone): 16-bit greyscale scaled,
not clipped; palette, CMYK, greyscale and alpha sources converted (alpha over white);
files that cannot be decoded named; and the image cache's free-space check and its
refusal of files an earlier build skipped; the build itself with a stand-in for torch's
DataLoader: a bad file named, its workers stopped, a full disk reported before any image
is written. With torchvision itself: test_folders.py."""
import json
import os
import sys
import types

import numpy as np
import pytest
from PIL import Image

from tallskinny_np.training import folders
from tallskinny_np.training.folders import Decoded, cached_images, read_image


def saved(tmp_path, image, name, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return str(path)


@pytest.mark.parametrize("make, name, rgb", [
    # 16-bit greyscale: 30000 / 65535 of full scale (Pillow's convert makes it 255).
    (lambda: Image.fromarray(np.full((8, 8), 30000, np.uint16)), "grey16.png", (117,) * 3),
    (lambda: Image.fromarray(np.full((8, 8), 77, np.uint8)), "grey.png", (77,) * 3),
    (lambda: Image.new("1", (8, 8), 1), "bilevel.png", (255,) * 3),
    (lambda: Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "cmyk.tif", (255, 0, 0)),
    (lambda: Image.new("LA", (8, 8), (100, 255)), "grey-opaque.png", (100,) * 3),
    (lambda: Image.new("LA", (8, 8), (100, 0)), "grey-transparent.png", (255,) * 3),
    (lambda: Image.new("RGBA", (8, 8), (10, 20, 30, 0)), "transparent.png", (255,) * 3),
    (lambda: Image.new("RGBA", (8, 8), (10, 20, 30, 255)), "opaque.png", (10, 20, 30)),
])
def test_sources_decode_to_8_bit_rgb(tmp_path, make, name, rgb):
    image = make()
    path = saved(tmp_path, image, name)
    with Image.open(path) as im:
        assert im.mode == image.mode                     # the file kept its mode
    out = read_image(path, 4)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert np.all(out == rgb), out[0, 0]


def test_palette_and_its_transparent_entry(tmp_path):
    index = np.zeros((8, 8), np.uint8)
    index[:, 4:] = 1
    image = Image.fromarray(index, "P")
    image.putpalette([200, 10, 20, 0, 0, 255] + [0] * 762)
    out = read_image(saved(tmp_path, image, "p.png"), 2)
    assert out[:, 0].tolist() == [[200, 10, 20]] * 2 and out[:, 1].tolist() == [[0, 0, 255]] * 2
    out = read_image(saved(tmp_path, image, "pt.png", transparency=1), 2)
    assert out[:, 0].tolist() == [[200, 10, 20]] * 2
    assert out[:, 1].tolist() == [[255, 255, 255]] * 2  # the transparent entry: white


def test_half_transparent_pixels_blend_over_white_and_boxes_average(tmp_path):
    image = Image.new("RGBA", (8, 8), (0, 0, 200, 255))
    image.paste((0, 0, 200, 0), (0, 0, 4, 8))              # left half transparent
    out = read_image(saved(tmp_path, image, "half.png"), 1)
    np.testing.assert_allclose(out[0, 0], [127.5, 127.5, 227.5], atol=1)


def test_a_file_that_cannot_be_decoded_is_named(tmp_path):
    good = saved(tmp_path, Image.new("RGB", (4, 4), (1, 2, 3)), "good.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a JPEG")
    data = Decoded([good, str(bad)], 2)
    image, error = data[0]
    assert error == "" and np.all(image == (1, 2, 3))
    image, error = data[1]
    assert error and np.all(image == 0)
    message = str(folders.unreadable(str(bad), error))
    assert message.startswith(f"{bad}: cannot be decoded as an image (")
    assert message.endswith("; pass --skip-unreadable to leave such files out")


def fake_build(skipped):
    def build(paths, labels, resolution, directory, workers, progress, skip_unreadable):
        np.save(os.path.join(directory, "images.npy"),
                np.zeros((len(paths), resolution, resolution, 3), np.uint8))
        np.save(os.path.join(directory, "labels.npy"), labels)
        with open(os.path.join(directory, "meta.json"), "w") as f:
            json.dump({"files": len(paths), "skipped": len(skipped),
                       "skipped_files": skipped}, f)
    return build


def test_the_cache_checks_free_space_and_remembers_skipped_files(tmp_path, monkeypatch):
    paths, labels = ["a.png", "b.png"], np.array([0, 1])
    monkeypatch.setattr(folders, "free_bytes", lambda path: 1000)
    with pytest.raises(ValueError, match=rf"^--cache-dir {tmp_path}: the image cache needs "
                                         rf"4,\d+ bytes, 1,000 are free; free space or "
                                         rf"choose another --cache-dir$"):
        cached_images(paths, labels, 8, str(tmp_path), 0, False)
    monkeypatch.undo()
    monkeypatch.setattr(folders, "build_cache", fake_build([["b.png", "broken"]]))
    images, _, meta = cached_images(paths, labels, 8, str(tmp_path), 0, False, True)
    assert images.shape == (2, 8, 8, 3) and meta["cached"] is False
    with pytest.raises(ValueError, match=r"^b.png: cannot be decoded as an image \(broken\); "
                                         r"pass --skip-unreadable"):
        cached_images(paths, labels, 8, str(tmp_path), 0, False)
    _, _, meta = cached_images(paths, labels, 8, str(tmp_path), 0, False, True)
    assert meta["cached"] is True


class FakeLoader:
    """A stand-in for torch's DataLoader (torch need not be installed): batches of the
    dataset in this process, and a record of whether its workers were shut down."""
    shut_down = []

    def __init__(self, dataset, batch_size, num_workers, collate_fn):
        self.dataset, self.batch_size, self.collate = dataset, batch_size, collate_fn

    def __iter__(self):
        loader = self

        class Batches:
            def __init__(self):
                self.starts = iter(range(0, len(loader.dataset), loader.batch_size))

            def __iter__(self):
                return self

            def __next__(self):
                i = next(self.starts)
                end = min(i + loader.batch_size, len(loader.dataset))
                return loader.collate([loader.dataset[j] for j in range(i, end)])

            def _shutdown_workers(self):
                FakeLoader.shut_down.append(True)
        return Batches()


@pytest.fixture
def fake_torch(monkeypatch):
    data = types.ModuleType("torch.utils.data")
    data.DataLoader = FakeLoader
    for name, module in (("torch", types.ModuleType("torch")),
                         ("torch.utils", types.ModuleType("torch.utils")),
                         ("torch.utils.data", data)):
        monkeypatch.setitem(sys.modules, name, module)
    FakeLoader.shut_down.clear()


def grey16_files(folder, count):
    folder.mkdir()
    paths = []
    for k in range(count):
        paths.append(saved(folder, Image.fromarray(np.full((8, 8), 257 * k, np.uint16)),
                           f"{k}.png"))
    return paths


def test_the_build_names_a_bad_file_or_skips_it_and_always_stops_its_workers(tmp_path,
                                                                              fake_torch):
    paths = grey16_files(tmp_path / "images", 70) + [str(tmp_path / "bad.png")]
    (tmp_path / "bad.png").write_bytes(b"not a PNG")
    labels = np.arange(len(paths)) % 3
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'bad.png'}: cannot be decoded"):
        cached_images(paths, labels, 4, str(cache), 0, False)
    assert FakeLoader.shut_down == [True]
    (folder,) = cache.iterdir()
    assert os.listdir(folder) == [".lock"]                 # nothing half-built
    images, kept, meta = cached_images(paths, labels, 4, str(cache), 0, False, True)
    assert FakeLoader.shut_down == [True, True]
    assert images.shape == (70, 4, 4, 3) and images[5, 0, 0].tolist() == [5, 5, 5]
    assert kept.tolist() == labels[:70].tolist()
    assert meta["skipped_files"][0][0] == str(tmp_path / "bad.png")


def test_a_full_disk_under_the_cache_gets_the_bytes_needed(tmp_path, fake_torch, small_disk):
    disk = small_disk
    paths = grey16_files(tmp_path / "images", 4) * 500
    labels = np.zeros(len(paths), np.int64)
    with pytest.raises(ValueError, match=rf"^--cache-dir {disk}: the image cache needs "
                                         rf"[\d,]+ bytes, [\d,]+ are free"):
        cached_images(paths, labels, 4, str(disk), 0, False)
    # Past the check (another writer filled the disk since): the file's allocation
    # fails with ENOSPC, before any image is written through the memory map.
    (disk / "build").mkdir()
    with pytest.raises(OSError, match=r"no space left on the device: [\d,]+ bytes "
                                      r"needed, [\d,]+ free") as caught:
        folders.build_cache(paths, labels, 4, str(disk / "build"), 0, False)
    assert caught.value.filename == str(disk / "build" / "decoding.npy")
    assert os.listdir(disk / "build") == []


def test_a_build_without_a_terminal_prints_progress_lines(tmp_path, fake_torch, capsys):
    paths = grey16_files(tmp_path / "images", 70)
    (tmp_path / "cache").mkdir()
    folders.build_cache(paths, np.zeros(70, np.int64), 2, str(tmp_path / "cache"), 0, 0.0)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" images,")[0] for line in lines] == ["decoding: 64 of 70",
                                                             "decoding: 70 of 70"]
    assert all(line.endswith(" images/s") for line in lines)
