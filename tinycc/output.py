"""Atomic project folders: where ``-o`` may write, the marker of tinycc's folders, install and clean-up.

A project is emitted into ``.NAME.tmp-PID-XXXX`` beside the output and renamed into place. ``--force``
replaces only a real folder holding :data:`MARKER` (a folder tinycc wrote), never a file, a device, a
symlink or the working folder. Without ``--force`` the install is ``rename(2)`` onto a path that must not
exist (or be an empty folder): a project that appeared meanwhile (a concurrent compile) makes it fail.
Leftovers of killed runs (``.NAME.tmp-PID-*`` / ``.NAME.old-PID``, PID dead) are removed by later runs.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import TinyccError

MARKER = ".tinycc-project"
TEMP_NAME_EXTRA = 32  # ".NAME.tmp-PID-XXXXXXXX" beside the output: the name's length plus this must fit


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: temporary folders are removed, exit code 143."""


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode() -> int:
    """The mode a plain ``mkdir`` would give a folder (0777 less the umask)."""
    return 0o777 & ~umask()


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def check_writable(out: Path) -> None:
    """Fail early (before any work) when nothing can be created where ``out`` should go."""
    base = _existing_ancestor(out.parent)
    if not base.is_dir():
        raise TinyccError(f"{out}: cannot write there ({base} is not a folder)")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".tinycc-probe-", dir=base))
    except OSError as e:
        raise TinyccError(f"{out}: cannot write there ({base}: {_why(e)})") from None


def check_path(out: Path) -> None:
    """Refuse an output path ending in ``..`` or passing through ``..`` after a folder that does not exist
    (``-o sub/..`` would create ``sub`` and then write elsewhere, or nowhere)."""
    missing = False
    for i, part in enumerate(out.parts):
        if part == ".." and (missing or i == len(out.parts) - 1):
            raise TinyccError(f"{out}: give the output a name of its own (a path without '..' after a folder that "
                              "does not exist, and not ending in '..')")
        missing = missing or not os.path.lexists(Path(*out.parts[:i + 1]))
    try:
        name_max = os.pathconf(_existing_ancestor(out.parent), "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(out.name)) + TEMP_NAME_EXTRA > name_max:
        raise TinyccError(f"{str(out)[:80]}...: the name is too long ({len(os.fsencode(out.name))} bytes; at most "
                          f"{name_max - TEMP_NAME_EXTRA} here, with room for tinycc's temporary name beside it)")


def check_output_dir(out: Path, force: bool) -> None:
    """What ``-o DIR [--force]`` may replace: nothing, an empty folder, or with --force a folder tinycc wrote."""
    check_path(out)
    if not os.path.lexists(out):
        check_writable(out)
        return
    if out.is_symlink():
        raise TinyccError(f"{out} is a symbolic link; tinycc writes only to a new folder or one it wrote "
                          "(remove the link)")
    if not out.is_dir():
        kind = "a regular file" if out.is_file() else "not a folder (a device, socket or pipe)"
        raise TinyccError(f"{out} exists and is {kind}; tinycc does not replace it, even with --force")
    here = Path.cwd().resolve()
    real = out.resolve()
    if real == here or real in here.parents:
        raise TinyccError(f"{out} is the working folder or contains it; tinycc does not replace it")
    if any(out.iterdir()):
        if not force:
            raise TinyccError(f"{out} exists and is not empty (use --force to replace it)")
        if not (out / MARKER).is_file():
            raise TinyccError(f"{out} was not written by tinycc (no {MARKER} in it): --force replaces only "
                              "tinycc's project folders; remove it yourself or choose another -o")
    check_writable(out)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(out: Path) -> list[Path]:
    """Remove ``.NAME.tmp-PID-*`` / ``.NAME.old-PID`` folders left beside ``out`` by runs that were killed."""
    parent = out.parent if str(out.parent) else Path(".")
    pat = re.compile(rf"^\.{re.escape(out.name)}\.(?:tmp|old)-(\d+)(?:-.*)?$")
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = pat.match(p.name)
        if not m or p.is_symlink() or not p.is_dir() or _pid_alive(int(m.group(1))):
            continue
        if (p / MARKER).is_file() or not any(p.iterdir()):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def new_project_dir(out: Path) -> Path:
    """An empty temporary folder beside ``out`` holding the marker (stale leftovers cleaned first)."""
    clean_stale(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    except OSError as e:
        raise TinyccError(f"{out}: cannot write there ({_why(e)})") from None
    (tmp / MARKER).write_text("written by tinycc; `tinycc compile --force` may replace this folder\n")
    return tmp


@contextlib.contextmanager
def project_dir(out: Path, force: bool) -> Iterator[Path]:
    """Write a whole output folder atomically: yields the temporary folder, installs it at ``out`` when the block
    ends without an exception (``--force`` as for compile), removes it otherwise. Check ``out`` with
    :func:`check_output_dir` before the work that precedes the writing."""
    tmp = new_project_dir(out)
    try:
        yield tmp
        install_dir(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def open_work_dir(out: Path, force: bool) -> bool:
    """A folder a long command fills as it goes and resumes (``tinycc search``): created atomically with the
    marker; an existing folder is reused only when tinycc wrote it (marker), replaced by a new one with
    ``force``; never a symlink, file, device or the working folder. Returns True when an existing folder is
    resumed."""
    check_output_dir(out, True)  # a folder holding anything must be one tinycc wrote, with or without --force
    if os.path.lexists(out) and any(out.iterdir()) and not force:
        for name in os.listdir(out):
            if (out / name).is_symlink():
                raise TinyccError(f"{out / name} is a symbolic link; tinycc does not write through links")
        return True
    with project_dir(out, force):
        pass
    return False


def install_dir(tmp: Path, out: Path, force: bool) -> None:
    """Move the finished project ``tmp`` to ``out``; the old folder (with --force) goes only after the new is in."""
    mode = stat.S_IMODE(os.stat(out).st_mode) if out.is_dir() and not out.is_symlink() else default_mode()
    os.chmod(tmp, mode)
    if force and os.path.lexists(out) and out.is_dir() and (out / MARKER).is_file():
        check_output_dir(out, force)  # still a folder tinycc wrote
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
        try:
            _rename_new(tmp, out)
        except BaseException:
            if not os.path.lexists(out):
                os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    _rename_new(tmp, out)


def _rename_new(tmp: Path, out: Path) -> None:
    """rename(2) a folder onto ``out``: fails unless ``out`` is absent or an empty folder."""
    try:
        os.rename(tmp, out)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise TinyccError(f"{out} appeared while compiling (another tinycc run?); nothing was replaced") from None
        raise TinyccError(f"{out}: cannot install the project ({_why(e)})") from None


def terminate_as_interrupt() -> None:
    """From now on SIGTERM raises :class:`Terminated` (a KeyboardInterrupt), so clean-ups run (main thread only)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def check_output_file(out: Path) -> None:
    """``-o FILE``: absent or a regular file (replaced atomically), never a folder, device or symlink."""
    check_path(out)
    if os.path.lexists(out) and (out.is_symlink() or not out.is_file()):
        kind = ("a symbolic link" if out.is_symlink() else "a folder" if out.is_dir()
                else "not a regular file (a device, socket or pipe)")
        raise TinyccError(f"{out} exists and is {kind}; give a file name to write")
    check_writable(out)


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and ``os.replace`` (never a partial file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise TinyccError(f"{path}: cannot write there ({e.strerror or type(e).__name__})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is not what a plain open() would give
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
