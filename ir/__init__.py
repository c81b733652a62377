"""tinycc graph IR: tensors, ops, graph, verification, statistics, serialization, interpreters.

This package imports only numpy and networkx (never tensorflow, jinja2 or a backend).
"""
from .graph import Graph, IRError, Op
from .ops import OpKind
from .tensor import DType, QuantParams, Tensor
from .verify import verify

__all__ = ["Graph", "IRError", "Op", "OpKind", "DType", "QuantParams", "Tensor", "verify"]
