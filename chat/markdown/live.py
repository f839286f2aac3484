"""Markdown for a reply that is still being written: frozen blocks and a growing tail.

Each update parses only the tail (the text after the blocks already frozen).
A top-level block is frozen, rendered once with code highlighting and never
sent again, as soon as nothing that can still arrive could change it:
- the next block has begun and its first line is complete (a half-typed line
  such as `#` or `***` could still turn into a paragraph's continuation);
- or it is a code fence whose closing line is complete;
- and no `$$` or `\\[` line above it, within the same run of non-blank lines,
  could still be closed into one maths block with it.

The tail is rendered on every update with its open constructs closed by the
parser itself (an open fence runs to the end, an open list item ends there), so
its HTML is always whole; it is not highlighted until it freezes. Two tails need
no parser at all, and their updates only say what was added: one line of plain
prose (added to its paragraph), and an open code fence whose new text cannot
close it (added to its code element).

The invariant, tested over many split points: the frozen HTML followed by
`finish()`'s render of the last tail equals render_markdown of the whole text.
"""

import re
from dataclasses import dataclass, field

from django.utils.safestring import SafeString, mark_safe

from chat.markdown import engine, sanitize
from chat.markdown.whole import markdown_parts, render_markdown

BLOCK_TYPES = {"fence", "code_block", "math_block", "math_bracket_block"}
# A single line that can only be a paragraph of plain text: it starts with a letter
# (no block marker) and holds nothing inline Markdown or maths would act on.
_NOT_PLAIN = (  # Markdown and maths punctuation, entities, tags, and any space but " " and tab
    r"\x00-\x08\x0a-\x1f\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    r"\\`*_\[\]<>&~$|!"
)
_PLAIN_LINE = re.compile(rf"[^\W\d_][^{_NOT_PLAIN}]*\Z")  # what follows, as one pattern
_FIRST_OK = re.compile(r"[^\W\d_]")
_SPOILS_PLAIN = re.compile(rf"[{_NOT_PLAIN}]")


def _is_plain_line(text: str) -> bool:
    """_PLAIN_LINE, checked in two quick scans rather than one slow match."""
    return bool(_FIRST_OK.match(text)) and _SPOILS_PLAIN.search(text) is None


PARAGRAPH = "<p>%s</p>\n"


@dataclass
class LiveUpdate:
    frozen: list[SafeString] = field(default_factory=list)  # newly frozen HTML, in order
    tail: SafeString | None = mark_safe("")  # what the tail shows now (None: see tail_added)
    # When the tail was and still is one plain paragraph: only the words added to it,
    # so that a page can append them instead of receiving the paragraph again.
    tail_added: str | None = None
    tail_into: str = "p"  # what tail_added goes into: the paragraph, or an open fence's "code"
    parsed: bool = False  # the Markdown parser ran (the tail is not plain prose)


class LiveMarkdown:
    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = max_bytes  # frozen HTML comes in pieces of at most this size
        self.text = ""
        self.frozen_at = 0  # offset in the text where the unfrozen tail starts
        self.frozen: list[SafeString] = []
        self.plain_shown: str | None = None  # the tail's text, while it is a plain paragraph
        self.code_shown: str | None = None  # the tail's text, while it is one open code fence
        self.fence_char = "`"

    def update(self, text: str) -> LiveUpdate:
        """The reply's whole text so far (it only ever grows)."""
        text = engine.normalise(text)
        if not text.startswith(self.text[: self.frozen_at]):
            self.__init__(self.max_bytes)  # the text was replaced, not extended
        self.text = text
        tail = text[self.frozen_at :]
        if self._code_appendable(tail):
            added, self.code_shown = tail[len(self.code_shown) :], tail
            return LiveUpdate(tail=None, tail_added=added, tail_into="code")
        self.code_shown = None
        known = self.plain_shown
        if known is not None and tail.startswith(known):
            plain = _SPOILS_PLAIN.search(tail, len(known)) is None  # only what is new
        else:
            plain = _is_plain_line(tail)
        if plain:
            # One line of plain prose, the usual tail: nothing to freeze, and neither
            # parser nor sanitizer needed (markdown-it walks text a character at a
            # time in Python). The line holds no `<`, `>` or `&`, so it is already
            # HTML text, written exactly as the two would write it (tested).
            line, before = tail.rstrip(" \t"), self.plain_shown
            self.plain_shown = line
            if before is not None and line.startswith(before):
                return LiveUpdate(tail=None, tail_added=line[len(before) :])
            return LiveUpdate(tail=mark_safe(PARAGRAPH % line))  # noqa: S308
        self.plain_shown = None
        tokens = engine.LIVE.parse(tail)
        cut_line, cut_token = _freeze_point(tail, tokens)
        update = LiveUpdate(parsed=True)
        if cut_line:
            cut = _offset_of_line(tail, cut_line)
            pieces = self._freeze(tail[:cut], tokens[:cut_token])
            self.frozen += pieces
            update.frozen += pieces
            # Blank lines after a frozen block only separate it from the next one.
            cut += len(tail) - cut - len(tail[cut:].lstrip("\n"))
            self.frozen_at += cut
            tokens = tokens[cut_token:]
        update.tail = sanitize.clean(engine.LIVE.renderer.render(tokens, engine.LIVE.options, {}))
        self._note_open_fence(text[self.frozen_at :], tokens)
        return update

    def _freeze(self, source: str, tokens) -> list[SafeString]:
        """Frozen blocks' HTML, highlighted, from the tokens the tail's parse already
        made (the same as parsing `source` again: tested); re-rendered from the source
        in frame-sized pieces only when too big for one frame."""
        html = sanitize.clean(engine.FULL.renderer.render(tokens, engine.FULL.options, {}))
        if self.max_bytes and len(html.encode()) > self.max_bytes:
            return markdown_parts(source, self.max_bytes)
        return [html]

    def _note_open_fence(self, tail: str, tokens):
        """Remember a tail that is one open code fence, so later text can be appended
        into its code element: markdown-it writes an open fence's content verbatim
        (escaped) after its first line, so appending the escaped text is the same."""
        if len(tokens) != 1 or tokens[0].type != "fence" or "\n" not in tail:
            return
        marker = tokens[0].markup
        last_line = tail[tail.rfind("\n") + 1 :]
        if tail.startswith(marker) and marker[0] not in last_line:
            self.code_shown, self.fence_char = tail, marker[0]

    def _code_appendable(self, tail: str) -> bool:
        """The tail is still the open fence shown, grown by text that cannot close it:
        no fence character in its last line as extended."""
        known = self.code_shown
        if known is None or not tail.startswith(known) or len(tail) == len(known):
            return False
        return self.fence_char not in tail[known.rfind("\n") + 1 :]

    def is_quick(self, text: str) -> bool:
        """Whether update(text) would take a shortcut with no parser (a cheap guess:
        a carriage return anywhere makes it say no)."""
        tail = text[self.frozen_at :]
        return _is_plain_line(tail) or self._code_appendable(tail)

    def tail_text(self) -> str:
        return self.text[self.frozen_at :]

    def finish(self) -> SafeString:
        """The tail's final HTML, highlighted like the rest."""
        return render_markdown(self.tail_text())

    def whole(self, text: str) -> SafeString:
        """The finished reply's HTML (`text` extends what was shown): the frozen blocks
        and the last tail, equal to render_markdown(text)."""
        self.update(text)
        return mark_safe("".join(self.frozen) + self.finish())  # noqa: S308 - sanitized parts

    def snapshot(self) -> tuple[list[SafeString], SafeString]:
        """Everything shown so far: the frozen blocks and the tail, for a page joining late
        (what later tail_added words are added to)."""
        tail = engine.LIVE.render(self.tail_text())
        return list(self.frozen), sanitize.clean(tail)


def _offset_of_line(text: str, line: int) -> int:
    at = 0
    for _ in range(line):
        at = text.index("\n", at) + 1
    return at


def _freeze_point(tail: str, tokens) -> tuple[int, int]:
    """(line, token index) where the unfrozen part may start; (0, 0) to freeze nothing."""
    complete_lines = tail.count("\n")
    lines = tail.split("\n")
    covered = set()
    for token in tokens:
        if token.type in BLOCK_TYPES and token.map:
            covered.update(range(*token.map))
    starts = [
        (token.map[0], index)
        for index, token in enumerate(tokens)
        if token.level == 0 and token.map and token.nesting in (0, 1)
    ]
    best = (0, 0)
    danger, scanned = False, 0

    def safe_before(line: int) -> bool:
        nonlocal danger, scanned
        for number in range(scanned, line):
            if not lines[number].strip():
                danger = False
            elif number not in covered and engine.MATHS_OPENER.match(lines[number]):
                danger = True
        scanned = max(scanned, line)
        return not danger

    for (_, _), (next_line, next_index) in zip(starts, starts[1:], strict=False):
        if next_line >= complete_lines or not safe_before(next_line):
            break
        best = (next_line, next_index)
    ended = _ended_by_blank_line(tokens, starts, lines, complete_lines)
    if ended and ended[0] > best[0] and safe_before(ended[0]):
        best = ended
    closed = _closed_fence_end(tokens, lines, complete_lines)
    if closed and closed[0] > best[0] and safe_before(closed[0]):
        best = closed
    return best


# Blocks that nothing after a blank line can change (a list can still become loose,
# an indented code block can go on; references are off).
ENDED_BY_BLANK = {"paragraph_open", "heading_open", "table_open", "hr"}


def _ended_by_blank_line(tokens, starts, lines, complete_lines) -> tuple[int, int] | None:
    """The last top-level block of those kinds followed by a complete blank line: it
    can freeze before the next block's first line is complete."""
    found = None
    for _, index in starts:
        token = tokens[index]
        end = token.map[1]
        if token.type in ENDED_BY_BLANK and end < complete_lines and not lines[end]:
            found = (end, _after_block(tokens, index))
    return found


def _after_block(tokens, index: int) -> int:
    """The index of the first token after the top-level block opened at `index`."""
    if tokens[index].nesting == 0:
        return index + 1
    for after in range(index + 1, len(tokens)):
        if tokens[after].level == 0 and tokens[after].nesting == -1:
            return after + 1
    return len(tokens)


def _closed_fence_end(tokens, lines, complete_lines) -> tuple[int, int] | None:
    """A top-level code fence that is the last block and closed on a complete line."""
    last = None
    for index, token in enumerate(tokens):
        if token.level == 0 and token.map and token.nesting in (0, 1):
            last = (index, token)
    if last is None or last[1].type != "fence":
        return None
    index, fence = last
    start, end = fence.map
    closing = lines[end - 1].strip() if end - 1 < len(lines) else ""
    marker = fence.markup
    is_closed = (
        end - 1 > start
        and end <= complete_lines
        and closing.startswith(marker)
        and set(closing) == {marker[0]}
    )
    return (end, index + 1) if is_closed else None
