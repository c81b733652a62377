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


def _random_graph(choices: list[tuple[int, int, int]], extra_output: int):
    from tinycc.ir.graph import Graph

    g = Graph("rand")
    g.add_input("x", (1, 4, 4, 8), "int8")
    acts = ["x"]
    for i, (kind, a, b) in enumerate(choices):
        src = acts[a % len(acts)]
        shape = g.tensors[src].shape
        same = [t for t in acts if g.tensors[t].shape == shape]
        if kind == 0:
            op = g.add_op("relu", [src], f"r{i}")
        elif kind == 1:
            op = g.add_op(("tanh", "sigmoid", "relu6", "leaky_relu")[b % 4], [src], f"t{i}")
        elif kind in (2, 3):
            op = g.add_op("add" if kind == 2 else "mul", [src, same[b % len(same)]], f"b{i}")
        elif kind == 4 and len(shape) == 4 and shape[1] >= 2:
            op = g.add_op("max_pool2d", [src], f"p{i}", {"pool_size": 2, "strides": 2})
        elif kind == 6 and len(shape) == 4:  # squeeze-excite style broadcast: x * mean(x) per channel
            gp = g.add_op("global_avg_pool", [src], f"g{i}", {"keepdims": True}).outputs[0]
            op = g.add_op("mul" if b % 3 else "add", [src, gp] if b % 2 else [gp, src], f"m{i}")
        else:
            op = g.add_op("reshape", [src], f"s{i}", {"shape": (-1,)})
        acts.append(op.outputs[0])
    g.outputs = sorted({acts[-1], acts[extra_output % len(acts)]} - {"x"}) or [acts[-1]]
    return g


@settings(max_examples=120, deadline=None)
@given(choices=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 30), st.integers(0, 30)), min_size=1,
                        max_size=14), extra=st.integers(0, 30))
def test_inplace_plans_never_clobber_a_live_value(choices, extra) -> None:
    """Execute the schedule on the planned arena: every value an op reads is still intact."""
    from tinycc.memory import plan

    g = _random_graph(choices, extra)
    for inplace in (False, True):
        p = plan(g, inplace=inplace)
        assert p.arena >= p.lower_bound
        owner = [None] * max(p.arena, 1)
        value = {"x": "x"}

        def intact(t: str) -> bool:
            off, n = p.offsets[t], g.tensors[t].nbytes
            return all(owner[j] == value[t] for j in range(off, off + n))

        off, n = p.offsets["x"], g.tensors["x"].nbytes
        owner[off:off + n] = ["x"] * n
        for op in g.ops:
            assert all(intact(t) for t in op.inputs), (inplace, op.name)
            out = op.outputs[0]
            if op.kind.value == "reshape":
                value[out] = value[op.inputs[0]]
                assert p.offsets[out] == p.offsets[op.inputs[0]]
                continue
            value[out] = out
            off, n = p.offsets[out], g.tensors[out].nbytes
            owner[off:off + n] = [out] * n
        assert all(intact(t) for t in g.outputs)


def test_inplace_shrinks_the_arena_of_activation_heavy_models() -> None:
    from tinycc.ir.graph import Graph
    from tinycc.memory import plan

    g = Graph("se")
    g.add_input("x", (1, 8, 8, 16), "int8")
    g.add_op("max_pool2d", ["x"], "p", {"pool_size": 1, "strides": 1})
    g.add_op("relu", ["p"], "r")
    g.add_op("tanh", ["r"], "t")
    g.add_op("add", ["t", "p"], "a")  # p is still live here: a may overwrite t but not p
    g.outputs = ["a"]
    off, on = plan(g, inplace=False), plan(g, inplace=True)
    assert on.arena < off.arena and on.lower_bound <= on.arena
    assert on.offsets["r"] != on.offsets["p"]  # p is read again by the add
    assert on.offsets["t"] == on.offsets["r"] and on.offsets["a"] in (on.offsets["t"], on.offsets["p"])


def _legal_pair(g, p, s: str, t: str, live: dict[str, tuple[int, int]]) -> bool:
    """May tensors s and t share bytes while both are live? Reshape aliases (one value) or an in-place op."""
    from tinycc.memory import ALIAS_KINDS, INPLACE_KINDS

    prod = {op.outputs[0]: (i, op) for i, op in enumerate(g.ops)}

    def root(x: str) -> str:  # through reshapes: the same value
        while x in prod and prod[x][1].kind in ALIAS_KINDS:
            x = prod[x][1].inputs[0]
        return x

    if root(s) == root(t):
        return True
    for a, b in ((s, t), (t, s)):  # b written in place over a: b's op reads a last, same bytes, a not an input
        if b in prod and prod[b][1].kind in INPLACE_KINDS and a in prod[b][1].inputs:
            i = prod[b][0]
            ta, tb = g.tensors[a], g.tensors[b]
            if live[a][1] == i and ta.shape == tb.shape and ta.nbytes == tb.nbytes and a not in g.inputs \
                    and a not in g.outputs and p.offsets[a] == p.offsets[b]:
                return True
    return False


@settings(max_examples=150, deadline=None)
@given(choices=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 30), st.integers(0, 30)), min_size=1,
                        max_size=16), extra=st.integers(0, 30), strategy=st.sampled_from(["best", "greedy"]))
def test_simultaneously_live_tensors_overlap_only_as_legal_inplace_pairs(choices, extra, strategy) -> None:
    """Tensor by tensor (not buffer by buffer): two tensors live at the same step never share a byte unless
    one is a reshape of the other or an element-wise op wrote its output over an input it read last; the
    arena holds every tensor, is at least the lower bound (max live bytes with aliases merged), and in-place
    never makes the arena or the bound larger."""
    from tinycc.memory import plan

    g = _random_graph(choices, extra)
    on, off = plan(g, strategy, inplace=True), plan(g, strategy, inplace=False)
    assert off.lower_bound >= on.lower_bound and on.arena >= on.lower_bound and off.arena >= off.lower_bound
    if strategy == "best":
        assert on.arena <= off.arena
    live: dict[str, tuple[int, int]] = {t: (0, 0) for t in g.inputs}
    for i, op in enumerate(g.ops):
        for t in op.inputs:
            live[t] = (live[t][0], i)
        live[op.outputs[0]] = (i, i)
    for t in g.outputs:
        live[t] = (live[t][0], len(g.ops))
    names = list(live)
    for t in names:
        assert 0 <= on.offsets[t] and on.offsets[t] + g.tensors[t].nbytes <= on.arena
    for k, s in enumerate(names):
        for t in names[k + 1:]:
            (s0, s1), (t0, t1) = live[s], live[t]
            if s0 <= t1 and t0 <= s1:
                a, b = on.offsets[s], on.offsets[t]
                if a < b + g.tensors[t].nbytes and b < a + g.tensors[s].nbytes:
                    assert _legal_pair(g, on, s, t, live), (s, t, live[s], live[t])
