"""Datasets: the embedded digits, downsampled ImageNet batches, a synthetic stand-in of
ImageNet shape, and (in :mod:`tallskinny_np.training.folders`) ImageNet as image files.

Every source ends up as uint8 images ``(N, r, r, channels)`` (height, width, colour) and
int64 labels ``0..classes-1``. Images stay uint8 (for ImageFolder trees a read-only
``.npy`` memmap) until a batch is drawn; :func:`standardize` turns a batch into the
``(B, r * r * channels)`` float rows the MLP takes, with per-channel statistics of the
training split or, with ``--scale unit``, onto [0, 1] (:func:`pixel_scaling`). Shuffling,
the train/validation split and the synthetic data depend on the seed only, so a run can be
reproduced (and resumed) from its step counter.

The embedded default needs no download: the 8x8 handwritten digits (UCI optdigits,
CC BY 4.0, see data/DIGITS_LICENSE.txt) ship inside the package.
"""
import functools
import glob
import os
import pickle
from importlib import resources

import numpy as np
from tqdm.auto import tqdm

from .splits import Data, check_classes, split_train_val, whole

SOURCES = ("digits", "imagefolder", "imagenet-npz", "synthetic")


def load_digits():
    """``(images, labels)``: uint8 images (1797, 8, 8) with values 0..16, int64 labels 0..9."""
    with resources.files("tallskinny_np.training").joinpath("data/digits.npz").open("rb") as f:
        d = np.load(f)
        return d["images"], d["target"].astype(np.int64)


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


SCALES = ("standard", "unit")


def pixel_scaling(data, scale):
    """The per-channel shift and divisor (float64) that :func:`standardize` applies to
    ``data``'s pixels: the training split's mean and standard deviation (``"standard"``),
    or 0 and the source's largest pixel value, which maps the pixels onto [0, 1]
    (``"unit"``: the digits divided by 16, 8-bit images by 255)."""
    if scale == "standard":
        return channel_statistics(data.train)
    if scale == "unit":
        channels = data.train.images.shape[-1]
        return np.zeros(channels), np.full(channels, float(data.pixel_max))
    raise ValueError(f"unknown pixel scaling {scale!r}; choose one of {SCALES}")


def standardize(images, mean, std, dtype, xp=np):
    """uint8 images (B, r, r, channels) as rows ``(B, r * r * channels)`` of dtype, each
    channel shifted by ``mean`` and divided by ``std`` (zero mean and unit variance for
    the training split's statistics), on the array module xp."""
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


def digits_data(resolution=None, classes=None, val_fraction=0.2, seed=0):
    """The embedded digits as (N, 8, 8, 1) images, split by seed."""
    if resolution not in (None, 8):
        raise ValueError(f"the digits are 8x8 images; --resolution must be 8, got "
                         f"{resolution}")
    check_classes(classes, 10, "the digits")
    images, labels = class_subset(*load_digits(), classes)
    train, val = split_train_val(images[..., None], labels, val_fraction, seed)
    return Data(train, val, [str(k) for k in range(classes or 10)], pixel_max=16)


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


# ---- downsampled ImageNet (Imagenet8/16/32/64 npz or pickle batches) ----------------------

