"""Live Markdown, thinking and scrolling, in Chromium, streamed from the loopback fake."""

import http.server
import re
import threading

import pytest
from playwright.sync_api import expect

from tests.browser.test_chat_page import last_reply, send, sign_up

pytestmark = pytest.mark.browser

REPLY = (
    "# Plan\n\n"
    "Some **bold** words first.\n\n"
    "- one\n- two\n- three\n\n"
    "| a | b |\n|---|---|\n| 1 | 2 |\n\n"
    "```python\ndef double(x):\n    return x * 2\n```\n\n"
    "A closing paragraph that takes a little while to arrive, word by word.\n"
)


def tokens_of(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


# Watches the reply's body from the page's side: when a highlighted code block
# first appears, whether it sits in the frozen part, and the text just before the
# final swap replaces the streaming article.
WATCH = """() => {
  window.__seen = {highlights: 0, inTail: 0, renderedWhileStreaming: false, beforeFinal: null};
  const thread = document.getElementById('thread');
  new MutationObserver(records => {
    for (const record of records) for (const node of record.addedNodes) {
      if (!(node instanceof Element)) continue;
      const streaming = node.closest('article[data-status=streaming]');
      if (!streaming) continue;
      const pres = node.matches('pre') ? [node] : [...node.querySelectorAll('pre')];
      for (const pre of pres) if (pre.querySelector('span.k')) {
        window.__seen.highlights += 1;
        if (pre.closest('.live-tail')) window.__seen.inTail += 1;
      }
      if (node.matches('h1, ul, table') || node.querySelector('h1, ul, table'))
        window.__seen.renderedWhileStreaming = true;
    }
  }).observe(thread, {childList: true, subtree: true});
  document.body.addEventListener('htmx:oobBeforeSwap', event => {
    const target = event.detail.target;
    if (target && target.matches && target.matches('article[data-status=streaming]'))
      window.__seen.beforeFinal = target.querySelector('.stream-text').innerText;
  });
}"""


def test_markdown_renders_while_streaming_and_the_final_swap_changes_no_text(
    page, chat_model, fake, shot
):
    fake.configure(tokens=tokens_of(REPLY), token_interval=0.03)
    sign_up(page)
    send(page, "Make a plan")
    page.evaluate(WATCH)
    reply = last_reply(page)
    expect(reply.locator(".stream-text h1")).to_have_text("Plan")  # rendered, not raw
    assert reply.get_attribute("data-status") == "streaming"
    expect(reply.locator(".stream-text table td").first).to_have_text("1")
    expect(reply.locator("#" + reply.get_attribute("id").replace("msg", "frozen") + " pre span.k"))
    shot(page, "live-markdown-streaming")
    expect(reply).to_have_attribute("data-status", "complete")
    seen = page.evaluate("window.__seen")
    assert seen["renderedWhileStreaming"]
    assert seen["highlights"] == 1  # highlighted once, when its fence closed ...
    assert seen["inTail"] == 0  # ... never while it was still open
    final = reply.locator(".markdown").inner_text()
    assert seen["beforeFinal"] is not None
    assert seen["beforeFinal"].split() == final.split()  # the final swap changes no text
    expect(reply.locator("pre .code-copy")).to_have_count(1)
    assert page.errors == []


def test_scrolling_up_stops_following_and_jump_to_latest_returns(page, chat_model, fake):
    paragraphs = [f"Paragraph {i} " + "with several words in it " * 6 + "\n\n" for i in range(60)]
    fake.configure(tokens=paragraphs, token_interval=0.08)
    sign_up(page)
    send(page, "Write a lot")
    thread = page.locator("#thread")
    jump = page.locator("#jump-latest")

    def gap():
        return thread.evaluate("t => t.scrollHeight - t.scrollTop - t.clientHeight")

    page.wait_for_function(
        "() => { const t = document.getElementById('thread'); "
        "return t.scrollHeight > t.clientHeight * 2; }"
    )
    assert gap() < 80  # following the stream
    expect(jump).to_be_hidden()
    page.mouse.move(640, 300)
    page.mouse.wheel(0, -600)  # the reader scrolls up
    expect(jump).to_be_visible()
    top = thread.evaluate("t => t.scrollTop")
    height = thread.evaluate("t => t.scrollHeight")
    page.wait_for_function(f"() => document.getElementById('thread').scrollHeight > {height}")
    assert abs(thread.evaluate("t => t.scrollTop") - top) < 5  # the page did not move
    jump.focus()
    page.keyboard.press("Enter")  # the control works from the keyboard
    expect(jump).to_be_hidden()
    assert gap() < 80
    height = thread.evaluate("t => t.scrollHeight")
    page.wait_for_function(f"() => document.getElementById('thread').scrollHeight > {height}")
    assert gap() < 80  # and following again
    assert page.locator("#live-status").get_attribute("role") == "status"


def test_thinking_streams_folded_then_says_how_long_and_never_returns_as_context(
    page, chat_model, fake
):
    thoughts = [f"step {i}, " for i in range(30)]
    fake.configure(reasoning=thoughts, tokens=tokens_of("The answer is 42."), token_interval=0.05)
    sign_up(page)
    send(page, "Think first")
    reply = last_reply(page)
    thinking = reply.locator("details.thinking")
    expect(thinking).to_be_visible()
    expect(thinking.locator("summary")).to_have_text("Thinking…")
    assert thinking.get_attribute("open") is None  # folded by default
    expect(thinking.locator("summary")).to_have_text(re.compile(r"Thought for \d+ s"))
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply.locator(".markdown")).to_have_text("The answer is 42.")
    summary = reply.locator("details.thinking summary")
    expect(summary).to_have_text(re.compile(r"Thought for \d+ s"))
    summary.click()
    expect(reply.locator(".think-text")).to_contain_text("step 0, step 1,")
    expect(reply.locator(".markdown")).not_to_contain_text("step 0")

    fake.configure(tokens=["Sure."])
    send(page, "And again")
    expect(page.locator("article.msg.assistant")).to_have_count(2)
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    sent = [r for r in fake.requests if r.body and r.body.get("stream")][-1].body["messages"]
    assert any(m["content"] == "The answer is 42." for m in sent)
    assert not any("step 0" in m["content"] for m in sent)  # the thinking stays home


class _Counter(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - the standard library's name
        _Counter.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_an_image_from_another_host_is_never_fetched(page, chat_model, fake):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Counter.hits.clear()
    other = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        fake.configure(
            tokens=[
                f"Look: ![the chat so far]({other}/leak.png?c=secret)\n\n",
                f'<img src="{other}/raw.png">\n\n',
                f"[a link]({other}/page)\n\n",
                "<svg onload=alert(1)></svg> and [x](javascript:alert(1))\n",
            ],
            token_interval=0.05,
        )
        sign_up(page)
        send(page, "Show me a picture")
        reply = last_reply(page)
        expect(reply).to_have_attribute("data-status", "complete")
        placeholder = reply.locator("a.image-link")
        expect(placeholder).to_contain_text("127.0.0.1, not loaded")
        assert reply.locator("img, svg").count() == 0
        expect(reply.locator(".link-host")).to_contain_text("127.0.0.1")
        link = reply.locator("a", has_text="a link")
        assert link.get_attribute("rel") == "noopener noreferrer nofollow"
        page.wait_for_load_state("networkidle")  # any image load would have gone out by now
        assert _Counter.hits == []
        assert page.errors == []
    finally:
        server.shutdown()
