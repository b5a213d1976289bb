"""What every ``pixelchain`` subcommand shares: its registration with a summary and a description,
and ``--threads`` for the commands that compute with a model.

:func:`add_command` registers a subcommand; with ``compute=True`` it gets ``--threads``, which
:func:`apply_threads` (called by :func:`engine.cli.commands.main` before any handler) passes to
:func:`torch.set_num_threads`. A command that runs a model without it would take every core of a
shared machine, so every such command is registered with ``compute=True``.
"""

from __future__ import annotations

import argparse

__all__ = ["DATA_HELP", "add_command", "add_threads_option", "apply_threads", "positive_int"]

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
