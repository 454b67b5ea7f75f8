"""sep's pixel stack: the detection starts with VISQL's MEMORY_PIXSTACK and takes the large
stack only when sep reports the first one full. The oracle is sep itself called with the
large stack: the same objects and segmentation map, field by field, either way."""

from __future__ import annotations

import numpy as np
import pytest

from viskom.measure import catalogue
from viskom.measure.catalogue import ExtractionParams, _detect


def _scene(size: int, seed: int, blob_px: int = 0) -> np.ndarray:
    """Sky-subtracted noise (sigma 1) with stars, and optionally one flat square object of
    blob_px x blob_px pixels far above any threshold (a saturated star's core, a ghost)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 1.0, (size, size))
    yy, xx = np.mgrid[:size, :size]
    for _ in range(size * size // 5000):
        x0, y0 = rng.uniform(0, size), rng.uniform(0, size)
        image += 10 ** rng.uniform(1.5, 3.5) * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / 2.5)
    if blob_px:
        start = (size - blob_px) // 2
        image[start : start + blob_px, start : start + blob_px] += 500.0
    return image.astype(np.float32)


def _same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype.names == b.dtype.names
    assert len(a) == len(b)
    for name in a.dtype.names:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("thresh", [1.5, 20.0])
def test_the_first_stack_finds_what_the_large_one_finds(thresh):
    image = _scene(600, seed=3)
    mask = np.zeros(image.shape, dtype=bool)
    mask[100:110, 200:400] = True
    p = ExtractionParams()
    objects, segments = _detect(image, thresh, 1.0, p, mask=mask, segments=True)
    large = max(300_000, int(p.pixstack_fraction * image.size))
    ref_objects, ref_segments = _detect(
        image, thresh, 1.0, p, mask=mask, segments=True, pixstack=large
    )
    assert len(objects) > 20
    _same(objects, ref_objects)
    np.testing.assert_array_equal(segments, ref_segments)


def test_an_object_larger_than_the_first_stack_is_measured_with_the_large_one():
    blob = 400  # 160,000 pixels above the threshold at once: more than VISQL's 100,000
    assert blob * blob > catalogue._FIRST_PIXSTACK
    image = _scene(800, seed=5, blob_px=blob)
    p = ExtractionParams()
    with pytest.raises(Exception, match=catalogue._PIXSTACK_FULL):
        _detect(image, 1.5, 1.0, p, pixstack=catalogue._FIRST_PIXSTACK)
    objects = _detect(image, 1.5, 1.0, p)
    _same(objects, _detect(image, 1.5, 1.0, p, pixstack=400_000))
    assert objects["npix"].max() >= blob * blob  # the big object is there, whole


def test_other_sep_errors_are_not_retried(monkeypatch):
    calls = []

    def failing(*args, **kwargs):
        calls.append(kwargs)
        raise Exception("object deblending overflow")  # sep's errors are bare Exceptions

    monkeypatch.setattr(catalogue.sep, "extract", failing)
    with pytest.raises(Exception, match="deblending overflow"):
        _detect(np.zeros((700, 700), np.float32), 1.5, 1.0, ExtractionParams())
    assert len(calls) == 1
