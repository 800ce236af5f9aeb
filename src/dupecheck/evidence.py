"""The two evidences that need no model: identical bytes and a perceptual hash.

PDQ (Meta's 256-bit DCT hash) survives re-encoding, resizing and colour edits
but not crops, which is why candidates are also hashed as Instagram's crops.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

PDQ_BYTES = 32  # 256 bits
PDQ_MATCH_DISTANCE = 31  # the usual PDQ threshold: <= 31 of 256 bits differ
# PDQ reduces every image to 64 x 64; hashing at <= 512 px gives the same bits, faster,
# and the same size rule for an archive copy and a camera original.
PDQ_MAX_SIDE = 512
PDQ_MIN_SIDE = 256  # below this, PDQ's 64 x 64 reduction loses bits it needs


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pdq_hash(img: Image.Image) -> np.ndarray:
    """The 256-bit PDQ hash of an upright RGB image, packed as 32 uint8."""
    import pdqhash

    if max(img.size) > PDQ_MAX_SIDE:
        img = img.copy()
        img.thumbnail((PDQ_MAX_SIDE, PDQ_MAX_SIDE), Image.Resampling.BILINEAR)
    bits, _quality = pdqhash.compute(np.asarray(img.convert("RGB")))
    return np.packbits(np.asarray(bits, dtype=np.uint8))


# pdqhash.compute_dihedral's hashes after the upright one, named by how the checked photo
# differs from an archive photo whose hash equals that one (the first is of the checked
# photo turned 90 degrees counter-clockwise: it matches when the photo was turned clockwise).
DIHEDRAL = ("turned 90 clockwise", "turned 180", "turned 90 counter-clockwise",
            "upside down", "mirrored", "mirrored, turned 90 counter-clockwise",
            "mirrored, turned 90 clockwise")


def pdq_dihedral(img: Image.Image) -> np.ndarray:
    """(8, 32): the PDQ hash of the upright image (the same as pdq_hash) and of its seven
    turns and mirror images (DIHEDRAL), in one pass: one DCT, its coefficients permuted."""
    import pdqhash

    if max(img.size) > PDQ_MAX_SIDE:
        img = img.copy()
        img.thumbnail((PDQ_MAX_SIDE, PDQ_MAX_SIDE), Image.Resampling.BILINEAR)
    hashes, _quality = pdqhash.compute_dihedral(np.asarray(img.convert("RGB")))
    return np.packbits(np.asarray(hashes, dtype=np.uint8), axis=1)


def pdq_distances(hashes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Hamming distance from one packed hash (32,) to each row of (N, 32)."""
    if len(hashes) == 0:
        return np.zeros(0, dtype=np.int32)
    xor = np.bitwise_xor(np.ascontiguousarray(hashes), query)
    return np.bitwise_count(xor.view(np.uint64)).sum(axis=1, dtype=np.int32)
