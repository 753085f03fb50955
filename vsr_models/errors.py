"""The one base class of the errors a user can fix (a bad file, a missing install, a wrong option).

Every console script catches :class:`VSRError` and prints its message (which names the problem
and the fix) with a non-zero exit; any other exception is a bug and keeps its traceback. Each
layer subclasses it where the error arises (``CheckpointError``, ``PackageError``, ``InputError``,
``EngineNotFound``, ...). This module imports nothing, so every layer can use it.
"""


class VSRError(Exception):
    """A problem with the user's input, files, options or installation; the message says what to do."""


class NotInstalled(VSRError, FileNotFoundError):
    """A file that comes with an installable package (released weights, sample clips) is missing;
    the message says what to install, or where the file is released."""
