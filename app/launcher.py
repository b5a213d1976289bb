"""The ``pixelchain`` command: engine subcommands (train, eval, ...) go to :mod:`engine.cli`, which
needs no Qt; anything else starts the desktop app. Living in ``app`` keeps the engine free of
any reference to the app."""

from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from engine.cli import ENGINE_COMMANDS, quiet_broken_pipe
    from engine.cli import main as engine_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and (argv[0] in ENGINE_COMMANDS or not argv[0].startswith("-")):
        # the app takes options only: a word is a subcommand, a mistyped one included (the engine's
        # parser lists the subcommands with a "did you mean")
        return engine_main(argv)
    if argv[:1] in (["-h"], ["--help"]):  # the subcommands, then the options of the app itself
        try:
            rc = engine_main(argv)
        except SystemExit as exc:  # argparse's --help exits
            rc = int(exc.code or 0)
        try:
            from app.main import build_parser as app_parser
        except ImportError:
            return rc
        try:
            print(f"\nWithout a subcommand, pixelchain starts the desktop app:\n\n{app_parser().format_help()}", end="", flush=True)
        except BrokenPipeError:  # `pixelchain --help | head`
            return quiet_broken_pipe()
        return rc
    try:
        from app.main import main as app_main
    except ImportError as exc:
        print(f"pixelchain: error: the desktop app needs PySide6 and pyqtgraph ({exc})", file=sys.stderr)
        return 2
    return app_main(argv)


if __name__ == "__main__":
    sys.exit(main())
