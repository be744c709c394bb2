"""ImageNet as image files, read with torchvision (the ``imagenet`` extra).

Layouts under ``PATH`` (see data/README.md):

- ILSVRC2012 as distributed: ``train/<wnid>/*.JPEG`` and the validation images flat in
  ``val/`` (``ILSVRC2012_val_00000001.JPEG`` ...), labelled by the development kit
  (``ILSVRC2012_devkit_t12.tar.gz`` or its extracted folder, in ``PATH`` or given by
  ``--devkit``): ``data/meta.mat`` maps ILSVRC2012_ID to wnid and
  ``data/ILSVRC2012_validation_ground_truth.txt`` gives the ID of each validation image;
- the archives themselves (``ILSVRC2012_img_train.tar``, ``ILSVRC2012_img_val.tar`` and
  the devkit in ``PATH``): torchvision's ``ImageNet`` unpacks them there on first use;
- ``train/<class>/*`` with ``val/<class>/*``, or ``<class>/*`` alone (torchvision's
  ``ImageFolder``; the training images are then split by seed).

Classes are the sorted class folder names of the training tree (wnids for ImageNet).
Each image is decoded, box-filtered to r x r RGB (the whole image, as the downsampled
ImageNet of Chrabaszcz et al. 2017) by DataLoader worker processes and stored once in a
uint8 ``.npy`` cache that later runs memory-map. Every file is decoded to 8-bit RGB
(:func:`rgb8`: 16-bit, palette, CMYK, greyscale and alpha sources); one that cannot be
decoded stops the run with its name unless ``--skip-unreadable`` lists and leaves it out.
"""
import errno
import hashlib
import io
import json
import os
import tarfile
import time

import numpy as np
from tqdm.auto import tqdm

from ..files import (atomic_save, atomic_write_text, disk_full, free_bytes, npy_size,
                     output_folder)
from .files import locked
from .splits import Data, check_classes, split_train_val, whole

DEVKIT = "ILSVRC2012_devkit_t12"
ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", f"{DEVKIT}.tar.gz")


def torchvision():
    """The torchvision module, or an ImportError that says how to install it."""
    try:
        import torchvision
    except ImportError:
        raise ImportError("reading image files needs torchvision: pip install "
                          "'tallskinny-np[imagenet]'") from None
    return torchvision


