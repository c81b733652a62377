"""Constant tables of a generated model.c: how each is defined in C.

A table of a few numbers is written as a list of literals (``{ 12, -3, ... }``) for people to read. An integer
table of ``PACK_BYTES`` bytes or more (weights, widened copies, requantization records) is written as one string
literal of its little-endian bytes: compilers parse a string ~15x faster than a list of numbers (the CNAS model's
14 MB model.c compiles in a fraction of the time), and the bytes in memory are the same. A wider type (int16,
int32, int64) is a union of those bytes with the typed array (``name.v``, C99's type punning through a union); a
project refuses to build on a big-endian core (``#error``), where the bytes would read differently.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layout import MAX_COLUMNS, c_float, wrap_values

PACK_BYTES = 256  # integer tables of this many bytes or more are written as a string literal of their bytes
CTYPE_BYTES = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4, "uint32_t": 4, "int64_t": 8,
               "float": 4}  # bytes of an element of a table of each C type
WIDTH = {k: CTYPE_BYTES[k] for k in ("int8_t", "uint8_t", "int16_t", "int32_t", "int64_t")}  # the packable types
_DTYPE = {"int8_t": "<i1", "uint8_t": "<u1", "int16_t": "<i2", "int32_t": "<i4", "int64_t": "<i8"}
_ESCAPES = np.array([f"\\x{i:02x}".encode() for i in range(256)], dtype="S4")  # every byte as \xHH (4 chars)
_INDENT = "    "
_PER_LINE = (MAX_COLUMNS - len(_INDENT) - 2) // 4  # bytes a line: 4 columns each, between two quotes

# before the tables of a model.c that has packed ones: a string longer than C99's minimum limit (4095) is a
# -pedantic warning, not an error of any compiler tinycc targets; the byte order is checked where it matters
PROLOGUE = ("#if defined(__GNUC__)\n"
            "#pragma GCC diagnostic ignored \"-Woverlength-strings\" /* the packed tables below */\n"
            "#endif\n")
ENDIAN = ("#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)\n"
          "#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__\n"
          "#error \"tinycc: the packed tables hold little-endian bytes\"\n"
          "#endif\n"
          "#endif\n")


def _vals(a: np.ndarray, ctype: str) -> list[str]:
    """One C literal per element."""
    flat = np.asarray(a).reshape(-1)
    if ctype == "float":
        return [c_float(v) for v in flat]
    ints = flat.astype(np.int64).tolist() if flat.dtype.kind in "iub" else [int(v) for v in flat]
    if ctype == "int32_t":
        return [str(v) if v != -2147483648 else "(-2147483647L - 1L)" for v in ints]
    if ctype == "int64_t":  # int64 biases of int16 layers: |v| < 2^47
        return [f"{v}LL" for v in ints]
    return list(map(str, ints))


def packs(ctype: str, count: int) -> bool:
    """Whether a table of ``count`` ``ctype`` values is written as a string literal of its bytes."""
    return ctype in WIDTH and WIDTH[ctype] * count >= PACK_BYTES


def element_ref(name: str, ctype: str, count: int) -> str:
    """How code names the elements of table ``name`` of ``count`` ``ctype`` values: ``name``, or ``name.v`` where
    it is packed into a union (wider than a byte)."""
    return f"{name}.v" if packs(ctype, count) and WIDTH[ctype] > 1 else name


def table_bytes(data: np.ndarray, ctype: str) -> bytes:
    """The table's little-endian bytes (ValueError: a value outside ``ctype``'s range)."""
    flat = np.asarray(data).reshape(-1)
    typed = flat.astype(_DTYPE[ctype])
    if not np.array_equal(typed, flat):
        raise ValueError(f"a {ctype} table holds a value outside the type's range")
    return typed.tobytes()


def string_lines(raw: bytes, indent: str = _INDENT) -> str:
    """``raw`` as adjacent C string literals of ``\\xHH`` escapes, one line each, under 100 columns (no escape
    is followed by a hex digit: every byte is escaped)."""
    text = _ESCAPES[np.frombuffer(raw, np.uint8)].tobytes().decode("ascii")
    step = 4 * _PER_LINE
    return "\n".join(f'{indent}"{text[i:i + step]}"' for i in range(0, len(text), step))


@dataclass
class CArray:
    """A constant table: its C name and type, its numbers (flat), where it lives, an optional guard."""

    name: str
    ctype: str
    data: np.ndarray
    flash: bool = True
    part: str = "extractor"  # or "classifier"
    guard: str = ""  # a preprocessor condition the definition sits under (e.g. TCC_DSP_ASM), "" for none
    qualifiers: str = "static const"  # before the type: "const" (an external constant), "" (an external RAM table)

    @property
    def count(self) -> int:
        return int(np.asarray(self.data).size)

    @property
    def values(self) -> list[str]:
        """One C literal per element (the list form; tests build their own declarations from it)."""
        return _vals(self.data, self.ctype)

    @property
    def packed(self) -> bool:
        return packs(self.ctype, self.count)

    @property
    def ref(self) -> str:
        """How code names the table's elements: ``name``, or ``name.v`` for a packed table wider than a byte."""
        return element_ref(self.name, self.ctype, self.count)

    def definition(self, storage: str = "TCC_WEIGHT") -> str:
        """The C definition (``storage``: the attribute macro after the declarator, "" for none), under its
        guard."""
        at = f" {storage}" if storage else ""
        lead = f"{self.qualifiers} " if self.qualifiers else ""
        if not self.packed:
            text = (f"{lead}{self.ctype} {self.name}[{self.count}]{at} = {{\n"
                    f"{wrap_values(self.values)}\n}};")
        elif WIDTH[self.ctype] == 1:
            text = (f"{lead}{self.ctype} {self.name}[{self.count}] TCC_BYTES{at} =\n"
                    f"{string_lines(table_bytes(self.data, self.ctype))};")
        else:
            n = self.count * WIDTH[self.ctype]
            text = (f"{lead}union {{ int8_t b[{n}] TCC_BYTES; {self.ctype} v[{self.count}]; }}\n"
                    f"    {self.name}{at} = {{\n{string_lines(table_bytes(self.data, self.ctype))}\n}};")
        return f"#if {self.guard}\n{text}\n#endif" if self.guard else text


def prologue(arrays: list[CArray]) -> str:
    """What goes before the definitions of ``arrays``: the pragma where one is packed, the byte order check where a
    wider one is."""
    head = PROLOGUE if any(a.packed for a in arrays) else ""
    return head + (ENDIAN if any(a.packed and WIDTH[a.ctype] > 1 for a in arrays) else "")


def definitions(arrays: list[CArray], storage: str = "TCC_WEIGHT") -> str:
    """The definitions of ``arrays``, after the prologue where one of them is packed."""
    return prologue(arrays) + "".join(a.definition(storage) + "\n" for a in arrays)
