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
from typing import NoReturn

from ..errors import PixelchainError

__all__ = ["DATA_HELP", "CommandError", "Parser", "add_command", "add_threads_option", "apply_threads", "check_device",
           "positive_int", "short_usage"]


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
DATA_HELP = "folder with binarized_mnist_*.amat (default: $PIXELCHAIN_DATA, else the download cache)"


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
