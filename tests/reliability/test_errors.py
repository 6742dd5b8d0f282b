"""`r1v2_jax.errors`: which failures are the user's (one line, exit 2) and which are bugs."""

from __future__ import annotations

import errno
import os
import signal

import pytest

from r1v2_jax import errors as E
from r1v2_jax.convert.errors import ConversionError
from r1v2_jax.data.records import RecordError


@pytest.mark.parametrize("err,code", [
    (OSError(errno.ENOSPC, "No space left on device", "/out/x"), errno.ENOSPC),
    (ValueError('UNKNOWN: Error writing local file "/out/p/0.0": [os_error_code=\'28\']'), errno.ENOSPC),
    (Exception("Error while serializing: I/O error: Read-only file system (os error 30)"), errno.EROFS),
    (OSError(errno.EIO, "Input/output error"), None),  # hardware: not the user's to fix
    (ValueError("shapes do not match"), None),
    (KeyboardInterrupt(), None),
])
def test_filesystem_errno(err, code):
    assert E.filesystem_errno(err) == code


def test_run_command_user_errors_interrupts_and_bugs(capsys):
    def raiser(err):
        def run():
            raise err
        return run
    assert E.run_command("x", lambda: 0) == 0 and E.run_command("x", lambda: None) == 0
    for err, text in [(E.UserError("--k: bad"), "--k: bad"), (ConversionError("c.json: bad"), "c.json: bad"),
                      (RecordError("f.jsonl:3", "answer", "bad_answer", "unreadable"), "f.jsonl:3"),
                      (FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/nope"), "/nope")]:
        assert E.run_command("convert", raiser(err)) == 2
        out = capsys.readouterr().err
        assert out.startswith("r1v2 convert: error: ") and text in out and "\n" == out[-1:]
    assert E.run_command("convert", raiser(E.Interrupted(signal.SIGTERM))) == 143
    assert "r1v2 convert: interrupted by SIGTERM" in capsys.readouterr().err
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        E.run_command("convert", raiser(ZeroDivisionError("bug")))
    with pytest.raises(ValueError):  # an untyped ValueError is not assumed to be the user's
        E.run_command("convert", raiser(ValueError("bug")))


def test_signal_inside_an_uninterrupted_section_is_raised_at_its_end():
    order = []
    with pytest.raises(E.Interrupted) as info:
        with E.signals_raise():
            with E.uninterrupted():
                os.kill(os.getpid(), signal.SIGTERM)
                order.append("section finished")  # not cut short
                os.kill(os.getpid(), signal.SIGINT)  # a second signal is ignored
            order.append("after the section")  # never reached
    assert order == ["section finished"] and info.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