def read_batch_file(path):
    """``data`` (N, 3 s^2) uint8 and ``labels`` (N,) int64 (1..1000) of one
    downsampled-ImageNet batch file, npz or pickle, checked: a ValueError naming the file
    for other contents, mismatched counts, non-integer or out-of-range values."""
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as f:
                d = {k: f[k] for k in f.files}
        else:
            with open(path, "rb") as f:
                d = pickle.load(f, encoding="latin1")
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
    # A damaged or foreign pickle can raise almost any exception while it is parsed.
    except Exception as e:
        raise ValueError(f"{path}: not a downsampled-ImageNet batch file (npz or pickle "
                         f"of 'data' and 'labels'): {type(e).__name__}: {e}") from None
    if not isinstance(d, dict) or not {"data", "labels"} <= set(d):
        found = ", ".join(map(str, d)) if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"{path}: expected the arrays 'data' and 'labels' of a "
                         f"downsampled-ImageNet batch; found {found or 'nothing'}")
    data, labels = np.asarray(d["data"]), np.asarray(d["labels"])
    if data.ndim != 2 or labels.ndim != 1 or len(data) != len(labels):
        raise ValueError(f"{path}: 'data' {data.shape} and 'labels' {labels.shape} do not "
                         f"match: expected rows (N, 3 s^2) and N labels")
    for name, values, low, high in (("data", data, 0, 255), ("labels", labels, 1, 1000)):
        if values.dtype.kind not in "iu":
            raise ValueError(f"{path}: '{name}' holds {values.dtype} values; expected "
                             f"integers {low}..{high}")
        if values.size and (values.min() < low or values.max() > high):
            raise ValueError(f"{path}: '{name}' holds values {values.min()}..{values.max()}; "
                             f"expected {low}..{high}")
    return data.astype(np.uint8, copy=False), labels.astype(np.int64)


def planes_to_images(data, path):
    """Rows of three colour planes (N, 3 s^2) as images (N, s, s, 3)."""
    s = int(round(np.sqrt(data.shape[1] / 3)))
    if 3 * s * s != data.shape[1]:
        raise ValueError(f"{path}: downsampled ImageNet rows hold 3 s^2 values (three "
                         f"s x s colour planes); got rows of {data.shape[1]}")
    return data.reshape(len(data), 3, s, s).transpose(0, 2, 3, 1)


def read_batches(paths, resolution, classes, desc, progress):
    """The images (N, r, r, 3) and 0-based labels of a list of batch files, keeping the
    first ``classes`` classes; every file must hold images of one size."""
    images, labels = [], []
    for path in tqdm(paths, desc=desc, unit="file", disable=progress is not True):
        data, y = read_batch_file(path)
        x, y = class_subset(planes_to_images(data, path), y - 1, classes)
        if images and x.shape[1:] != images[0].shape[1:]:
            raise ValueError(f"{path}: images of {x.shape[1]}x{x.shape[2]}, but {paths[0]} "
                             f"holds {images[0].shape[1]}x{images[0].shape[2]}")
        images.append(x)
        labels.append(y)
    images = box_downsample(np.concatenate(images), resolution)
    return images, np.concatenate(labels)


def batch_files(paths):
    """``(train, val)``: the batch files among ``paths``. A file named ``val_data*`` is
    validation, any other file training; a folder contributes its ``train_data_batch_*``
    and ``val_data*`` files, or those of its sub-folders (the release's
    ``Imagenet32_train_npz`` and ``Imagenet32_val_npz`` side by side)."""
    train, val = [], []
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"the data path {path} does not exist")
        if os.path.isfile(path):
            (val if os.path.basename(path).startswith("val_data") else train).append(path)
            continue
        for folder in (path, os.path.join(path, "*")):
            found_train = glob.glob(os.path.join(folder, "train_data_batch_*"))
            found_val = glob.glob(os.path.join(folder, "val_data*"))
            if found_train or found_val:
                train += sorted(found_train, key=batch_number)
                val += sorted(found_val)
                break
        else:
            raise ValueError(f"{path} holds no downsampled-ImageNet batch files "
                             f"(train_data_batch_<k>[.npz] and val_data[.npz]), nor do its "
                             f"sub-folders")
    if not train:
        raise ValueError(f"no training batch files (train_data_batch_<k>[.npz]) among "
                         f"{', '.join(paths)}")
    return train, val


