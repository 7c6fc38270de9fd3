"""Cost sources: the block grid's row strips."""

from __future__ import annotations

import itertools

import pytest

from bigsink.costs import BlockGrid


def _sizes(strips: list[tuple[int, int]]) -> list[int]:
    return [b - a for a, b in strips]


def _covers(strips: list[tuple[int, int]], n: int, block: int) -> bool:
    """Consecutive, from 0 to n, cut only at block-row boundaries."""
    ends = [a for a, _ in strips[1:]]
    return (strips[0][0] == 0 and strips[-1][1] == n
            and all(p[1] == q[0] for p, q in itertools.pairwise(strips))
            and all(e % block == 0 for e in ends))


def test_whole_block_rows_are_spread_evenly_over_the_threads() -> None:
    grid = BlockGrid((20_000, 20_000), (209, 20_000))            # 96 block rows, last ragged
    alone = grid.row_strips(5_000)                               # at most 23 blocks a strip
    assert len(alone) == 5 and _covers(alone, 20_000, 209)
    assert {s // 209 for s in _sizes(alone)[:-1]} == {19}         # 19 or 20 blocks, not 23 + 4
    two = grid.row_strips(5_000, parallel=2)                     # 5 -> 6: 3 per thread
    assert len(two) == 6 and _covers(two, 20_000, 209)
    assert _sizes(two)[:-1] == [16 * 209] * 5
    assert max(_sizes(grid.row_strips(2_500, 2))) <= 2_500       # never above max_rows


@pytest.mark.parametrize(("max_rows", "parallel", "sizes"), [
    (30, 2, [20, 30, 20, 30]),          # 4 strips (a multiple of 2), within one block
    (1000, 4, [100]),                   # one strip holds all: left whole
    (5, 2, [5] * 20),                   # block rows taller than max_rows: equal pieces
])
def test_row_strips_cases(max_rows: int, parallel: int, sizes: list[int]) -> None:
    grid = BlockGrid((100, 5), (10, 5))
    strips = grid.row_strips(max_rows, parallel)
    assert _sizes(strips) == sizes and strips[-1][1] == 100
