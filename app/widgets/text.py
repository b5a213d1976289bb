"""Strings from files (a checkpoint's metadata, a path) made safe to show.

A checkpoint's ``name`` or any other metadata string is whatever its author wrote: it may hold
HTML, which a rich-text label would render (a link, an image, a page of markup), control
characters, or megabytes of text, which Qt lays out on the GUI thread for as long as that takes.
:func:`plain` cuts such a string to one short line; :func:`rich` also escapes it for a label
that shows rich text around it."""

from __future__ import annotations

import html
import re

__all__ = ["plain", "rich", "MAX_SHOWN"]

#: the most characters of one metadata string shown (the tooltip or the file keeps the rest)
MAX_SHOWN = 120

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def plain(value: object, limit: int = MAX_SHOWN) -> str:
    """``value`` as one line of at most ``limit`` characters (control characters and line breaks
    become spaces; a longer text ends in "…")."""
    text = str(value)
    if len(text) > 4 * limit:  # never scan megabytes to shorten them
        text = text[: 4 * limit]
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def rich(value: object, limit: int = MAX_SHOWN) -> str:
    """:func:`plain`, escaped for a rich-text label: markup in it shows as the characters it is."""
    return html.escape(plain(value, limit), quote=False)