def imagenet_batches_data(paths, resolution=None, classes=None, val_fraction=0.2, seed=0,
                          progress=False):
    """Downsampled ImageNet (Chrabaszcz, Loshchilov and Hutter 2017) from the batch files
    and folders ``paths`` (see :func:`batch_files`): npz with ``data`` and ``labels``, or
    the pickled dicts of the original release. ``data`` rows are uint8 ``3 s^2`` (three
    colour planes), ``labels`` 1..1000. ``resolution`` may downsample by an integer
    factor. The official validation files (``val_data``) are the validation split when
    present; otherwise the training images are split by seed. Class names are the
    release's label numbers."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    check_classes(classes, 1000, "ImageNet")
    train_files, val_files = batch_files(paths)
    images, labels = read_batches(train_files, resolution, classes, "reading train batches",
                                  progress)
    if not len(labels):
        raise ValueError(f"the batch files of {', '.join(paths)} hold no images of the "
                         f"first {classes} classes")
    if val_files:
        val_images, val_labels = read_batches(val_files, resolution, classes,
                                              "reading val batches", progress)
        if val_images.shape[1:] != images.shape[1:]:
            raise ValueError(f"the validation files hold {val_images.shape[1]}x"
                             f"{val_images.shape[2]} images, the training files "
                             f"{images.shape[1]}x{images.shape[2]}")
        n_classes = classes or int(max(labels.max(), val_labels.max(initial=0))) + 1
        train, val = whole(images, labels), whole(val_images, val_labels)
    else:
        n_classes = classes or int(labels.max()) + 1
        train, val = split_train_val(images, labels, val_fraction, seed)
    return Data(train, val, [str(k + 1) for k in range(n_classes)])


def batch_number(path):
    """k of ``train_data_batch_k[.npz]``, so that batch 10 sorts after batch 9."""
    tail = os.path.basename(path).rsplit("_", 1)[-1].split(".")[0]
    return int(tail) if tail.isdigit() else 0


def augment(images, seed, step):
    """The standard augmentation of small images, drawn from ``(seed, step)`` so that a
    resumed run sees the same: each image of the uint8 batch (B, r, r, ch) is padded with
    ``r // 8`` zero pixels on every side (at least 1), cropped back to r x r at a random
    offset, and mirrored left-right with probability 1/2."""
    B, r = images.shape[:2]
    pad = max(1, r // 8)
    rng = np.random.default_rng([seed, 3, step])
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    top, left = rng.integers(0, 2 * pad + 1, (2, B))
    flip = rng.random(B) < 0.5
    rows = top[:, None] + np.arange(r)
    cols = left[:, None] + np.arange(r)
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    return padded[np.arange(B)[:, None, None], rows[:, :, None], cols[:, None, :]]


def check_batch(batch, data, flag="--batch"):
    """A ValueError unless ``batch`` (the option ``flag``) fits the training split of
    ``data``."""
    if batch > len(data.train):
        raise ValueError(f"{flag} {batch} is larger than the {len(data.train)} training "
                         f"images; pass {flag} {len(data.train)} or less")


def load_data(source, paths=(), resolution=None, classes=None, val_fraction=0.2, seed=0,
              cache_dir=None, synthetic_size=20000, devkit=None, workers=None,
              progress=False, skip_unreadable=False, allow_empty_classes=False):
    """A :class:`Data` from ``source`` (one of :data:`SOURCES`) and its ``paths``
    (``skip_unreadable`` and ``allow_empty_classes``: image files, see
    :func:`tallskinny_np.training.folders.image_folder_data`). ``progress``: True for
    progress bars, a number of seconds for a line at that interval while image files are
    decoded, False for neither."""
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; choose one of {SOURCES}")
    paths = list(paths)
    if source in ("digits", "synthetic") and paths:
        raise ValueError(f"--data {source} takes no path")
    if source not in ("digits", "synthetic") and not paths:
        raise ValueError(f"--data {source} needs a path")
    if source == "imagefolder" and len(paths) > 1:
        raise ValueError("--data imagefolder takes one path (the folder holding train/ and "
                         "val/, or the class folders)")
    if source == "digits":
        return digits_data(resolution, classes, val_fraction, seed)
    if source == "synthetic":
        return synthetic_data(synthetic_size, resolution, classes, val_fraction, seed)
    if source == "imagefolder":
        from .folders import image_folder_data
        return image_folder_data(paths[0], resolution, classes, val_fraction, seed, cache_dir,
                                 devkit, workers, progress, skip_unreadable,
                                 allow_empty_classes)
    return imagenet_batches_data(paths, resolution, classes, val_fraction, seed, progress)