def scan(root, class_to_idx):
    """``(paths, labels)`` of the image files under ``root/<class>/`` for the classes of
    ``class_to_idx`` (folders of other classes are ignored), and the names of the classes
    whose folder holds no image."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
    present = {e.name for e in os.scandir(root) if e.is_dir()}
    missing = sorted(set(class_to_idx) - present)
    if missing:
        raise ValueError(f"{root} has no folder for the classes {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''} of the training tree")
    samples = make_dataset(root, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    counts = np.bincount([y for _, y in samples], minlength=len(class_to_idx))
    empty = [c for c, k in class_to_idx.items() if counts[k] == 0]
    return [p for p, _ in samples], np.array([y for _, y in samples], np.int64), empty


def class_folders(root, classes):
    """The first ``classes`` sorted class folder names under ``root`` (all for None)."""
    from torchvision.datasets.folder import find_classes
    try:
        names, _ = find_classes(root)
    except FileNotFoundError:
        raise ValueError(f"{root} holds no class folders; expected <class>/<image> "
                         f"or train/<class>/<image>") from None
    check_classes(classes, len(names), root)
    return names[:classes]


def find_devkit(path, devkit):
    """The devkit given, or ``PATH/ILSVRC2012_devkit_t12[.tar.gz]``; None if absent."""
    if devkit is not None:
        if not os.path.exists(devkit):
            raise FileNotFoundError(f"the devkit {devkit} does not exist")
        return devkit
    for name in (DEVKIT, f"{DEVKIT}.tar.gz"):
        if os.path.exists(os.path.join(path, name)):
            return os.path.join(path, name)
    return None


def devkit_val_wnids(devkit):
    """The wnid of each ILSVRC2012 validation image, in file-number order, from the devkit
    folder or ``.tar.gz``: ``data/meta.mat`` (synsets: ILSVRC2012_ID, WNID) and
    ``data/ILSVRC2012_validation_ground_truth.txt`` (one ILSVRC2012_ID per line)."""
    from scipy.io import loadmat
    members = ("data/meta.mat", "data/ILSVRC2012_validation_ground_truth.txt")
    try:
        if os.path.isdir(devkit):
            raw = [open(os.path.join(devkit, m), "rb").read() for m in members]
        else:
            with tarfile.open(devkit) as tar:
                raw = [tar.extractfile(f"{DEVKIT}/{m}").read() for m in members]
        synsets = loadmat(io.BytesIO(raw[0]), squeeze_me=True)["synsets"]
        wnid = {int(i): str(w) for i, w in zip(synsets["ILSVRC2012_ID"], synsets["WNID"])}
        return [wnid[int(line)] for line in raw[1].split()]
    except (OSError, KeyError, ValueError, tarfile.TarError) as e:
        raise ValueError(f"{devkit}: not a readable ILSVRC2012 devkit (needs {members[0]} "
                         f"and {members[1]}): {e}") from None


def flat_val(val_root, devkit, class_to_idx):
    """``(paths, labels)`` of the flat ILSVRC2012 validation folder, labelled by the
    devkit; images of classes outside ``class_to_idx`` are left out."""
    from torchvision.datasets.folder import IMG_EXTENSIONS
    files = sorted(f for f in os.listdir(val_root) if f.lower().endswith(IMG_EXTENSIONS))
    wnids = devkit_val_wnids(devkit)
    if len(files) != len(wnids):
        raise ValueError(f"{val_root} holds {len(files)} images but the devkit {devkit} "
                         f"labels {len(wnids)}")
    keep = [(os.path.join(val_root, f), class_to_idx[w]) for f, w in zip(files, wnids)
            if w in class_to_idx]
    return [p for p, _ in keep], np.array([y for _, y in keep], np.int64)


def layout(path, classes, devkit):
    """``(names, train, val, empty)``: the class names, ``(paths, labels)`` of the
    training images and of the validation images (None: split the training images), and
    the class folders that hold no image."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"the data path {path} does not exist or is not a folder")
    tv = torchvision()
    if not os.path.isdir(os.path.join(path, "train")) and all(
            os.path.exists(os.path.join(path, a)) for a in ARCHIVES):
        # The archives: torchvision unpacks them into PATH/train and PATH/val once.
        splits = [tv.datasets.ImageNet(path, split=s) for s in ("train", "val")]
        names = splits[0].wnids[:classes]
        sets = [([p for p, y in d.samples if y < len(names)],
                 np.array([y for _, y in d.samples if y < len(names)], np.int64))
                for d in splits]
        return names, sets[0], sets[1], []
    train_root = os.path.join(path, "train")
    if not os.path.isdir(train_root):
        names = class_folders(path, classes)
        *train, empty = scan(path, {c: k for k, c in enumerate(names)})
        return names, train, None, [os.path.join(path, c) for c in empty]
    names = class_folders(train_root, classes)
    class_to_idx = {c: k for k, c in enumerate(names)}
    *train, empty = scan(train_root, class_to_idx)
    empty = [os.path.join(train_root, c) for c in empty]
    val_root = os.path.join(path, "val")
    if not os.path.isdir(val_root):
        return names, train, None, empty
    if any(e.is_dir() for e in os.scandir(val_root)):
        *val, empty_val = scan(val_root, class_to_idx)
        return names, train, val, empty + [os.path.join(val_root, c) for c in empty_val]
    kit = find_devkit(path, devkit)
    if kit is None:
        raise ValueError(f"{val_root} holds the images directly (the ILSVRC2012 "
                         f"validation layout) and their labels are in the devkit: put "
                         f"{DEVKIT}.tar.gz into {path} or pass --devkit PATH")
    return names, train, flat_val(val_root, kit, class_to_idx), empty


def read_image(path, resolution):
    """The image at ``path`` as uint8 (r, r, 3) RGB (:func:`rgb8`), the whole image
    box-filtered to r x r (Pillow's BOX filter, as torchvision's Resize uses it)."""
    from PIL import Image
    with Image.open(path) as im:
        im.draft("RGB", (resolution, resolution))  # JPEG: decode at a reduced scale
        return np.asarray(rgb8(im).resize((resolution, resolution), Image.Resampling.BOX))


