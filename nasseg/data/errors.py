"""The one exception type of `nasseg.data`.

Every problem with input data (a missing folder, a wrong layout, a corrupt
image, a label outside the classes, an empty split) raises :class:`DataError`
with a message that names the offending file and says how to fix it. Stage
CLIs print the message without a traceback and exit with status 2.
"""
from __future__ import annotations

from ..errors import InputError


class DataError(InputError, ValueError):
    """Bad or missing input data; the message names the file and the fix."""
