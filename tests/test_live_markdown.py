"""Streaming Markdown: frozen blocks plus the last tail render exactly like the whole.

A reply is fed to LiveMarkdown at many split points, as a stream would deliver it;
whatever the splits, the frozen HTML followed by the final tail must equal the
render of the whole text, and a frozen block is never sent twice.
"""

import html
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat.markdown import engine, sanitize
from chat.markdown.live import _PLAIN_LINE, LiveMarkdown
from chat.markdown.whole import render_markdown

CORPUS = [
    "# Heading\n",
    "Setext heading\n===\n",
    "Another\n---\n",
    "A paragraph with **bold**, *em*, `code` and a [half link](https://exa",
    "A [link](https://example.com/a?b=c) and ![img](https://evil.example/x.png?q=1)\n",
    "- one\n- two\n  - nested\n    - deeper\n- three\n",
    "1. first\n2. second\n\n   continued in the item\n3. third\n",
    "3. starts at three\n4. four\n",
    "> a quote\nlazy continuation\n> > nested quote\n",
    "| a | b |\n|:--|--:|\n| 1 | 2 |\n| 3 | 4 |\n",
    "```python\ndef f(x):\n    return x * 2\n```\n",
    "~~~\nplain fence\n~~~\n",
    "- item with a fence:\n\n  ```js\n  let a = 1;\n  ```\n- after\n",
    "    indented code\n\n    more indented\n",
    "<div>raw html</div>\n<script>alert(1)</script>\n",
    "foo\n***\nbar\n",
    "foo\n#\n",
    "text\n- list interrupting\n",
    "Prices like $5 and $10 stay text.\n",
    "Inline $x^2$ and \\(a+b\\) maths, and $$\\frac{1}{2}$$ too.\n",
    "$$\nE = mc^2\n$$\n",
    "\\[\n\\sum_i i\n\\]\n",
    "\\[\n# not a heading yet\n\\]\n",
    "$$\nunclosed maths\n",
    "Hard  \nbreak and\\\nbackslash break\n",
    "[ref]: https://example.com\n\nUses [ref].\n",
    "Trailing text without newline",
    "***\n",
    "Emoji 🙂 and ünïcödé, tabs\tand CR\r\nlines\r\n",
    "```\nunclosed fence\ncontinues",
]
SEPARATORS = ["", "\n", "\n\n"]


def feed(text: str, cuts: list[int]) -> tuple[str, LiveMarkdown, list[str]]:
    live = LiveMarkdown()
    frozen: list[str] = []
    for cut in [*sorted(set(cuts)), len(text)]:
        frozen += live.update(text[:cut]).frozen
    return "".join(frozen) + live.finish(), live, frozen


@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_every_split_point_of_each_sample(index):
    text = CORPUS[index] + "\n\nA closing paragraph.\n"
    whole = render_markdown(text)
    for cut in range(len(text) + 1):
        assert feed(text, [cut])[0] == whole, f"split at {cut}: {text[:cut]!r}"


def test_character_by_character_over_the_whole_corpus():
    text = "\n\n".join(CORPUS)
    html, live, frozen = feed(text, list(range(len(text))))
    assert html == render_markdown(text)
    assert len(frozen) >= 10  # blocks were frozen along the way, not all at the end


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(
        st.tuples(st.sampled_from(CORPUS), st.sampled_from(SEPARATORS)), min_size=1, max_size=8
    ),
    data=st.data(),
)
def test_frozen_plus_tail_equals_whole(pieces, data):
    text = "".join(piece + sep for piece, sep in pieces)
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=40))
    html, live, _ = feed(text, cuts)
    assert html == render_markdown(text)
    assert live.whole(text) == html  # what the finished message is sent as


def test_the_finished_message_is_sent_as_the_whole_render_with_or_without_a_last_update():
    text = "\n\n".join(CORPUS)
    live = LiveMarkdown(16_000)
    for cut in range(0, len(text), 7):
        live.update(text[:cut])
    assert live.whole(text) == render_markdown(text)
    assert LiveMarkdown().whole(text) == render_markdown(text)  # a job that never flushed


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab#*-_`$\\[]()|>\n 1.~=<", max_size=80), st.data())
def test_invariant_on_arbitrary_markdownish_text(text, data):
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=20))
    assert feed(text, cuts)[0] == render_markdown(text)


def test_a_closed_fence_freezes_and_is_highlighted_before_the_reply_ends():
    live = LiveMarkdown()
    open_fence = live.update("Intro.\n\n```python\ndef f():\n    return 1\n")
    assert '<span class="k">' not in open_fence.tail  # an open fence is plain monospace
    assert "def f():" in open_fence.tail
    closed = live.update("Intro.\n\n```python\ndef f():\n    return 1\n```\n")
    assert any('<span class="k">def</span>' in html for html in closed.frozen)
    assert closed.tail == ""
    later = live.update("Intro.\n\n```python\ndef f():\n    return 1\n```\n\nMore text")
    assert later.frozen == []  # the highlighted block is not sent again


