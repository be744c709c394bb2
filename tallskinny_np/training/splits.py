"""The training and validation splits of a data source, and what every source checks
when it builds them: one module that the sources (:mod:`tallskinny_np.training.datasets`,
:mod:`tallskinny_np.training.folders`) share."""
from dataclasses import dataclass

import numpy as np


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
    """A training and a validation split, the class names, the number of image files
    that could not be read (skipped), warnings about the data found while loading it
    (for example class folders without images) and, for image files, each cache's
    ``files``, ``cached`` (read from an earlier build) and ``cache`` (its folder), and what
    its decoding took (``seconds``, ``images_per_s``, ``workers``). ``pixel_max`` is the
    largest value the source's pixels can take (255 for 8-bit images, 16 for the
    digits)."""
    train: Split
    val: Split
    classes: list
    pixel_max: int = 255
    skipped: int = 0
    warnings: tuple = ()
    decode: tuple = ()

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


def check_classes(classes, available, source):
    if classes is not None and not 1 <= classes <= available:
        raise ValueError(f"--classes must lie in [1, {available}] for {source}; got "
                         f"{classes}")
