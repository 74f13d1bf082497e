"""Errors that reach a person: each says what happened, to which file, and what to do."""

from __future__ import annotations

import errno


class HeadstartError(Exception):
    """Base of every error Headstart shows to its user as a sentence rather than a traceback."""


class DataError(HeadstartError):
    """The images given cannot make a data set (missing folder, no classes, nothing readable)."""


class WeightsUnavailableError(HeadstartError):
    """The pretrained weights asked for cannot be had on this machine."""


class RunNotFoundError(HeadstartError):
    """A run folder is missing or incomplete."""


def user_message(exc: BaseException) -> str:
    """The sentence to show a person for `exc`: ours are written for them; anything else is labelled as a failure."""
    if isinstance(exc, HeadstartError | ValueError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" while writing '{exc.filename}'" if exc.filename else ""
        return (
            f"The disk is full{where}. Free some space there, then try again (a run cut off by it keeps its last "
            "finished epoch: resume it from Home); earlier runs and data sets are untouched."
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        where = f"'{exc.filename}'" if exc.filename else "the runs or data folder"
        return (
            f"Headstart may not write in {where} ({exc.strerror.lower() if exc.strerror else 'not writable'}). "
            "Make it writable, or start Headstart with HEADSTART_RUNS_DIR (and HEADSTART_DATA_DIR) set to a "
            "folder it may write in."
        )
    if isinstance(exc, MemoryError):
        return "The computer ran out of memory. Lower the batch size or the image size, or use fewer images."
    return f"Something went wrong inside Headstart ({type(exc).__name__}: {exc}). The run folder keeps what was done."
