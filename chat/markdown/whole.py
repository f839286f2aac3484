"""A whole reply to safe HTML, at once or in pieces that fit a websocket frame."""

from django.utils.html import format_html
from django.utils.safestring import SafeString

from chat.markdown import engine, sanitize


def render_markdown(text: str) -> SafeString:
    return sanitize.clean(engine.FULL.render(engine.normalise(text)))


def _top_level_blocks(text: str) -> list[str]:
    """The source of each top-level block (paragraph, list, table, fence…), in order."""
    text = engine.normalise(text)
    lines = text.split("\n")
    lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    starts = sorted(
        {0}
        | {
            token.map[0]
            for token in engine.FULL.parse(text)
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
