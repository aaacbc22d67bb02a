"""Space-respecting operators: valid canonical genomes, no duplicates, inactive genes never matter."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.search.operators import (
    GeneSpace, crossover, duplicate_mask, genome_keys, initial_population, mutate, random_genomes, repair,
)
from hwnas.space import Encoding, load_space


@pytest.fixture(scope="module")
def gs() -> GeneSpace:
    return GeneSpace.for_space(load_space("mbv3-tiny"))


def test_vectorised_helpers_match_encoding(gs: GeneSpace):
    enc = Encoding(gs.space)
    X = np.random.default_rng(0).integers(0, gs.upper + 1, size=(50, gs.length))
    for x, m, c, f in zip(X, gs.active_mask(X), gs.canonical(X), gs.features(X)):
        assert (m == enc.active_mask(x)).all()
        assert (c == enc.canonical(x)).all()
        onehot = enc.onehot(x)
        assert np.allclose(f[: len(onehot)], onehot)


def test_sampling_valid_unique_and_includes_extremes(gs: GeneSpace):
    X = initial_population(gs, 80, np.random.default_rng(1))
    assert X.shape == (80, gs.length)
    assert gs.is_valid(X).all()
    assert not duplicate_mask(gs, X).any()
    keys = set(genome_keys(X))
    assert gs.smallest().tobytes() in keys and gs.largest().tobytes() in keys
    # every choice of every gene shows up: sampling is uniform per choice, not stuck
    R = random_genomes(gs, 2000, np.random.default_rng(2))
    for g in range(1, 1 + gs.n_stages):
        assert set(np.unique(R[:, g])) == set(range(int(gs.upper[g]) + 1))


def test_operators_keep_genomes_valid(gs: GeneSpace):
    rng = np.random.default_rng(3)
    A, B = random_genomes(gs, 300, rng), random_genomes(gs, 300, rng)
    for kind in ("uniform", "stage"):
        C1, C2 = crossover(gs, A, B, rng, kind)
        assert gs.is_valid(C1).all() and gs.is_valid(C2).all()
    M = mutate(gs, A, rng, prob=0.3)
    assert gs.is_valid(M).all()
    messy = rng.integers(-3, 10, size=(200, gs.length))
    assert gs.is_valid(repair(gs, messy)).all()


def test_crossover_children_inherit_only_active_genes(gs: GeneSpace):
    """A deeper child takes kernel/expand of its extra blocks from the parent where they were active."""
    rng = np.random.default_rng(4)
    shallow, deep = gs.smallest().copy(), gs.largest().copy()
    deep[0] = shallow[0]
    for _ in range(50):
        C1, C2 = crossover(gs, shallow[None], deep[None], rng, "uniform")
        for c in (C1[0], C2[0]):
            for i in range(gs.n_stages):
                sl = gs.encoding.block_slice(i)
                depth = gs.space.stages[i].depths[c[1 + i]]
                # block 0 is active in both parents; deeper blocks only in `deep` (all max indices)
                assert (c[sl.start + 2 : sl.start + 2 * depth] == gs.upper[sl.start + 2 : sl.start + 2 * depth]).all()


def test_mutation_changes_only_active_genes_and_fills_new_blocks(gs: GeneSpace):
    rng = np.random.default_rng(5)
    X = random_genomes(gs, 400, rng)
    Y = mutate(gs, X, rng)
    changed = Y != X
    mask_before, mask_after = gs.active_mask(X), gs.active_mask(Y)
    # any changed gene is active in the parent or became active through a deeper stage
    assert not (changed & ~mask_before & ~mask_after).any()
    # about one active gene per individual mutates (1/n rule), not zero and not many
    per_ind = (changed & mask_before).sum(axis=1)
    assert 0.6 < per_ind.mean() < 1.6
    # newly activated blocks are not stuck at the canonical zero
    newly = mask_after & ~mask_before
    assert newly.sum() > 20 and (Y[newly] > 0).mean() > 0.4


def test_inactive_gene_changes_are_duplicates(gs: GeneSpace):
    rng = np.random.default_rng(6)
    X = random_genomes(gs, 100, rng)
    noisy = X.copy()
    inactive = ~gs.active_mask(X)
    noisy[inactive] = rng.integers(0, 3, size=inactive.sum())
    assert inactive.any() and (noisy != X).any()
    assert duplicate_mask(gs, noisy, X).all()
    assert genome_keys(repair(gs, noisy)) == genome_keys(X)
    both = np.concatenate([X, noisy])
    assert duplicate_mask(gs, both).sum() == len(X)


def test_resolution_restricted_to_table(gs: GeneSpace):
    sp = gs.space
    g2 = GeneSpace.for_space(sp, [sp.resolutions[1], sp.resolutions[3]])
    rng = np.random.default_rng(7)
    X = random_genomes(g2, 500, rng)
    X = np.concatenate([X, mutate(g2, X, rng, prob=0.5), *crossover(g2, X, X[::-1], rng)])
    assert set(np.unique(X[:, 0])) == {1, 3}
    assert set(np.unique(repair(g2, np.zeros((3, g2.length), dtype=int))[:, 0])) == {1}
    with pytest.raises(ValueError, match="none of which"):
        GeneSpace.for_space(sp, [999])
