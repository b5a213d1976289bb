"""The ``pixelchain`` command line without Qt: :mod:`.commands` holds the parser and the train, eval,
sample and info commands; :mod:`.tasks` the compress, decompress, score and inpaint-eval commands."""

from .commands import ENGINE_COMMANDS, build_parser, main, quiet_broken_pipe

__all__ = ["ENGINE_COMMANDS", "build_parser", "main", "quiet_broken_pipe"]
