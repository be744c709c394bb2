"""Datasets. The embedded default needs no download: the 8x8 handwritten digits
(UCI optdigits, CC BY 4.0, see data/DIGITS_LICENSE.txt) ship inside the package."""
from importlib import resources

import numpy as np


def load_digits():
    """``(images, labels)``: uint8 images (1797, 8, 8) with values 0..16, int64 labels 0..9."""
    with resources.files("tallskinny_np").joinpath("data/digits.npz").open("rb") as f:
        d = np.load(f)
        return d["images"], d["target"].astype(np.int64)
