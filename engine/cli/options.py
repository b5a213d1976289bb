"""What every ``pixelchain`` subcommand shares: its registration with a summary and a description,
and ``--threads`` for the commands that compute with a model.

:func:`add_command` registers a subcommand; with ``compute=True`` it gets ``--threads``, which
:func:`apply_threads` (called by :func:`engine.cli.commands.main` before any handler) passes to
:func:`torch.set_num_threads`. A command that runs a model without it would take every core of a
shared machine, so every such command is registered with ``compute=True``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, NoReturn, TextIO

from ..errors import PixelchainError

__all__ = ["DATA_HELP", "MAX_BATCH", "MAX_ENSEMBLE", "SEED", "CommandError", "Parser", "Progress", "add_command", "add_threads_option",
           "apply_threads", "bounded_int", "check_device", "positive_int", "short_usage"]


class CommandError(PixelchainError, ValueError):
    """Options that make no sense together or for this checkpoint, found by a command's handler."""


def short_usage(parser: argparse.ArgumentParser) -> str:
    """``pixelchain eval checkpoint [options]``: the positionals and required options of ``parser``,
    short enough for the line under an error (the whole usage of train is a screenful)."""
    words = [parser.prog]
    optional = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            words.append("COMMAND")
        elif not action.option_strings:
            name = action.metavar if isinstance(action.metavar, str) else action.dest
            words.append(f"{name} ..." if action.nargs in ("+", "*") else name)
        elif action.required:
            words.append(f"{action.option_strings[-1]} {action.metavar or action.dest.upper()}")
        elif not isinstance(action, argparse._HelpAction):
            optional = True
    return " ".join(words + (["[options]"] if optional else []))


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors take two lines, ``pixelchain: error: ...`` and a short usage
    with where to read more, instead of argparse's whole usage first (a screenful for train)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"pixelchain: error: {message}\nusage: {short_usage(self)}  (`{self.prog} --help` tells more)\n")
        sys.exit(2)

#: help of every ``--data`` option
DATA_HELP = ("folder with the data set's files (binarized_mnist_*.amat, or the four MNIST files), or one holding binarized_mnist/ "
             "and mnist/ folders (default: $PIXELCHAIN_DATA, else the download cache)")


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


#: what ``--device`` accepts (``cuda:N`` with any N)
DEVICE_NAMES = ("cpu", "cuda", "mps", "auto")


def check_device(text: str) -> str:
    """``--device`` as given when it is cpu, cuda, cuda:N, mps or auto; anything else (``meta``, a typo)
    is a :class:`CommandError` here, before a checkpoint is read, rather than a failure deep inside torch."""
    base, colon, index = text.partition(":")
    if text in DEVICE_NAMES or (base == "cuda" and colon and index.isdigit()):
        return text
    raise CommandError(f"--device {text!r} is not a device pixelchain runs on; use cpu, cuda, cuda:N, mps or auto")


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="CPU threads torch computes with (default: torch's choice, about one per core)")


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's CPU thread count from ``--threads`` where the command has it and it was given."""
    n = getattr(args, "threads", None)
    if n:
        import torch

        torch.set_num_threads(n)


def add_command(sub: argparse._SubParsersAction, name: str, summary: str, description: str | None = None,
                compute: bool = False) -> argparse.ArgumentParser:
    """Register subcommand ``name``: ``summary`` is its line in ``pixelchain --help``, ``summary``
    and ``description`` head its own ``--help``; ``compute``: it runs a model (adds ``--threads``)."""
    text = summary[:1].upper() + summary[1:] + "." + (f"\n\n{description}" if description else "")
    p = sub.add_parser(name, help=summary, description=text, formatter_class=argparse.RawDescriptionHelpFormatter)
    if compute:
        add_threads_option(p)
    return p


class Progress:
    """``(done, total)`` progress of a long command, on stderr.

    Not on a terminal (a log file, a pipe, a job in the background) it writes a whole line now and
    then: ``eval: 2,000 of 10,000 images (20%), 0:31 elapsed, about 2:04 left``, the first after
    :attr:`EVERY` seconds and then at most one per :attr:`EVERY` seconds, so a short run prints
    nothing and a long one shows it is alive. On a terminal it keeps one line up to date and clears
    it when the work is done. ``--json`` output on stdout is never touched."""

    #: seconds between two lines when the output is not a terminal
    EVERY = 10.0

    def __init__(self, what: str, unit: str = "images", stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.what, self.unit = what, unit
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.start = self.last = clock()
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.shown = False

    def line(self, done: int, total: int) -> str:
        from ..steps import fmt_time

        elapsed = self.clock() - self.start
        text = f"{self.what}: {done:,} of {total:,} {self.unit}"
        if total > 0:
            text += f" ({100 * done / total:.0f}%), {fmt_time(elapsed)} elapsed"
            if 0 < done < total:
                text += f", about {fmt_time(elapsed * (total - done) / done)} left"
        return text

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if self.tty:
            if now - self.last >= 0.2 or done >= total:
                self.last = now
                self.stream.write("\r" + self.line(done, total) + " " * 8)
                self.stream.flush()
                self.shown = True
            if done >= total:
                self.close()
            return
        if now - self.last >= self.EVERY and done < total:
            self.last = now
            self.stream.write(self.line(done, total) + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Clear the terminal line (nothing to do off a terminal)."""
        if self.tty and self.shown:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
            self.shown = False


def bounded_int(lo: int, hi: int):
    """argparse type: a whole number from ``lo`` to ``hi`` (a seed or a size beyond what the engine
    can use is refused here, not by a library's own message deep inside)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo:,} to {hi:,}, got {n:,}")
        return n

    parse.__name__ = "whole number"  # how argparse names the type in its messages
    return parse


#: seeds: what torch's and numpy's generators take
SEED = bounded_int(0, 2**63 - 1)
#: members of an ensemble (``eval --ensemble``): the bundled figures use 8
MAX_ENSEMBLE = 1000
#: images per batch of an evaluation
MAX_BATCH = 100_000
