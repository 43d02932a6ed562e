"""The scoring fit on a sample: users outside it get their collaborative factors folded in."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from include.notify.stages.products import fit_als
from include.notify.stages.scoring_run import fold_in


def _implicit_matrix(users: int, items: int, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    taste, kind = rng.normal(size=(users, 6)), rng.normal(size=(items, 6))
    liked = rng.random((users, items)) < 1 / (1 + np.exp(4 - taste @ kind.T))
    liked[7] = False  # a user without interactions
    return sp.csr_matrix(liked.astype(np.float32))


def test_folding_in_gives_the_users_the_factors_the_als_gives_them() -> None:
    matrix = _implicit_matrix(1500, 400)
    collab = fit_als(matrix, 16, 10.0)
    folded = fold_in(collab, matrix)
    active = np.diff(matrix.indptr) > 0
    cosine = (folded * collab.user_factors).sum(axis=1) / (
        np.linalg.norm(folded, axis=1) * np.linalg.norm(collab.user_factors, axis=1) + 1e-12
    )
    assert np.median(cosine[active]) > 0.999
    assert (folded[~active] == 0).all()
    assert folded.dtype == np.float32
    assert fold_in(collab, matrix[:0]).shape == (0, 16)


def test_a_model_fit_on_half_the_users_ranks_the_other_half_as_well_as_the_full_fit() -> None:
    matrix = _implicit_matrix(3000, 400, seed=1)
    rng = np.random.default_rng(2)
    held = np.zeros(matrix.shape, dtype=bool)  # one liked item per user held out
    train = matrix.tolil()
    for user in range(matrix.shape[0]):
        liked = matrix[user].indices
        if len(liked) > 1:
            item = rng.choice(liked)
            held[user, item] = True
            train[user, item] = 0
    train = train.tocsr()
    train.eliminate_zeros()
    others = np.arange(1, matrix.shape[0], 2)

    def hit_rate(users: np.ndarray, items: np.ndarray) -> float:
        scores = users @ items.T
        scores[train[others].toarray() > 0] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :10]
        return float(np.take_along_axis(held[others], top, axis=1).any(axis=1).mean())

    full = fit_als(train, 16, 10.0)
    half = fit_als(train[::2], 16, 10.0)  # users 0, 2, 4, ...: the others never seen
    folded = fold_in(half, train[others])
    assert hit_rate(folded, half.item_factors) > 0.9 * hit_rate(full.user_factors[others], full.item_factors)
