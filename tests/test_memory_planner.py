"""Memory planner properties: no overlap of simultaneously live buffers, arena >= lower bound."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tinycc.memory import Buffer, lower_bound, plan_buffers

buffers = st.lists(st.tuples(st.integers(1, 64), st.integers(0, 20), st.integers(0, 6)), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(spec=buffers)
def test_no_overlap_and_bounds(spec) -> None:
    bufs = [Buffer(f"t{i}", 16 * s, a, a + d) for i, (s, a, d) in enumerate(spec)]
    for strategy in ("greedy", "best"):
        arena, greedy, placed = plan_buffers(bufs, strategy)
        for i, a in enumerate(placed):
            assert a.offset >= 0 and a.offset + a.size <= arena
            for b in placed[i + 1:]:
                if a.overlaps_time(b):
                    assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset
        assert arena >= lower_bound(bufs)
        assert arena <= greedy
