"""Datasets: the embedded digits, ImageNet as an ImageFolder tree, downsampled ImageNet
batches and a synthetic stand-in of ImageNet shape (DESIGN.md section 6, ``data/``).

Every source ends up as uint8 images ``(N, r, r, channels)`` (height, width, colour) and
int64 labels ``0..classes-1``. Images stay uint8 (for ImageFolder trees a read-only
``.npy`` memmap) until a batch is drawn; :func:`standardize` turns a batch into the
``(B, r * r * channels)`` float rows the MLP takes, with per-channel statistics of the
training split. Shuffling, the train/validation split and the synthetic data depend on the
seed only, so a run can be reproduced (and resumed) from its step counter.

The embedded default needs no download: the 8x8 handwritten digits (UCI optdigits,
CC BY 4.0, see data/DIGITS_LICENSE.txt) ship inside the package.
"""
import functools
import glob
import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from importlib import resources

import numpy as np
from tqdm.auto import tqdm

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff",
                  ".webp")
SOURCES = ("digits", "imagefolder", "imagenet-npz", "synthetic")


def load_digits():
    """``(images, labels)``: uint8 images (1797, 8, 8) with values 0..16, int64 labels 0..9."""
    with resources.files("tallskinny_np.training").joinpath("data/digits.npz").open("rb") as f:
        d = np.load(f)
        return d["images"], d["target"].astype(np.int64)


@dataclass(frozen=True)
class Split:
    """The rows ``rows`` of a set of uint8 ``images`` (N, r, r, channels) with int64
    ``labels``: a training or validation split. Both splits of one source share the
    (possibly memory-mapped) image array, so splitting copies nothing."""
    images: np.ndarray
    labels: np.ndarray
    rows: np.ndarray

    def __len__(self):
        return len(self.rows)

    def batch(self, index):
        """uint8 images and labels of the split's samples ``index`` (positions in the
        split, any order)."""
        rows = self.rows[index]
        return np.asarray(self.images[rows]), self.labels[rows]


@dataclass(frozen=True)
class Data:
    """A training and a validation split, the class names, and the number of image files
    that could not be read (skipped)."""
    train: Split
    val: Split
    classes: list
    skipped: int = 0

    @property
    def n_features(self):
        return int(np.prod(self.train.images.shape[1:]))


def whole(images, labels):
    """All of ``images`` as one split."""
    return Split(images, labels, np.arange(len(labels)))


def split_train_val(images, labels, val_fraction, seed):
    """A seeded random split into training and validation rows (``val_fraction`` of the
    samples, at least one of each when ``0 < val_fraction < 1``)."""
    n = len(labels)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"the validation fraction must lie in [0, 1); got {val_fraction}")
    n_val = min(max(int(round(val_fraction * n)), int(val_fraction > 0)), n - 1)
    perm = np.random.default_rng([seed, 1]).permutation(n)
    # Sorted rows keep memmap reads of a split roughly sequential.
    return (Split(images, labels, np.sort(perm[n_val:])),
            Split(images, labels, np.sort(perm[:n_val])))


@functools.lru_cache(maxsize=2)
def epoch_permutation(n, seed, epoch):
    """The order of the n training samples in epoch ``epoch``: a function of the seed
    and the epoch only, so any step's batch can be recomputed after a restart."""
    perm = np.random.default_rng([seed, 0, epoch]).permutation(n)
    perm.flags.writeable = False
    return perm


def batch_index(n, batch, step, seed):
    """Positions of the samples of step ``step`` in a training split of n samples:
    epochs of ``n // batch`` full batches, each epoch a fresh seeded permutation."""
    if not 1 <= batch <= n:
        raise ValueError(f"the batch size must lie in [1, {n}] (the training split has "
                         f"{n} samples); got {batch}")
    per_epoch = n // batch
    epoch, k = divmod(step, per_epoch)
    return epoch_permutation(n, seed, epoch)[k * batch:(k + 1) * batch]


def channel_statistics(split, chunk=4096):
    """Per-channel mean and standard deviation (float64) of a split's pixels, read in
    chunks so that a memmap is never loaded whole."""
    total = np.zeros(split.images.shape[-1])
    total_sq = np.zeros_like(total)
    for start in range(0, len(split), chunk):
        x = split.batch(np.arange(start, min(start + chunk, len(split))))[0]
        x = x.reshape(-1, x.shape[-1]).astype(np.float64)
        total += x.sum(axis=0)
        total_sq += (x * x).sum(axis=0)
    count = len(split) * np.prod(split.images.shape[1:-1])
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0))
    # A constant channel carries no information; leave it centred rather than divide by 0.
    return mean, np.where(std > 0, std, 1.0)


