"""evidence.py: PDQ's operating point on real photos, as README states it."""

from __future__ import annotations

import itertools

import numpy as np

from dupecheck.evidence import PDQ_MATCH_DISTANCE, pdq_distances, pdq_hash
from dupecheck.imaging import centre_crop_to_aspect, decode
from helpers import instagramify


def test_unrelated_real_photos_stay_far_apart_and_portraits_meet_through_the_4_5_crop(
        shared_photos):
    """README: every pair of the 87 photos in ../shared is at least 90 bits apart; a
    portrait posted with Instagram's 4:5 crop is far from its full frame (100 bits and
    more at worst, over the threshold for most) but 0-2 bits from its 4:5 crop."""
    paths = sorted(shared_photos.iterdir())
    hashes, full, crop = [], [], []
    for path in paths:
        data = path.read_bytes()
        img = decode(data, path.name).image
        hashes.append(pdq_hash(img))
        w, h = img.size
        if h > w * 5 / 4:  # Instagram crops it to 4:5
            posted = pdq_hash(decode(instagramify(data), "posted.jpg").image)
            full.append(int(pdq_distances(hashes[-1][None], posted)[0]))
            crop.append(int(pdq_distances(pdq_hash(centre_crop_to_aspect(img, 0.8))[None],
                                          posted)[0]))
    stacked = np.stack(hashes)
    closest = min(int(pdq_distances(stacked[i][None], stacked[j])[0])
                  for i, j in itertools.combinations(range(len(paths)), 2))
    assert len(paths) == 87 and closest >= 90, closest
    assert len(full) >= 15
    assert max(crop) <= 2
    assert max(full) >= 100 and sum(d > PDQ_MATCH_DISTANCE for d in full) > len(full) / 2, full
