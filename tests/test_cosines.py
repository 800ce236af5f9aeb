"""cosines.py: the pass over every row gives the same best cosines either way."""

from __future__ import annotations

import numpy as np
import pytest

from dupecheck import cosines


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    m = rng.normal(size=(n, dim)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def test_the_onnx_graph_and_numpy_agree_over_several_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    matrix, vectors = unit_rows(rng, 5000, 64), unit_rows(rng, 4, 64)
    expected = (matrix @ vectors.T).max(axis=1)
    assert not cosines.uses_graph(*matrix.shape)
    small = cosines.best_cosines(matrix, vectors)
    monkeypatch.setattr(cosines, "LARGE_ELEMENTS", 1000)
    monkeypatch.setattr(cosines, "BLOCK_ELEMENTS", 64 * 1234)  # 5 runs, the last one short
    assert cosines.uses_graph(*matrix.shape)
    large = cosines.best_cosines(matrix, vectors)
    np.testing.assert_allclose(small, expected, atol=1e-6)
    np.testing.assert_allclose(large, expected, atol=1e-6)
    assert int(np.argmax(large)) == int(np.argmax(expected))


def test_a_memory_mapped_matrix_and_one_variant(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    path = tmp_path / "m.npy"
    np.save(path, unit_rows(rng, 300, 32))
    matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    vector = unit_rows(rng, 1, 32)
    monkeypatch.setattr(cosines, "LARGE_ELEMENTS", 1)
    monkeypatch.setattr(cosines, "BLOCK_ELEMENTS", 32 * 100)
    np.testing.assert_allclose(cosines.best_cosines(matrix, vector),
                               (np.asarray(matrix) @ vector[0]), atol=1e-6)
    assert cosines.best_cosines(matrix[:0], vector).shape == (0,)


@pytest.mark.parametrize("rows,dim,large", [(65_536, 512, True), (10_000, 2048, False),
                                             (16_384, 2048, True)])
def test_the_graph_is_for_large_matrices_only(rows, dim, large):
    assert cosines.uses_graph(rows, dim) is large