def standardize(images, mean, std, dtype, xp=np):
    """uint8 images (B, r, r, channels) as rows ``(B, r * r * channels)`` of dtype with
    zero mean and unit variance per channel, on the array module xp."""
    x = (xp.asarray(images).astype(dtype) - xp.asarray(mean, dtype=dtype)) \
        / xp.asarray(std, dtype=dtype)
    return x.reshape(len(x), -1)


def class_subset(images, labels, classes):
    """The samples of the first ``classes`` labels (all of them for None)."""
    if classes is None:
        return images, labels
    keep = labels < classes
    return images[keep], labels[keep]


def box_downsample(images, resolution):
    """uint8 images (N, s, s, ch) averaged over k x k boxes to (N, r, r, ch), s = k r."""
    s = images.shape[1]
    if resolution is None or resolution == s:
        return images
    if s % resolution:
        raise ValueError(f"these images are {s}x{s}; the resolution must divide {s}, got "
                         f"{resolution}")
    k = s // resolution
    boxes = images.reshape(len(images), resolution, k, resolution, k, images.shape[-1])
    return np.rint(boxes.mean(axis=(2, 4))).astype(np.uint8)


def check_classes(classes, available, source):
    if classes is not None and not 1 <= classes <= available:
        raise ValueError(f"--classes must lie in [1, {available}] for {source}; got "
                         f"{classes}")


def digits_data(resolution=None, classes=None, val_fraction=0.2, seed=0):
    """The embedded digits as (N, 8, 8, 1) images, split by seed."""
    if resolution not in (None, 8):
        raise ValueError(f"the digits are 8x8 images; --resolution must be 8, got "
                         f"{resolution}")
    check_classes(classes, 10, "the digits")
    images, labels = class_subset(*load_digits(), classes)
    train, val = split_train_val(images[..., None], labels, val_fraction, seed)
    return Data(train, val, [str(k) for k in range(classes or 10)])


def synthetic_imagenet(n, resolution=32, classes=1000, seed=0):
    """n uint8 images (n, r, r, 3) of ImageNet shape and int64 labels, for runs where no
    ImageNet is present: each class is a fixed random colour pattern at a quarter of the
    resolution, blurred up and overlaid with pixel noise, so that the classes are
    learnable but not trivially so."""
    rng = np.random.default_rng([seed, 2])
    coarse = max(resolution // 4, 1)
    templates = rng.uniform(0, 255, (classes, coarse, coarse, 3))
    k = -(-resolution // coarse)
    templates = templates.repeat(k, axis=1).repeat(k, axis=2)[:, :resolution, :resolution]
    labels = rng.integers(0, classes, n)
    noise = rng.normal(0, 48, (n, resolution, resolution, 3))
    images = np.clip(templates[labels] + noise, 0, 255).round().astype(np.uint8)
    return images, labels.astype(np.int64)


def synthetic_data(n, resolution=None, classes=None, val_fraction=0.2, seed=0):
    """:func:`synthetic_imagenet` (resolution 32 and 1000 classes unless given), split."""
    resolution = resolution or 32
    classes = classes or 1000
    if n < 2 * classes:
        raise ValueError(f"synthetic data with {classes} classes needs at least "
                         f"{2 * classes} images; got {n}")
    images, labels = synthetic_imagenet(n, resolution, classes, seed)
    train, val = split_train_val(images, labels, val_fraction, seed)
    return Data(train, val, [f"synthetic{k}" for k in range(classes)])


# ---- ImageFolder trees ------------------------------------------------------------------

def folder_classes(root):
    """Sorted class directory names under ``root`` (ImageFolder's class order)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"the data path {root} does not exist or is not a directory")
    classes = sorted(e.name for e in os.scandir(root)
                     if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"the data path {root} holds no class directories; expected an "
                         f"ImageFolder tree <class>/<image> or train/<class>/<image>")
    return classes


def folder_files(root, classes):
    """``(paths, labels)`` of the image files of ``classes`` under ``root``, sorted."""
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{root} has no directory for class {name!r} (present "
                                    f"in the training tree)")
        for dirpath, _, files in sorted(os.walk(folder)):
            for f in sorted(files):
                if f.lower().endswith(IMAGE_SUFFIXES):
                    paths.append(os.path.join(dirpath, f))
                    labels.append(label)
    if not paths:
        raise ValueError(f"the class directories under {root} hold no image files "
                         f"({', '.join(IMAGE_SUFFIXES)})")
    return paths, np.asarray(labels, dtype=np.int64)


def read_image(path, resolution):
    """The image at ``path`` as uint8 (r, r, 3) RGB, the whole image box-filtered to
    r x r (as the downsampled ImageNet of Chrabaszcz et al. 2017)."""
    from PIL import Image
    with Image.open(path) as im:
        im.draft("RGB", (resolution, resolution))  # JPEG: decode at a reduced scale
        return np.asarray(im.convert("RGB").resize((resolution, resolution),
                                                   Image.Resampling.BOX))


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tallskinny_np")


def build_folder_cache(paths, labels, resolution, directory):
    """Read, resize and store every image of ``paths`` in ``directory`` as
    ``images.npy`` (uint8 (n, r, r, 3)), ``labels.npy`` and ``meta.json``; unreadable
    files are skipped and counted. Each file is written under a temporary name and moved
    into place, so an interrupted build leaves no half-written cache behind."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading image files needs Pillow: pip install "
                          "'tallskinny-np[imagenet]'") from None
    # What PIL raises for truncated, corrupt, oversized or non-image files.
    unreadable = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f"partial-{os.getpid()}.npy")
    shape = (len(paths), resolution, resolution, 3)
    images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    kept = []
    for i, path in enumerate(tqdm(paths, desc=f"caching {resolution}x{resolution} images",
                                  unit="img")):
        try:
            images[len(kept)] = read_image(path, resolution)
        except unreadable:
            continue
        kept.append(i)
    n = len(kept)
    if n == 0:
        del images
        os.remove(tmp)
        raise ValueError(f"none of the {len(paths)} image files could be read "
                         f"(first: {paths[0]})")
    final = tmp
    if n < len(paths):
        final = os.path.join(directory, f"partial-{os.getpid()}-compact.npy")
        out = np.lib.format.open_memmap(final, mode="w+", dtype=np.uint8,
                                        shape=(n,) + shape[1:])
        for start in range(0, n, 4096):
            stop = min(start + 4096, n)
            out[start:stop] = images[start:stop]
        out.flush()
        del out
        os.remove(tmp)
    else:
        images.flush()
    del images
    atomic_save(os.path.join(directory, "labels.npy"), labels[kept])
    os.replace(final, os.path.join(directory, "images.npy"))
    meta = {"files": len(paths), "skipped": len(paths) - n, "resolution": resolution}
    atomic_write_text(os.path.join(directory, "meta.json"), json.dumps(meta))