def rgb8(im):
    """A decoded Pillow image as 8-bit RGB. 16- and 32-bit integer greyscale is scaled
    from 0..65535 (Pillow's own conversion clips it at 255, which makes most of a 16-bit
    image white); an alpha channel or a transparent palette entry is composited over
    white (the colour under a transparent pixel is arbitrary); palette, greyscale, CMYK
    and the other modes go through Pillow's conversion."""
    from PIL import Image
    if im.mode.startswith("I"):
        values = np.asarray(im, dtype=np.float64)
        grey = np.clip(np.rint(values / 257), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if im.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


class Decoded:
    """A map-style dataset for torch's DataLoader: item i is ``(image, error)`` of the
    i-th path; for a file that cannot be decoded a black image and what went wrong."""

    def __init__(self, paths, resolution):
        self.paths, self.resolution = paths, resolution

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image
        try:
            return read_image(self.paths[i], self.resolution), ""
        # What PIL raises for truncated, corrupt, oversized or non-image files.
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            return np.zeros((self.resolution,) * 2 + (3,), np.uint8), str(e) or type(e).__name__


def stack(items):
    """DataLoader's collate: the images as one uint8 array and the errors ('' for none)."""
    images, errors = zip(*items)
    return np.stack(images), list(errors)


def unreadable(path, why):
    """The ValueError for an image file that cannot be decoded."""
    return ValueError(f"{path}: cannot be decoded as an image ({why}); pass "
                      f"--skip-unreadable to leave such files out")


def default_workers():
    return min(8, os.cpu_count() or 1)


def cache_size(n, resolution):
    """The bytes an image cache of n images at r x r takes: the images, the labels and
    ``meta.json`` (whose list of skipped files is bounded by 4 KiB a file)."""
    return npy_size(np.empty((n, resolution, resolution, 3), np.uint8)[:0]) \
        + n * resolution * resolution * 3 + npy_size(np.empty(n, np.int64)) + 4096


def build_cache(paths, labels, resolution, directory, workers, progress,
                skip_unreadable=False):
    """Decode every image of ``paths`` with ``workers`` DataLoader processes into
    ``directory``: ``images.npy`` (uint8 (n, r, r, 3)), ``labels.npy`` and ``meta.json``
    (files, the skipped files with their errors, decode throughput). A file that cannot be
    decoded stops the build with its name, unless ``skip_unreadable``. The images' file is
    allocated in full first, so that a full disk is an error here (ENOSPC, with the bytes
    needed) and not a SIGBUS while writing through the memory map. Each file is written
    under a temporary name and moved into place, ``meta.json`` last, so an interrupted
    build leaves no cache; the decoding processes end with the build, however it ends.
    ``progress``: True for a progress bar (a terminal), a number of seconds for a line at
    that interval on stdout (output piped), False for neither."""
    from torch.utils.data import DataLoader
    tmp = os.path.join(directory, "decoding.npy")
    try:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                           shape=(len(paths), resolution, resolution, 3))
        with open(tmp, "r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, os.path.getsize(tmp))
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):   # no fallocate here
                    raise
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise disk_full(e, tmp, cache_size(len(paths), resolution)) from None
    loader = DataLoader(Decoded(paths, resolution), batch_size=64, num_workers=workers,
                        collate_fn=stack)
    kept, skipped = [], []
    start = time.perf_counter()
    batches = iter(loader)
    every = None if isinstance(progress, bool) else progress
    next_report = time.monotonic() + (every or 0)
    try:
        with tqdm(total=len(paths), desc=f"decoding {resolution}x{resolution} images",
                  unit="img", disable=progress is not True) as bar:
            for i, (batch, errors) in enumerate(batches):
                ok = np.array([not e for e in errors])
                for k in np.flatnonzero(~ok):
                    path = paths[loader.batch_size * i + k]
                    if not skip_unreadable:
                        raise unreadable(path, errors[k])
                    skipped.append([path, errors[k]])
                n = int(ok.sum())
                images[len(kept):len(kept) + n] = batch[ok]
                kept += [loader.batch_size * i + k for k in np.flatnonzero(ok)]
                bar.update(len(ok))
                if every is not None and time.monotonic() >= next_report:
                    done = min(loader.batch_size * (i + 1), len(paths))
                    print(f"decoding: {done} of {len(paths)} images, "
                          f"{done / (time.perf_counter() - start):.0f} images/s", flush=True)
                    next_report = time.monotonic() + every
        seconds = time.perf_counter() - start
        if not kept:
            raise ValueError(f"none of the {len(paths)} image files could be read "
                             f"(first: {paths[0]}: {skipped[0][1]})")
        images.flush()
    except BaseException:
        del images
        os.remove(tmp)
        raise
    finally:
        # Stop the decoding processes now, not when the iterator is collected: an error
        # or a signal must not leave them running.
        getattr(batches, "_shutdown_workers", lambda: None)()
    del images
    if len(kept) < len(paths):  # keep only the rows written: rewrite the header's shape
        full = np.load(tmp, mmap_mode="r")
        atomic_save(os.path.join(directory, "images.npy"), full[:len(kept)])
        del full
        os.remove(tmp)
    else:
        os.replace(tmp, os.path.join(directory, "images.npy"))
    atomic_save(os.path.join(directory, "labels.npy"), labels[kept])
    meta = {"files": len(paths), "skipped": len(skipped), "skipped_files": skipped,
            "resolution": resolution, "workers": workers, "seconds": seconds,
            "images_per_s": len(paths) / seconds}
    atomic_write_text(os.path.join(directory, "meta.json"), json.dumps(meta))
    return meta


