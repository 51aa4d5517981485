"""The one base class of errors that are the user's to fix.

:class:`InputError` marks an exception as caused by what the user gave -- bad data, a
missing or unreadable file, a wrong setting, a folder in use -- rather than by a bug.
The pipeline's stages print such an error as ``error: <message>`` (the message names
the file or key and the fix) and exit with status 2; any other exception is a bug and
keeps its traceback (exit status 1). Each module's own error class derives from it
beside its usual base (``class CheckpointError(InputError, RuntimeError)``), so callers
that catch ``RuntimeError`` or ``ValueError`` are unaffected.
"""
from __future__ import annotations

__all__ = ["InputError"]


class InputError(Exception):
    """An error in what the user gave (data, files, settings); the message says what and how to fix it."""