def atomic_save(path, array):
    """np.save to ``path`` through a temporary file and os.replace."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def atomic_write_text(path, text):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_image_folder(root, resolution, classes, cache_dir=None):
    """``(images, labels, skipped)`` of an ImageFolder tree ``root/<class>/<image>`` with
    the class list ``classes``: images as a read-only uint8 memmap (n, r, r, 3) from the
    cache, built on first use (see :func:`build_folder_cache`). The cache is keyed by the
    tree's path, the resolution, the classes and the file names."""
    paths, labels = folder_files(root, classes)
    key = hashlib.sha1(json.dumps([os.path.abspath(root), resolution, classes,
                                   [os.path.relpath(p, root) for p in paths]]).encode())
    directory = os.path.join(cache_dir or default_cache_dir(),
                             f"imagefolder-{resolution}-{key.hexdigest()[:16]}")
    if not os.path.exists(os.path.join(directory, "meta.json")):
        build_folder_cache(paths, labels, resolution, directory)
    with open(os.path.join(directory, "meta.json")) as f:
        skipped = json.load(f)["skipped"]
    images = np.load(os.path.join(directory, "images.npy"), mmap_mode="r")
    return images, np.load(os.path.join(directory, "labels.npy")), skipped


def image_folder_data(path, resolution=None, classes=None, val_fraction=0.2, seed=0,
                      cache_dir=None):
    """ImageNet as an ImageFolder tree: ``path/train/<class>/*`` with (optionally)
    ``path/val/<class>/*``, or ``path/<class>/*`` alone. Without a validation tree the
    training images are split by seed. ``classes`` keeps the first classes in sorted
    order; images are resized to ``resolution`` (default 32) and cached."""
    resolution = resolution or 32
    train_root = os.path.join(path, "train")
    has_train = os.path.isdir(train_root)
    root = train_root if has_train else path
    names = folder_classes(root)
    check_classes(classes, len(names), root)
    names = names[:classes]
    images, labels, skipped = load_image_folder(root, resolution, names, cache_dir)
    val_root = os.path.join(path, "val")
    if has_train and os.path.isdir(val_root):
        val_images, val_labels, val_skipped = load_image_folder(val_root, resolution, names,
                                                                cache_dir)
        return Data(whole(images, labels), whole(val_images, val_labels), names,
                    skipped + val_skipped)
    train, val = split_train_val(images, labels, val_fraction, seed)
    return Data(train, val, names, skipped)


