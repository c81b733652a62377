"""The C runtime's descriptor structs (backends/c/runtime/tinycc_learn.h) and their size on a target's ABI.

Every backend that declares the runtime's ``tcc_layers``, ``tcc_clf`` and ``tcc_buf`` (c, tflm, arduino) sizes
them here for the memory report; tests/test_memory_layout.py checks these against sizeof on the host,
Cortex-M4 and AVR.
"""
from __future__ import annotations

from ..ir.memory_model import Descriptors
from ..targets import Abi, host_abi

# fields in declaration order: "i" a 4-byte int or float, "p" a pointer
DESCRIPTOR_FIELDS = {"tcc_dense_t": "iiiii" + "p" * 6, "tcc_classifier_t": "piii",
                     "tcc_buffer_t": "iiiiii" + "ppppp" + "ii" + "pp" + "ii" + "p"}


def struct_size(fields: str, abi: Abi) -> int:
    """sizeof of a C struct of ``fields`` on ``abi`` (each field at its alignment, tail padded)."""
    off, align = 0, 1
    for f in fields:
        size, a = (abi.pointer, abi.pointer_align) if f == "p" else (4, abi.int_align)
        off = -(-off // a) * a + size
        align = max(align, a)
    return -(-off // align) * align


def descriptor_bytes(n_layers: int, abi: Abi) -> dict[str, int]:
    """Static RAM of the generated model's descriptors: one ``tcc_dense_t`` per classifier layer (``tcc_layers``),
    the classifier (``tcc_clf``) and the replay buffer (``tcc_buf``)."""
    return {"tcc_layers": n_layers * struct_size(DESCRIPTOR_FIELDS["tcc_dense_t"], abi),
            "tcc_clf": struct_size(DESCRIPTOR_FIELDS["tcc_classifier_t"], abi),
            "tcc_buf": struct_size(DESCRIPTOR_FIELDS["tcc_buffer_t"], abi)}


def descriptors(n_layers: int, abi: Abi | None) -> Descriptors:
    """The report item of a target with ``abi`` (None: unknown, sized for the host and flagged not exact)."""
    a = abi or host_abi()
    where = a.name if abi else f"host ABI, {a.name}: --board names the target"
    return Descriptors(descriptor_bytes(n_layers, a), abi is not None, where)
