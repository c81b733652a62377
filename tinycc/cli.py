"""Command-line interface: ``tinycc inspect | plugins | passes | compile`` plus plugin commands.

Exit codes: 0 success, 2 bad input or usage, 1 internal error.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Sequence

from . import __version__
from .names import terminal, terminal_lines
from .errors import TinyccError
from .options import path_text

log = logging.getLogger("tinycc")


class _Parser(argparse.ArgumentParser):
    """argparse that exits with 2 and one line on usage errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _session(args: argparse.Namespace) -> Any:
    from .session import Session

    blocked = tuple(p[3:] for p in (args.plugin or []) if p.startswith("no:"))
    return Session(blocked=blocked)


def _load_model(session: Any, path: str) -> Any:
    if not os.path.exists(path):
        raise TinyccError(f"{path}: no such file")
    return session.registry.frontend_for(path).load(path)


def _parse_passes(text: str) -> tuple[str, ...]:
    from .stages import parse_passes

    return parse_passes(text)


# ---- core commands --------------------------------------------------------
def cmd_inspect(args: argparse.Namespace, session: Any) -> int:
    from .ir.stats import graph_stats, totals
    from .passes import PassContext, run_pipeline

    graph = _load_model(session, args.model)
    if args.cleanup:
        run_pipeline(graph, session.registry.pipeline("cleanup"), PassContext(session=session))
    rows = graph_stats(graph)
    tot = totals(graph)
    peak = _planned_peak(graph)
    if args.json:
        out = {"model": graph.name, "inputs": {n: list(graph.tensors[n].shape) for n in graph.inputs},
               "layers": [{"name": r.name, "op": r.kind, "layer": r.origin, "output_shape": list(r.output_shape),
                           "dtype": r.dtype, "params": r.params, "macs": r.macs,
                           "activation_bytes": r.activation_bytes} for r in rows],
               "totals": tot, "planned_peak": peak}
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
        return 0
    from .report import table, terminal_width

    body = [[r.name, r.kind, "x".join(str(d) for d in r.output_shape[1:]), r.dtype, f"{r.params:,}", f"{r.macs:,}",
             f"{r.activation_bytes:,}"] for r in rows]
    body.append(["total", "", "", "", f"{tot['params']:,}", f"{tot['macs']:,}", ""])
    sys.stdout.write(f"model {graph.name}: {len(graph.ops)} ops, input "
                     + ", ".join(f"{n} {list(graph.tensors[n].shape)} {graph.tensors[n].dtype.value}"
                                 for n in graph.inputs) + "\n")
    sys.stdout.write(table(["name", "op", "output", "dtype", "params", "MACs", "out bytes"], body,
                           width=None if args.wide else terminal_width()) + "\n")
    if peak is not None:
        kinds = sorted({r.dtype for r in rows})
        sys.stdout.write(f"peak: {peak['arena']:,} B planned (lower bound {peak['lower_bound']:,} B), "
                         f"{'/'.join(kinds)} as loaded\n  (compile plans the deployed graph and reports its arena)\n")
    return 0


def _planned_peak(graph: Any) -> dict[str, int] | None:
    """The memory planner's arena for the graph as loaded (None: the graph cannot be planned as is)."""
    from .memory import plan

    try:
        p = plan(graph)
    except Exception:  # noqa: BLE001 - inspect still prints its table for a graph the planner does not take
        return None
    return {"arena": p.arena, "lower_bound": p.lower_bound}


def _kib(n: int) -> str:
    return f"{n // 1024:,} KB" if n % 1024 == 0 else f"{n:,} B"


def cmd_plugins(args: argparse.Namespace, session: Any) -> int:
    reg = session.registry
    sections = [("frontends", reg.frontends), ("passes", reg.passes), ("pipelines", reg.pipelines),
                ("backends", reg.backends), ("targets", reg.targets), ("boards", reg.boards),
                ("calibration sources", reg.calibration_sources), ("prune criteria", reg.prune_criteria)]
    sys.stdout.write("plugins:\n")
    for name in session.order:
        sys.stdout.write(f"  {name:<22} {session.plugin_source(name)}\n")
    for title, table_ in sections:
        sys.stdout.write(f"{title}:\n")
        for e in table_.values():
            extra = " -> " + ", ".join(e.obj) if title == "pipelines" else ""
            if title == "boards":
                t = reg.target_of(e.obj)
                extra = f"  RAM {_kib(e.obj.ram)}, flash {_kib(e.obj.flash)}, {t.name if t else e.obj.arch}"
            elif title == "targets":
                extra = f"  {e.obj.arch}" + (f", validate --on {e.obj.platform}" if e.obj.emulator else "")
            sys.stdout.write(f"  {e.name:<22} from {e.plugin}{extra}\n")
    return 0


def cmd_passes(args: argparse.Namespace, session: Any) -> int:
    """The compile stages in run order with their passes resolved (``--passes`` edits applied), then the
    passes that no stage runs."""
    from .stages import STAGES, resolve

    reg = session.registry
    edits = args.passes or ()
    staged: set[str] = set()
    for stage in STAGES:
        names = resolve(reg, stage, edits)
        sys.stdout.write(f"{stage}:\n")
        for i, n in enumerate(names, 1):
            e = reg.passes[n]
            sys.stdout.write(f"  {i}. {n:<22} {e.obj.description}  [{e.plugin}]\n")
        staged.update(n for n, p in reg.placements.items() if p.stage == stage)
    other = [e for e in reg.passes.values() if e.name not in staged]
    if other:
        used = {p for e in reg.pipelines.values() for p in e.obj}
        sys.stdout.write("in no stage:\n")
        for e in other:
            mark = "" if e.name in used else "  (in no pipeline)"
            sys.stdout.write(f"  {e.name:<22} {e.obj.description}  [{e.plugin}]{mark}\n")
    return 0


