"""Errors that reach a person: each says what happened, to which file, and what to do."""

from __future__ import annotations


class HeadstartError(Exception):
    """Base of every error Headstart shows to its user as a sentence rather than a traceback."""


class DataError(HeadstartError):
    """The images given cannot make a data set (missing folder, no classes, nothing readable)."""


class WeightsUnavailableError(HeadstartError):
    """The pretrained weights asked for cannot be had on this machine."""


class RunNotFoundError(HeadstartError):
    """A run folder is missing or incomplete."""
