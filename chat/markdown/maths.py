"""TeX to MathML on the server: browsers draw MathML natively, with no script."""

from contextlib import suppress

import latex2mathml.converter
from django.utils.html import format_html
from django.utils.safestring import mark_safe

MAX_TEX_CHARS = 2000  # a formula longer than this is shown as its source


def _convert(tex: str, display: str) -> str:
    tex = tex.strip()
    if len(tex) <= MAX_TEX_CHARS:
        with suppress(Exception):  # any TeX it cannot read is shown as its source
            return latex2mathml.converter.convert(tex, display=display)
    return format_html('<code class="math-source">{}</code>', tex)


def inline(tex: str) -> str:
    return _convert(tex, "inline")


def display(tex: str) -> str:
    return _convert(tex, "block")


def block(tex: str) -> str:
    # The MathML is trusted here only as far as the sanitizer, which every render ends in.
    mathml = mark_safe(_convert(tex, "block"))  # noqa: S308
    return format_html('<p class="math-block">{}</p>\n', mathml)
