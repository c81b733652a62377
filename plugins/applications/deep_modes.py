"""`tinycc simulate --deep`: the deep learners (``tinycc.ir.deep``) beside the head-only modes."""
from __future__ import annotations

from typing import Any

from ...errors import TinyccError
from ...ir.deep import DeepLearner, deep_cuts


def _region_params(dep: Any, cut: str) -> int:
    """Parameter ops of Φf after the cut tensor ``cut``."""
    try:
        return len(DeepLearner(dep, cut, "blocks", capacity=1).region_params)
    except ValueError:
        return 0


def choose_deep_cut(dep: Any, modes: tuple[str, ...], name: str | None) -> str:
    """The deep cut: ``name`` (a tensor, or a layer whose output it is), else the latest cut (where every mode can
    learn, bias: every layer after it has a bias, when one is) with a
    convolution after it (the input of the last block)."""
    try:
        cuts = deep_cuts(dep.extractor, dep.classifier)
    except ValueError as e:
        raise TinyccError(f"--deep: {e}") from None
    if name is not None:
        ext = dep.extractor
        names = {name} | {t for op in ext.ops if name in (op.name, op.origin) for t in op.outputs}
        chosen = [c for c in cuts if c in names]
        if not chosen:
            shown = ", ".join(cuts[:12]) or "none"
            raise TinyccError(f"--deep-cut {name!r}: not a tensor every later layer depends on only through it; "
                              f"valid: {shown}")
        cut = chosen[0]
    else:
        with_conv = [c for c in cuts if _region_params(dep, c)]
        if not with_conv:
            raise TinyccError("--deep: no convolution or Dense layer of the feature extractor can learn")
        fits = [c for c in with_conv if _learns(dep, c, modes)]  # e.g. bias: skip a region whose layer has none
        cut = (fits or with_conv)[0]
    for m in modes:
        try:
            DeepLearner(dep, cut, m, capacity=1)
        except ValueError as e:
            raise TinyccError(f"--deep {m}: {e}") from None
    return cut


def _learns(dep: Any, cut: str, modes: Any) -> bool:
    """Whether every mode of ``modes`` can learn the region after ``cut``."""
    try:
        for m in modes:
            DeepLearner(dep, cut, m, capacity=1)
    except ValueError:
        return False
    return True


def deep_learner(prep: Any, mode: str, lr: float) -> DeepLearner:
    """A fresh deep learner with the deployment's buffer capacity, epochs, ``lr`` (Φc) and the backbone's rate
    (``prep.deep_lr``, the config's ``backbone_lr``)."""
    dep = prep.dep
    return DeepLearner(dep, prep.deep_cut, mode, capacity=dep.buffer.capacity, lr=lr, epochs=dep.train.epochs,
                       deep_lr=prep.deep_lr)


def deep_buffer_bytes(prep: Any, capacity: int) -> int:
    """Host bytes of one deep learner's buffer of ``capacity`` int8 cut tensors (with their labels)."""
    shape = prep.dep.extractor.tensors[prep.deep_cut].shape[1:]
    n = 1
    for d in shape:
        n *= int(d)
    return capacity * (n + 1)


def describe_deep(prep: Any) -> str:
    """One line per deep mode: what trains and what it adds to the device's RAM (bytes)."""
    lines = []
    for m in prep.deep:
        dl = deep_learner(prep, m, 0.0)
        mem = dl.state_bytes()
        what = "biases of" if m == "bias" else "weights and biases of"
        layers = ", ".join(op.origin or op.name for op in dl.region_params)
        line = (f"deep-{m}: cut at {prep.deep_cut!r}; trains the {what} {layers} and the classifier; "
                f"{dl.tail.parameter_count():,} trained parameters; generated C step: {mem['step']:,} B "
                f"(parameters {mem['parameters']:,} B, float values {mem['values']:,} B, gradient slots "
                f"{mem['gradients']:,} B) + kept int8 activations {mem['kept_int8']:,} B; buffer entry "
                f"{mem['buffer_entry']:,} B")
        lines.append(line)
    return "\n".join(lines)

