"""What every ``pixelchain`` subcommand shares: its registration with a summary and a description,
and ``--threads`` for the commands that compute with a model.

:func:`add_command` registers a subcommand; with ``compute=True`` it gets ``--threads``, which
:func:`apply_threads` (called by :func:`engine.cli.commands.main` before any handler) passes to
:func:`torch.set_num_threads`. A command that runs a model without it would take every core of a
shared machine, so every such command is registered with ``compute=True``.
"""

from __future__ import annotations

import argparse

__all__ = ["DATA_HELP", "MAX_BATCH", "MAX_ENSEMBLE", "SEED", "add_command", "add_threads_option", "apply_threads", "bounded_int",
           "positive_int"]

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
