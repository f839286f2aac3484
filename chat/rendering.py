"""Model output to safe HTML: Markdown on the server, then the sanitizer.

Model output is untrusted. markdown-it runs with raw HTML off (so `<script>`
shows as text), Pygments colours fenced code, and nh3 (ammonia) keeps only an
allow-list of tags and attributes, drops `javascript:` URLs, and marks every
link rel="noopener noreferrer" target="_blank".
"""

import re

import nh3
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

MAX_HIGHLIGHT_CHARS = 100_000  # past this, code is shown plain: highlighting is O(n) but slow

_formatter = HtmlFormatter(nowrap=True)


def _highlight(code: str, lang: str, _attrs) -> str:
    if not lang or len(code) > MAX_HIGHLIGHT_CHARS:
        return ""  # markdown-it escapes and wraps it itself
    try:
        lexer = get_lexer_by_name(lang.split()[0], stripnl=False)
    except ClassNotFound:
        return ""
    return pygments_highlight(code, lexer, _formatter)


_markdown = (
    MarkdownIt("commonmark", {"html": False, "linkify": False, "highlight": _highlight})
    .enable("table")
    .enable("strikethrough")
)

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s",
    "blockquote", "ul", "ol", "li", "a", "code", "pre", "span", "table", "thead",
    "tbody", "tr", "th", "td", "img",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "code": {"class"},
    "span": {"class"},
    "ol": {"start"},
}
ALIGN_CLASSES = {"align-left", "align-center", "align-right"}
# markdown-it aligns table cells with inline styles, which the page's CSP forbids.
_ALIGN_STYLE = re.compile(r'style="text-align:(left|center|right)"')


def render_markdown(text: str) -> SafeString:
    html = _ALIGN_STYLE.sub(r'class="align-\1"', _markdown.render(text))
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        allowed_classes={"th": ALIGN_CLASSES, "td": ALIGN_CLASSES},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
    )
    return mark_safe(clean)  # noqa: S308 - the output of the sanitizer above


def _top_level_blocks(text: str) -> list[str]:
    """The source of each top-level block (paragraph, list, table, fence…), in order."""
    lines = text.splitlines(keepends=True)
    starts = sorted(
        {0}
        | {
            token.map[0]
            for token in _markdown.parse(text)
            if token.level == 0 and token.map and token.nesting in (0, 1)
        }
    )
    ends = [*starts[1:], len(lines)]
    return ["".join(lines[a:b]) for a, b in zip(starts, ends, strict=True) if a < b]


def markdown_parts(text: str, max_bytes: int) -> list[SafeString]:
    """Sanitized HTML for `text` in pieces of at most `max_bytes`, cut between top-level
    blocks, for a reply too big to send in one websocket frame. A single block whose
    HTML is still too big is shown as plain text, in pieces."""
    plain_chars = max(1, (max_bytes - 64) // 6)  # escaping makes a character at most 6 bytes
    parts: list[SafeString] = []

    def emit(blocks: list[str]):
        html = render_markdown("".join(blocks))
        if len(html.encode()) <= max_bytes:
            parts.append(html)
        elif len(blocks) > 1:
            for block in blocks:
                emit([block])
        else:
            for start in range(0, len(blocks[0]), plain_chars):
                piece = blocks[0][start : start + plain_chars]
                parts.append(format_html('<pre class="plain">{}</pre>', piece))

    group: list[str] = []
    for block in _top_level_blocks(text):
        if group and sum(map(len, group)) + len(block) > plain_chars:
            emit(group)
            group = []
        group.append(block)
    if group:
        emit(group)
    return parts
