"""Splits for continuous recordings without trials: equal time blocks, shuffled with a seed."""

from __future__ import annotations

import numpy as np
from temporaldata import Interval

from poyo.pipelines.common.session import interval, merge, subtract


def block_splits(domain: Interval, blocks: int = 10, counts=(8, 1, 1), seed: int = 42, gap: float = 1.0) -> dict:
    """Cut ``[domain start, domain end)`` into ``blocks`` equal blocks, shuffle them with ``seed`` and
    deal them out ``counts`` (train, valid, test); train keeps ``gap`` s away from the others."""
    if sum(counts) != blocks:
        raise ValueError(f"counts {counts} must add up to blocks={blocks}")
    edges = np.linspace(domain.start[0], domain.end[-1], blocks + 1)
    order = np.random.default_rng(seed).permutation(blocks)
    parts = np.split(order, np.cumsum(counts)[:-1])
    pick = lambda ids: merge(interval(edges[np.sort(ids)], edges[np.sort(ids) + 1]))  # noqa: E731
    valid, test = pick(parts[1]), pick(parts[2])
    valid = subtract(domain, subtract(domain, valid))
    test = subtract(domain, subtract(domain, test))
    held = interval(np.concatenate([valid.start, test.start]) - gap, np.concatenate([valid.end, test.end]) + gap)
    return {"train_domain": subtract(domain, held), "valid_domain": valid, "test_domain": test}
