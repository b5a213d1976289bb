"""The ``pixelchain`` command: engine subcommands (train, eval, ...) go to :mod:`engine.cli`, which
needs no Qt; anything else starts the desktop app. Living in ``app`` keeps the engine free of
any reference to the app."""

from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from engine.cli import ENGINE_COMMANDS
    from engine.cli import main as engine_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and (argv[0] in ENGINE_COMMANDS or argv[0] in ("-h", "--help")):
        return engine_main(argv)
    try:
        from app.main import main as app_main
    except ImportError as exc:
        print(f"pixelchain: error: the desktop app needs PySide6 and pyqtgraph ({exc})", file=sys.stderr)
        return 2
    return app_main(argv)


if __name__ == "__main__":
    sys.exit(main())
