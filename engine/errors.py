"""The one error family of the engine.

Every error about the user's input or machine (a missing data file, a damaged checkpoint, an
ordering a model cannot follow, a training run that cannot go on, ...) derives from
:class:`PixelchainError`. Its message is one complete line that says what is wrong and, where it
can, what to do; the CLI prints it as ``pixelchain: error: ...`` and the app's worker shows it
without a traceback. Anything else that escapes is a bug and keeps its traceback.

The concrete classes also derive from the built-in error they refine (``ValueError`` for bad
input, ``RuntimeError`` for a run that failed), so callers that catch those keep working.
"""

from __future__ import annotations

__all__ = ["PixelchainError"]


class PixelchainError(Exception):
    """Base of every expected engine error: its ``str`` is the whole one-line message."""