def cmd_compile(args: argparse.Namespace, session: Any) -> int:
    from .config import from_args
    from .driver import compile_model

    result = compile_model(args.model, args.target, args.output, from_args(args, session.registry), session)
    sys.stdout.write(result.summary() + "\n")
    if args.time_passes:
        sys.stdout.write(result.timing_table() + "\n")
    return 0


def build_parser(session: Any | None) -> argparse.ArgumentParser:
    p = _Parser(prog="tinycc", description="Compile Keras models into on-device learning programs for MCUs.")
    p.add_argument("--version", action="version", version=f"tinycc {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    p.add_argument("-p", dest="plugin", action="append", metavar="no:NAME", help="block a plugin by name")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("inspect", help="per-layer table of a model (params, MACs, activation bytes)")
    s.add_argument("model")
    s.add_argument("--json", action="store_true", help="machine-readable output (full tensor names)")
    s.add_argument("--wide", action="store_true", help="do not shorten long names to the terminal width")
    s.add_argument("--cleanup", action="store_true", help="show the graph after the cleanup pipeline")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("plugins", help="list registered plugins and what they registered")
    s.set_defaults(func=cmd_plugins)

    s = sub.add_parser("passes", help="the compile stages and their passes in run order")
    s.add_argument("--passes", type=_parse_passes, metavar="+NAME,-NAME", help="show the order with these edits")
    s.set_defaults(func=cmd_passes)

    s = sub.add_parser("compile", help="compile a model into a project for a target")
    s.add_argument("model")
    s.add_argument("--target", "-t", required=True, help="backend name (see `tinycc plugins`)")
    s.add_argument("-o", "--output", type=path_text, required=True, help="output project folder (written atomically)")
    from .driver import add_compile_arguments

    add_compile_arguments(s, session)
    s.set_defaults(func=cmd_compile)

    if session is not None:
        session.add_commands(sub)
    return p


class _TerminalStdout:
    """``sys.stdout`` while a command runs: every command's output (tables, summaries, reports naming layers and
    files of the model) reaches the terminal with control, bidi and other non-printable characters escaped."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(terminal_lines(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _TerminalFormatter(logging.Formatter):
    """Log lines with control and bidi characters (from model names) escaped, one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal(super().format(record))


def _setup_logging(verbose: int, debug: bool, own_process: bool) -> None:
    """tinycc's logger writes ``tinycc: LEVEL: msg``; libraries stay silent unless -v or --debug.

    Native stderr is redirected only when tinycc owns the process (console script, ``python -m``); callers of
    ``main(argv)`` in their own process (tests, notebooks) keep their streams."""
    if own_process and verbose == 0 and not debug:
        from .quiet import silence_libraries

        silence_libraries()
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler()  # binds the current sys.stderr (the user's, after silence_libraries)
    handler.setFormatter(_TerminalFormatter("tinycc: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    root = logging.getLogger()
    if verbose or debug:
        logging.basicConfig(level=level, format="%(name)s: %(levelname)s: %(message)s")
    elif not root.handlers:
        root.addHandler(logging.NullHandler())  # no "last resort" printing of library warnings


def _join_passes(argv: list[str]) -> list[str]:
    """``--passes -NAME`` as ``--passes=-NAME`` (argparse would read ``-NAME`` as an option)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--passes" and i + 1 < len(argv) and argv[i + 1][:1] in "+-" and argv[i + 1] != "--":
            out.append(f"--passes={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    own_process = argv is None
    argv = _join_passes(list(sys.argv[1:] if argv is None else argv))
    pre = _Parser(add_help=False)
    pre.add_argument("-p", dest="plugin", action="append")
    pre.add_argument("-v", "--verbose", action="count", default=0)
    pre.add_argument("--debug", action="store_true")
    known, _ = pre.parse_known_args(argv)
    _setup_logging(known.verbose, known.debug, own_process)
    if own_process:
        from .output import terminate_as_interrupt

        terminate_as_interrupt()  # SIGTERM cleans up like Ctrl-C (no temporary folder left behind)
    stdout, sys.stdout = sys.stdout, _TerminalStdout(sys.stdout)
    try:
        session = _session(known)
        parser = build_parser(session)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args, session) or 0)
    except TinyccError as e:
        sys.stderr.write(f"tinycc: error: {terminal(e)}\n")  # names from the model: no escape sequences
        return e.exit_code
    except KeyboardInterrupt as e:
        sys.stderr.write(f"tinycc: {'terminated' if type(e).__name__ == 'Terminated' else 'interrupted'}\n")
        return 143 if type(e).__name__ == "Terminated" else 130
    except Exception as e:  # internal error: one line unless --debug
        if known.debug:
            raise
        sys.stderr.write(f"tinycc: internal error: {type(e).__name__}: {terminal(e)} (rerun with --debug for a "
                         "traceback)\n")
        return 1
    finally:
        sys.stdout = stdout


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
