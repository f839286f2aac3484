"""Model output to Markdown HTML: the parsers and how each construct is written out.

Model output is untrusted. markdown-it runs with raw HTML off (so `<script>`
shows as text) and without reference definitions (a definition written late
would change a block already shown, and they are rare in replies). On top of
CommonMark: tables, strikethrough, and maths written to MathML on the server
(`$…$`, `$$…$$`, `\\(…\\)`, `\\[…\\]`; a price such as "$5 and $10" stays text).

Two things a page would otherwise do on its own are changed here:
- an image is never loaded: it becomes a link naming its host, which opens the
  picture only if the reader clicks it (an image URL can carry the conversation
  to a third party the moment it loads);
- a link shows its host after its text, so "click here" cannot hide where it goes.

FULL highlights code with Pygments; LIVE (the growing tail of a streaming reply)
does not, so code is coloured once, when its block is complete.
"""

import re
from urllib.parse import urlsplit

from django.utils.html import format_html
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin
from mdit_py_plugins.texmath.index import make_block_func, make_inline_func
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

from chat.markdown import maths

MAX_HIGHLIGHT_CHARS = 100_000  # past this, code is shown plain: highlighting is O(n) but slow
_formatter = HtmlFormatter(nowrap=True)
_NEWLINES = re.compile(r"\r\n?")


def normalise(text: str) -> str:
    """The text as markdown-it sees it, so that line numbers agree with its token maps."""
    return _NEWLINES.sub("\n", text).replace("\0", "\ufffd")


def _highlight(code: str, lang: str, _attrs) -> str:
    if not lang or len(code) > MAX_HIGHLIGHT_CHARS:
        return ""  # markdown-it escapes and wraps it itself
    try:
        lexer = get_lexer_by_name(lang.split()[0], stripnl=False)
    except ClassNotFound:
        return ""
    return pygments_highlight(code, lexer, _formatter)


def host_of(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.scheme in ("http", "https"):
        return parts.hostname or ""
    return "" if parts.scheme else "this site"


IMAGE_LINK = '<a class="image-link" href="{}">Image: {} ({}, not loaded)</a>'
LINK_END = '</a> <span class="link-host">({})</span>'


def _image(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    src = token.attrGet("src") or ""
    alt = self.renderInlineAsText(token.children or [], options, env) or "image"
    host = host_of(src) or "unknown host"
    return format_html(IMAGE_LINK, src, alt, host)


def _link_open(self, tokens, idx, options, env) -> str:
    env.setdefault("link_hosts", []).append(host_of(tokens[idx].attrGet("href") or ""))
    return self.renderToken(tokens, idx, options, env)


def _link_close(self, tokens, idx, options, env) -> str:
    hosts = env.get("link_hosts") or [""]
    host = hosts.pop()
    return format_html(LINK_END, host) if host else "</a>"


# \( … \) inline, and \[ … \] on lines of their own with no blank line inside
# (a blank line ends any block, so a block already shown never turns into maths).
_BRACKET_INLINE = {
    "name": "math_bracket_inline",
    "tag": "\\(",
    "rex": re.compile(r"^\\\((.+?)\\\)", re.DOTALL),
}
_BRACKET_BLOCK = {
    "name": "math_bracket_block",
    "tag": "\\[",
    "rex": re.compile(r"^\\\[((?:(?!\n[ \t]*\n)[\s\S])+?)\\\][ \t]*(?=\n|$)"),
}


def _maths(md: MarkdownIt):
    dollarmath_plugin(
        md, allow_labels=False, allow_space=False, allow_digits=False, allow_blank_lines=False,
        double_inline=True,
    )  # fmt: skip
    md.inline.ruler.before("escape", _BRACKET_INLINE["name"], make_inline_func(_BRACKET_INLINE))
    md.block.ruler.before("fence", _BRACKET_BLOCK["name"], make_block_func(_BRACKET_BLOCK))
    for name, write in (
        ("math_inline", maths.inline),
        ("math_inline_double", maths.display),  # `$$…$$` inside a paragraph
        ("math_block", maths.block),
        ("math_bracket_inline", maths.inline),
        ("math_bracket_block", maths.block),
    ):
        md.add_render_rule(name, lambda _self, tokens, idx, _o, _e, w=write: w(tokens[idx].content))


def _parser(highlight) -> MarkdownIt:
    md = (
        MarkdownIt("commonmark", {"html": False, "linkify": False, "highlight": highlight})
        .enable("table")
        .enable("strikethrough")
        .disable("reference")
    )
    _maths(md)
    md.add_render_rule("image", _image)
    md.add_render_rule("link_open", _link_open)
    md.add_render_rule("link_close", _link_close)
    return md


FULL = _parser(_highlight)
LIVE = _parser(None)
# Lines that open a maths block which may still close further down.
MATHS_OPENER = re.compile(r"^ {0,3}(\$\$|\\\[)")