def cached_images(paths, labels, resolution, cache_dir, workers, progress,
                  skip_unreadable=False):
    """``(images, labels, meta)`` of ``paths``: images as a read-only uint8 memmap from
    the cache, built on first use. The cache is keyed by the files' absolute paths and
    labels and the resolution. One process builds a cache at a time: another one wanting
    it meanwhile is refused, naming the builder (:func:`files.locked`)."""
    key = hashlib.sha1(json.dumps([resolution, [os.path.abspath(p) for p in paths],
                                   labels.tolist()]).encode()).hexdigest()[:16]
    directory = os.path.join(cache_dir, f"images-{resolution}-{key}")
    meta_path = os.path.join(directory, "meta.json")
    built = False
    if not os.path.exists(meta_path):
        output_folder(directory, "--cache-dir")
        with locked(directory, "the image cache"):
            if not os.path.exists(meta_path):     # another process may have built it since
                needed, free = cache_size(len(paths), resolution), free_bytes(directory)
                if needed > free:
                    raise ValueError(f"--cache-dir {cache_dir}: the image cache needs "
                                     f"{needed:,} bytes, {free:,} are free; free space "
                                     f"or choose another --cache-dir")
                build_cache(paths, labels, resolution, directory, workers, progress,
                            skip_unreadable)
                built = True
    with open(meta_path) as f:
        meta = json.load(f)
    if meta.get("skipped_files") and not skip_unreadable:
        # Built with --skip-unreadable: the same files are still left out, so say so.
        raise unreadable(*meta["skipped_files"][0])
    meta.update(cached=not built, cache=directory)
    return (np.load(os.path.join(directory, "images.npy"), mmap_mode="r"),
            np.load(os.path.join(directory, "labels.npy")), meta)


def image_folder_data(path, resolution=None, classes=None, val_fraction=0.2, seed=0,
                      cache_dir=None, devkit=None, workers=None, progress=False,
                      skip_unreadable=False, allow_empty_classes=False):
    """ImageNet (or any image tree) from ``path`` in one of the layouts of the module
    docstring: images resized to ``resolution`` (default 32) and cached, the first
    ``classes`` classes. Without a validation set the training images are split by seed.
    A class folder without images is refused (its class would be an output never
    trained), unless ``allow_empty_classes``: then ``Data.warnings`` names it; a file
    that cannot be decoded is refused by name, unless ``skip_unreadable``: then
    ``Data.warnings`` names each one left out. ``Data.decode`` holds, per cache, the
    decoding's throughput and whether the images came from an earlier build."""
    resolution = resolution or 32
    cache_dir = cache_dir or default_cache_dir()
    workers = default_workers() if workers is None else workers
    names, train, val, empty = layout(path, classes, devkit)
    if not train[0]:
        raise ValueError(f"the class folders of {path} hold no image files")
    if empty and not allow_empty_classes:
        raise ValueError(f"the class folder {empty[0]} holds no images"
                         + (f" (nor do {len(empty) - 1} more)" if len(empty) > 1 else "")
                         + "; its class would be an output never trained: remove it or "
                           "pass --allow-empty-classes")
    warnings = [f"{folder}: no images" for folder in empty]
    images, labels, meta = cached_images(*train, resolution, cache_dir, workers, progress,
                                         skip_unreadable)
    skipped, metas = meta["skipped"], [meta]
    if val is None:
        tr, va = split_train_val(images, labels, val_fraction, seed)
    else:
        if not val[0]:
            raise ValueError(f"the validation folder of {path} holds no images of the "
                             f"chosen classes")
        val_images, val_labels, meta = cached_images(*val, resolution, cache_dir, workers,
                                                     progress, skip_unreadable)
        tr, va, skipped = whole(images, labels), whole(val_images, val_labels), \
            skipped + meta["skipped"]
        metas.append(meta)
    warnings += [f"{file}: skipped, cannot be decoded ({why})"
                 for m in metas for file, why in m.get("skipped_files", [])]
    return Data(tr, va, list(names), skipped, tuple(warnings), tuple(metas))


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tallskinny_np")