# ---- downsampled ImageNet (Imagenet8/16/32/64 npz or pickle batches) ----------------------

def read_batch_file(path):
    """``data`` (N, 3 s^2) uint8 and ``labels`` (1..1000) of one downsampled-ImageNet
    batch file, npz or pickle."""
    if path.endswith(".npz"):
        with np.load(path) as d:
            return d["data"], np.asarray(d["labels"])
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    return np.asarray(d["data"]), np.asarray(d["labels"])


def planes_to_images(data):
    """Rows of three colour planes (N, 3 s^2) as images (N, s, s, 3)."""
    s = int(round(np.sqrt(data.shape[1] / 3)))
    if 3 * s * s != data.shape[1]:
        raise ValueError(f"downsampled ImageNet rows hold 3 s^2 values (three s x s colour "
                         f"planes); got rows of {data.shape[1]}")
    return data.reshape(len(data), 3, s, s).transpose(0, 2, 3, 1)


def read_batches(paths, resolution, classes, desc):
    """The images (N, r, r, 3) and 0-based labels of a list of batch files, keeping the
    first ``classes`` classes."""
    images, labels = [], []
    for path in tqdm(paths, desc=desc, unit="file"):
        data, y = read_batch_file(path)
        y = y.astype(np.int64) - 1  # the files number the classes 1..1000
        x, y = class_subset(planes_to_images(np.asarray(data, dtype=np.uint8)), y, classes)
        images.append(box_downsample(x, resolution))
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def imagenet_batches_data(path, resolution=None, classes=None, val_fraction=0.2, seed=0):
    """Downsampled ImageNet (Chrabaszcz, Loshchilov and Hutter 2017): ``path`` is a batch
    file or a directory of ``train_data_batch_*`` files and an optional ``val_data`` file
    (npz with ``data`` and ``labels``, or the pickled dicts of the original release).
    ``data`` rows are uint8 ``3 s^2`` (three colour planes), ``labels`` are 1..1000.
    ``resolution`` may downsample by an integer factor. Without ``val_data`` the training
    images are split by seed."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"the data path {path} does not exist")
    if os.path.isdir(path):
        train_files = sorted(glob.glob(os.path.join(path, "train_data_batch_*")),
                             key=batch_number)
        val_files = sorted(glob.glob(os.path.join(path, "val_data*")))
    else:
        train_files, val_files = [path], []
    if not train_files:
        raise ValueError(f"{path} holds no downsampled-ImageNet batch files "
                         f"(train_data_batch_<k>[.npz] and val_data[.npz])")
    check_classes(classes, 1000, "ImageNet")
    images, labels = read_batches(train_files, resolution, classes, "reading train batches")
    if not len(labels):
        raise ValueError(f"the batch files under {path} hold no images of the first "
                         f"{classes} classes")
    n_classes = classes or int(labels.max()) + 1
    names = [str(k) for k in range(n_classes)]
    if val_files:
        val_images, val_labels = read_batches(val_files, resolution, classes,
                                              "reading val batches")
        return Data(whole(images, labels), whole(val_images, val_labels), names)
    train, val = split_train_val(images, labels, val_fraction, seed)
    return Data(train, val, names)


def batch_number(path):
    """k of ``train_data_batch_k[.npz]``, so that batch 10 sorts after batch 9."""
    tail = os.path.basename(path).rsplit("_", 1)[-1].split(".")[0]
    return int(tail) if tail.isdigit() else 0


def load_data(source, path=None, resolution=None, classes=None, val_fraction=0.2, seed=0,
              cache_dir=None, synthetic_size=20000):
    """A :class:`Data` from ``source`` (one of :data:`SOURCES`)."""
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; choose one of {SOURCES}")
    if (path is None) != (source in ("digits", "synthetic")):
        raise ValueError(f"--data {source} " + ("takes no path" if path is not None
                                                 else "needs a path"))
    if source == "digits":
        return digits_data(resolution, classes, val_fraction, seed)
    if source == "synthetic":
        return synthetic_data(synthetic_size, resolution, classes, val_fraction, seed)
    if source == "imagefolder":
        return image_folder_data(path, resolution, classes, val_fraction, seed, cache_dir)
    return imagenet_batches_data(path, resolution, classes, val_fraction, seed)
