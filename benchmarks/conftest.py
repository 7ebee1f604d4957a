"""Shared fixtures: seeded IPA sets and pre-built tables for the benchmarks."""

import numpy as np
import pytest

import s2pt

GiB = 1 << 30
PAGE = 4096
PAGES_PER_GIB = GiB // PAGE


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(20261124)


@pytest.fixture(scope="session")
def sequential_vm():
    """4K/40-bit VM with 1 GiB mapped as 4 KiB pages at IPA 0."""
    pt = s2pt.Stage2(ipa_bits=40, granule=PAGE)
    pt.map(0, 1 << 32, GiB, blocks=False)
    return pt


@pytest.fixture(scope="session")
def random_vm(rng):
    """4K/40-bit VM with 2**18 random pages inside 64 GiB (the kernel comparison's shape)."""
    pt = s2pt.Stage2(ipa_bits=40, granule=PAGE)
    pages = rng.choice(64 * GiB // PAGE, size=1 << 18, replace=False).astype(np.uint64)
    for page in pages.tolist():
        pt.map(page * PAGE, (1 << 36) + page * PAGE, PAGE)
    return pt, pages * np.uint64(PAGE)
