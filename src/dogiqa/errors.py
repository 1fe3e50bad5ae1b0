"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""

from __future__ import annotations


class DogIQAError(Exception):
    """Base class: anything the user can fix (bad input, bad params, missing data)."""


class ParamError(DogIQAError):
    """A value in params.yaml is invalid. The message names the param."""

    def __init__(self, param: str, problem: str) -> None:
        super().__init__(f"params: {param}: {problem}")
        self.param = param
        self.problem = problem


class ChecksumError(DogIQAError):
    """A downloaded file's SHA-256 differs from the registry's; the file is refused."""


class UnsafeArchiveError(DogIQAError):
    """An archive member would be written outside the extraction folder."""


class ImageError(DogIQAError):
    """An image cannot be read or is refused (corrupt, truncated, too large, ...)."""


class LabelError(DogIQAError):
    """A label file or a stage table is missing, unreadable or lacks a required column."""
