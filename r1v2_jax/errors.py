"""User errors vs internal errors, shared by every `r1v2` command.

A user error is a problem with what the user gave (a file, a config key, a value, a full
or read-only disk): the CLI prints one message `r1v2 <command>: error: ...` naming it and
exits with status 2. Anything else is a bug and keeps its traceback.

Commands raise `UserError` for problems they find themselves; the library's own typed
errors (ConversionError, RecordError, ImageError, ConfigError, InvalidGoldError) and
OSErrors about the filesystem count as user errors too (`is_user_error`).
`signals_raise()` turns SIGTERM/SIGINT into `Interrupted`, so that `finally`/`except`
cleanup (hidden partial folders) runs on `timeout`/SLURM/Ctrl-C as on any exception.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import sys
import threading
from typing import Callable, Iterator

USER_ERROR_EXIT = 2


class UserError(Exception):
    """Bad input named precisely (file, key or value); the CLI exits 2 without a traceback."""


class Interrupted(BaseException):
    """SIGTERM/SIGINT received inside `signals_raise()`; a BaseException like
    KeyboardInterrupt, so `except Exception` blocks do not swallow it."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


# library error classes that always mean bad input: module -> class name. Looked up in
# sys.modules only, so this module imports no project module (every layer may import it;
# an unloaded module raised nothing).
_TYPED_ERRORS = {
    "r1v2_jax.convert.errors": "ConversionError",
    "r1v2_jax.data.records": "RecordError",
    "r1v2_jax.data.image": "ImageError",
    "r1v2_jax.train.config_loader": "ConfigError",
    "r1v2_jax.rl.answers": "InvalidGoldError",
}
# filesystem conditions the user must fix (space, permissions, paths), not bugs
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                errno.ENOENT, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EFBIG,
                errno.ENAMETOOLONG, errno.ENOTEMPTY}


# how TensorStore ("os_error_code='28'") and Rust libraries such as safetensors
# ("(os error 28)") report an errno inside their own exception types
_WRAPPED_OS_ERROR = re.compile(r"os_error_code='(\d+)'|\(os error (\d+)\)")


def filesystem_errno(err: BaseException) -> int | None:
    """The errno of a filesystem failure the user must fix (disk full, read-only, no
    permission...): an OSError, or a library error (TensorStore, safetensors) carrying an
    OS error code."""
    code = err.errno if isinstance(err, OSError) else None
    if code is None and isinstance(err, Exception):
        match = _WRAPPED_OS_ERROR.search(str(err))
        code = int(match.group(1) or match.group(2)) if match else None
    return code if code in _USER_ERRNOS else None


def output_error(err: BaseException, output) -> UserError | None:
    """A UserError naming `output` when writing it failed for a filesystem reason."""
    code = filesystem_errno(err)
    if code is None:
        return None
    return UserError(f"{output}: cannot write the output ({os.strerror(code)}); nothing was "
                     "written (the partial output was removed)")


def user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [UserError]
    for module, name in _TYPED_ERRORS.items():
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None:
            types.append(cls)
    return tuple(types)


def is_user_error(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in _USER_ERRNOS:
        return True
    return isinstance(err, user_error_types())


def run_command(command: str, func: Callable[[], int | None]) -> int:
    """Runs one command: user errors -> one message on stderr and exit status 2;
    `Interrupted` -> a message and 128 + signal number; anything else propagates."""
    try:
        return int(func() or 0)
    except Interrupted as err:
        print(f"r1v2 {command}: {err}", file=sys.stderr)
        return 128 + err.signum
    except Exception as err:
        if not is_user_error(err):
            raise
        print(f"r1v2 {command}: error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT


_defer = {"depth": 0, "pending": None, "fired": False}  # signal handling runs in the main thread


@contextlib.contextmanager
def signals_raise(signums=(signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Within the block the first SIGTERM/SIGINT raises `Interrupted` (deferred to the end
    of an `uninterrupted()` section); later ones are ignored so that the cleanup it
    triggers is not itself interrupted. Main thread only."""
    def handler(signum, frame):
        if _defer["fired"] or _defer["pending"] is not None:
            return
        if _defer["depth"]:
            _defer["pending"] = signum
            return
        _defer["fired"] = True
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (and it runs them)
        return
    previous = {s: signal.signal(s, handler) for s in signums}
    _defer.update(pending=None, fired=False)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """A section a signal must not cut short: a wait on a C++ future (TensorStore's
    `result()` returns early on a signal while its write goes on in the background, and
    would recreate files after the cleanup removed them). A signal received inside raises
    `Interrupted` when the section ends; without `signals_raise` (or outside the main
    thread) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _defer["depth"] += 1
    try:
        yield
    finally:
        _defer["depth"] -= 1
    if not _defer["depth"] and _defer["pending"] is not None:
        signum, _defer["pending"], _defer["fired"] = _defer["pending"], None, True
        raise Interrupted(signum)
