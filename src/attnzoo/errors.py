"""The one exception type for mistakes a user can make, and the one way file-system faults become one.

Anything raised as `UserError` ends the `attnzoo` command with its message on one line and exit
status 2, never a traceback. Library callers get an ordinary exception (a `ValueError`).
"""
from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


class UserError(ValueError):
    """A bad name, value, file or shape supplied by the user; the message says what is valid."""


def choices_hint(name: str, valid) -> str:
    """'valid: a, b, c' plus the closest matches to `name`, for error messages."""
    import difflib

    valid = sorted(valid)
    close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    shown = ", ".join(valid) if len(valid) <= 40 else ", ".join(valid[:40]) + f", ... ({len(valid)} in all)"
    return f"{hint}valid: {shown}"


def first_sentence(exc: BaseException, limit: int = 300) -> str:
    """'TypeName: the first sentence of its message', whole, on one line (also for an empty message)."""
    text = " ".join(str(exc).split())
    for end in (". ", "; "):
        if end in text[:limit]:
            text = text[:text.index(end, 0, limit) + 1]
            break
    else:
        text = text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_OS_HINTS = {
    errno.ENOSPC: "the disk is full; free space and rerun (finished checkpoints are kept intact)",
    errno.EDQUOT: "the disk quota is exhausted; free space and rerun",
    errno.ENAMETOOLONG: "the name is too long for the file system; choose a shorter one",
    errno.EACCES: "no permission; choose a folder you can write",
    errno.EPERM: "no permission; choose a folder you can write",
    errno.EROFS: "the file system is read-only; choose a writable folder",
    errno.ENOTDIR: "a file stands where a folder is needed",
    errno.EISDIR: "a folder stands where a file is needed",
    errno.EEXIST: "a file stands where a folder is needed",
    errno.ENOENT: "a folder on the way does not exist",
}


def describe_os_error(exc: OSError, context: str = "") -> str:
    """'file: reason (what to do)'; the file left out when `context` already names it."""
    where = f"{exc.filename}: " if exc.filename and str(exc.filename) not in context else ""
    why = exc.strerror or first_sentence(exc)
    hint = _OS_HINTS.get(exc.errno)
    return f"{where}{why}" + (f" ({hint})" if hint else "")


@contextmanager
def file_errors(action: str):
    """Turn an OSError inside the block (permission, full disk, name too long, a file where a folder
    should be) into one UserError line: 'cannot <action>: <file>: <reason> (<what to do>)'."""
    try:
        yield
    except OSError as e:
        raise UserError(f"cannot {action}: {describe_os_error(e, action)}") from None


def check_writable(path, option: str, folder: bool = False) -> None:
    """Before a long job, make sure its output `path` (a file, or a folder when `folder`) can be
    written: refuse a folder where a file is needed and the other way round, a missing or
    read-only parent, and names the file system refuses. Creates the folder when `folder`."""
    path = Path(path)
    with file_errors(f"write {option} {path}"):
        if folder:
            if path.exists() and not path.is_dir():
                raise UserError(f"{option} {path} is a file, not a folder; give a folder")
            path.mkdir(parents=True, exist_ok=True)
            probe_dir = path
        else:
            if path.is_dir():
                raise UserError(f"{option} {path} is a folder; give a file name")
            probe_dir = path.parent  # Path('.') for a bare file name
            probe_dir.mkdir(parents=True, exist_ok=True)
            if len(path.name.encode()) > os.pathconf(probe_dir, "PC_NAME_MAX"):
                raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(path))
        fd, probe = tempfile.mkstemp(dir=probe_dir, prefix=".attnzoo-write-test.")
        os.close(fd)
        os.unlink(probe)
