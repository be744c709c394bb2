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
uint8 ``.npy`` cache that later runs memory-map; unreadable files are skipped and counted.
"""
import hashlib
import io
import json
import os
import tarfile
import time

import numpy as np
from tqdm.auto import tqdm

from .datasets import Data, check_classes, split_train_val, whole
from .files import atomic_save, atomic_write_text, locked, output_folder

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
    """``(names, train, val, warnings)``: the class names, ``(paths, labels)`` of the
    training images and of the validation images (None: split the training images)."""
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
        return names, train, None, [f"{path}/{c}: no images" for c in empty]
    names = class_folders(train_root, classes)
    class_to_idx = {c: k for k, c in enumerate(names)}
    *train, empty = scan(train_root, class_to_idx)
    warnings = [f"{train_root}/{c}: no images" for c in empty]
    val_root = os.path.join(path, "val")
    if not os.path.isdir(val_root):
        return names, train, None, warnings
    if any(e.is_dir() for e in os.scandir(val_root)):
        *val, empty = scan(val_root, class_to_idx)
        return names, train, val, warnings + [f"{val_root}/{c}: no images" for c in empty]
    kit = find_devkit(path, devkit)
    if kit is None:
        raise ValueError(f"{val_root} holds the images directly (the ILSVRC2012 "
                         f"validation layout) and their labels are in the devkit: put "
                         f"{DEVKIT}.tar.gz into {path} or pass --devkit PATH")
    return names, train, flat_val(val_root, kit, class_to_idx), warnings


def read_image(path, resolution):
    """The image at ``path`` as uint8 (r, r, 3) RGB, the whole image box-filtered to r x r."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode, Resize
    with Image.open(path) as im:
        im.draft("RGB", (resolution, resolution))  # JPEG: decode at a reduced scale
        resize = Resize((resolution, resolution), interpolation=InterpolationMode.BOX)
        return np.asarray(resize(im.convert("RGB")))


class Decoded:
    """A map-style dataset for torch's DataLoader: item i is ``(image, readable)`` of the
    i-th path, a black image and False for a file that cannot be decoded."""

    def __init__(self, paths, resolution):
        self.paths, self.resolution = paths, resolution

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image
        try:
            return read_image(self.paths[i], self.resolution), True
        # What PIL raises for truncated, corrupt, oversized or non-image files.
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return np.zeros((self.resolution,) * 2 + (3,), np.uint8), False


def stack(items):
    """DataLoader's collate: the images as one uint8 array and the readable flags."""
    images, ok = zip(*items)
    return np.stack(images), np.array(ok)


def default_workers():
    return min(8, os.cpu_count() or 1)


def build_cache(paths, labels, resolution, directory, workers, progress):
    """Decode every image of ``paths`` with ``workers`` DataLoader processes into
    ``directory``: ``images.npy`` (uint8 (n, r, r, 3)), ``labels.npy`` and ``meta.json``
    (files, skipped, decode throughput). Each file is written under a temporary name and
    moved into place, ``meta.json`` last, so an interrupted build leaves no cache."""
    from torch.utils.data import DataLoader
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, "decoding.npy")
    images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                       shape=(len(paths), resolution, resolution, 3))
    loader = DataLoader(Decoded(paths, resolution), batch_size=64, num_workers=workers,
                        collate_fn=stack)
    kept = []
    start = time.perf_counter()
    with tqdm(total=len(paths), desc=f"decoding {resolution}x{resolution} images",
              unit="img", disable=not progress) as bar:
        for i, (batch, ok) in enumerate(loader):
            n = int(ok.sum())
            images[len(kept):len(kept) + n] = batch[ok]
            kept += [loader.batch_size * i + k for k in np.flatnonzero(ok)]
            bar.update(len(ok))
    seconds = time.perf_counter() - start
    if not kept:
        del images
        os.remove(tmp)
        raise ValueError(f"none of the {len(paths)} image files could be read "
                         f"(first: {paths[0]})")
    images.flush()
    del images
    if len(kept) < len(paths):  # keep only the rows written: rewrite the header's shape
        full = np.load(tmp, mmap_mode="r")
        atomic_save(os.path.join(directory, "images.npy"), full[:len(kept)])
        del full
        os.remove(tmp)
    else:
        os.replace(tmp, os.path.join(directory, "images.npy"))
    atomic_save(os.path.join(directory, "labels.npy"), labels[kept])
    meta = {"files": len(paths), "skipped": len(paths) - len(kept), "resolution": resolution,
            "workers": workers, "seconds": seconds, "images_per_s": len(paths) / seconds}
    atomic_write_text(os.path.join(directory, "meta.json"), json.dumps(meta))
    return meta


def cached_images(paths, labels, resolution, cache_dir, workers, progress):
    """``(images, labels, meta)`` of ``paths``: images as a read-only uint8 memmap from
    the cache, built on first use. The cache is keyed by the files' absolute paths and
    labels and the resolution. One process builds a cache at a time: another one wanting
    it meanwhile is refused, naming the builder (:func:`files.locked`)."""
    key = hashlib.sha1(json.dumps([resolution, [os.path.abspath(p) for p in paths],
                                   labels.tolist()]).encode()).hexdigest()[:16]
    directory = os.path.join(cache_dir, f"images-{resolution}-{key}")
    meta_path = os.path.join(directory, "meta.json")
    if not os.path.exists(meta_path):
        output_folder(directory, "--cache-dir")
        with locked(directory, "the image cache"):
            if not os.path.exists(meta_path):     # another process may have built it since
                build_cache(paths, labels, resolution, directory, workers, progress)
    with open(meta_path) as f:
        meta = json.load(f)
    return (np.load(os.path.join(directory, "images.npy"), mmap_mode="r"),
            np.load(os.path.join(directory, "labels.npy")), meta)


def image_folder_data(path, resolution=None, classes=None, val_fraction=0.2, seed=0,
                      cache_dir=None, devkit=None, workers=None, progress=False):
    """ImageNet (or any image tree) from ``path`` in one of the layouts of the module
    docstring: images resized to ``resolution`` (default 32) and cached, the first
    ``classes`` classes. Without a validation set the training images are split by seed.
    ``Data.warnings`` names class folders without images; ``Data.decode`` holds the
    cache builds' throughput."""
    resolution = resolution or 32
    cache_dir = cache_dir or default_cache_dir()
    workers = default_workers() if workers is None else workers
    names, train, val, warnings = layout(path, classes, devkit)
    if not train[0]:
        raise ValueError(f"the class folders of {path} hold no image files")
    images, labels, meta = cached_images(*train, resolution, cache_dir, workers, progress)
    skipped, metas = meta["skipped"], [meta]
    if val is None:
        tr, va = split_train_val(images, labels, val_fraction, seed)
    else:
        if not val[0]:
            raise ValueError(f"the validation folder of {path} holds no images of the "
                             f"chosen classes")
        val_images, val_labels, meta = cached_images(*val, resolution, cache_dir, workers,
                                                     progress)
        tr, va, skipped = whole(images, labels), whole(val_images, val_labels), \
            skipped + meta["skipped"]
        metas.append(meta)
    return Data(tr, va, list(names), skipped, tuple(warnings), tuple(metas))


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tallskinny_np")
