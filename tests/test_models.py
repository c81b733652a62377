"""The reference CNAS model builder: exact parameter count and layer sequence."""
from __future__ import annotations

from tinycc.models import CNAS_PARAMS, CNAS_TRAINABLE, cnas_cifar10, cnas_tokens


def test_cnas_parameter_count_and_sequence() -> None:
    m = cnas_cifar10()
    assert m.count_params() == CNAS_PARAMS == 2_154_538
    assert sum(int(w.numpy().size) for w in m.trainable_weights) == CNAS_TRAINABLE
    kinds = [type(l).__name__ for l in m.layers]
    assert kinds[0] == "InputLayer" and kinds[-3:] == ["Flatten", "Dropout", "Dense"]
    convs = [l for l in m.layers if type(l).__name__ == "Conv2D"]
    assert len(convs) == sum(t.startswith("conv") for t in cnas_tokens()) == 47
    grouped = [l for l in convs if l.groups > 1]
    assert [l.groups for l in grouped] == [16, 48, 72, 72, 120, 120, 240, 240, 336, 336, 480]
    assert all(l.groups == l.filters for l in grouped)
    assert convs[-1].filters == 1280 and convs[-1].kernel.shape == (1, 1, 960, 1280)
    assert sum(type(l).__name__ == "Multiply" for l in m.layers) == 6
    assert m.output_shape == (None, 10)
    assert m.get_layer("dense").kernel_regularizer is not None