def test_the_work_per_update_follows_the_tail_not_the_whole_reply():
    paragraphs = [f"Paragraph {i} with some words in it.\n\n" for i in range(300)]
    live, text, longest_tail = LiveMarkdown(), "", 0
    for paragraph in paragraphs:
        for word in paragraph.split(" "):
            text += word + " "
            live.update(text)
            longest_tail = max(longest_tail, len(live.tail_text()))
    assert len(text) > 10_000
    assert longest_tail < 120  # about two paragraphs, however long the reply


def test_hostile_output_is_inert():
    html = render_markdown(
        "<script>alert(1)</script>\n\n<svg onload=alert(1)>\n\n[x](javascript:alert(1))\n\n"
        "![a](https://evil.example/p.png?c=secret) <img src=https://evil.example/i.png>"
    )
    assert "<script" not in html and "<svg" not in html and "<img" not in html
    assert 'href="javascript' not in html
    assert "evil.example, not loaded" in html


def test_links_name_their_host_and_carry_no_referrer():
    html = render_markdown("[docs](https://docs.example.org/a)")
    assert '<span class="link-host">(docs.example.org)</span>' in html
    assert 'rel="noopener noreferrer nofollow"' in html


def test_maths_is_mathml_and_prices_stay_text():
    html = render_markdown("Area $\\pi r^2$, or \\[ E = mc^2 \\]\n\nIt costs $5 and $10.")
    assert "<math" in html and "<msup>" in html
    assert "$5 and $10" in html


@settings(max_examples=1000, deadline=None)
@given(st.from_regex(_PLAIN_LINE, fullmatch=True))
def test_the_plain_line_shortcut_renders_exactly_like_the_parser(text):
    update = LiveMarkdown().update(text)
    assert update.frozen == []
    assert update.tail == sanitize.clean(engine.LIVE.render(engine.normalise(text)))


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60))
def test_any_text_shows_as_the_parser_renders_it(text):
    update = LiveMarkdown().update(text)
    whole = sanitize.clean(engine.LIVE.render(engine.normalise(text)))
    if not update.frozen:
        assert update.tail == whole
    assert _visible("".join(update.frozen) + update.tail) == _visible(whole)


def _visible(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.mark.parametrize(
    "text", ["Plain words", "Tabs\tand trailing  \t", 'Quotes "x" ok', "Ünï 🙂 ok"]
)
def test_the_plain_line_shortcut_is_taken_for_prose(text):
    assert _PLAIN_LINE.match(text)
    assert LiveMarkdown().update(text).tail == render_markdown(text)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20))
def test_the_quick_plain_check_agrees_with_the_pattern(text):
    from chat.markdown.live import _is_plain_line

    assert _is_plain_line(text) == bool(_PLAIN_LINE.match(text))


def test_a_growing_plain_paragraph_sends_only_the_words_added():
    live = LiveMarkdown()
    assert live.update("Hello").tail_added is None  # the first time, the whole paragraph
    grown = live.update("Hello there, ")
    assert grown.tail_added == " there,"  # trailing spaces wait until a word follows
    assert live.update("Hello there, world").tail_added == " world"
    assert live.update("Hello there, world **bold").tail_added is None  # markup: re-render
    assert live.update("Hello there, world **bold** and").tail_added is None


def _page_tail(shown: str, update) -> str:
    """The tail as a page holds it after an update: replaced, or added to (escaped, as
    the frame carries it) inside its paragraph or code element."""
    if update.tail is not None:
        return str(update.tail)
    end = shown.index(f"</{update.tail_into}>")
    return shown[:end] + html.escape(update.tail_added, quote=False) + shown[end:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(
        st.tuples(st.sampled_from(CORPUS), st.sampled_from(SEPARATORS)), min_size=1, max_size=6
    ),
    data=st.data(),
)
def test_what_the_page_shows_after_every_update_is_the_parsers_tail(pieces, data):
    text = "".join(piece + sep for piece, sep in pieces) + "```py\nx = '<a>' & \"b\"\n~~ `` y\n"
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(text)), max_size=40))))
    live, shown = LiveMarkdown(), ""
    for cut in [*cuts, len(text)]:
        shown = _page_tail(shown, live.update(text[:cut]))
        expected = sanitize.clean(engine.LIVE.render(live.tail_text()))
        assert _visible(html.unescape(shown)) == _visible(html.unescape(expected)), text[:cut]


def test_an_open_code_fence_takes_its_new_text_without_the_parser():
    live = LiveMarkdown()
    first = live.update("Intro.\n\n```python\nprint(1)\n")
    assert first.parsed and first.tail.startswith('<pre><code class="language-python">')
    grown = live.update("Intro.\n\n```python\nprint(1)\nif a < b and c:")
    assert (grown.parsed, grown.tail, grown.tail_into) == (False, None, "code")
    assert grown.tail_added == "if a < b and c:"  # escaped when the frame is built
    assert live.is_quick("Intro.\n\n```python\nprint(1)\nif a < b and c:\n    go()")
    closing = live.update("Intro.\n\n```python\nprint(1)\nif a < b and c:\n``")
    assert closing.parsed and closing.tail is not None  # a fence character: parse again
    closed = live.update("Intro.\n\n```python\nprint(1)\nif a < b and c:\n```\n")
    assert closed.frozen and '<span class="nb">print</span>' in "".join(closed.frozen)
