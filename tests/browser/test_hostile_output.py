"""Model output is hostile input: nothing it contains may run, and the layout must hold."""

import pytest
from playwright.sync_api import expect

from tests.browser.test_chat_page import last_reply, send, sign_up

pytestmark = pytest.mark.browser

HOSTILE = [
    "<script>window.__pwned = 1</script>\n\n",
    '<img src="x" onerror="window.__pwned = 2">\n\n',
    "[click me](javascript:window.__pwned=3)\n\n",
    '<a href="javascript:window.__pwned=4">raw link</a>\n\n',
    '<iframe src="http://127.0.0.1:9/"></iframe>\n\n',
    '<div style="position:fixed;inset:0;background:red">overlay</div>\n\n',
    "[ok](https://example.com)\n\n",
    "```html\n<script>window.__pwned = 5</script>\n```\n\n",
    "A" * 6000,
    '\n\n| a | b |\n|---|---|\n| <b onmouseover="window.__pwned=6">x</b> | y |\n',
]


def test_hostile_markdown_does_not_execute_and_the_layout_holds(page, chat_model, fake, shot):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    fake.configure(tokens=HOSTILE, token_interval=0.02)
    sign_up(page)
    send(page, "Say something nasty")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    body = last_reply(page).locator(".markdown")

    assert page.evaluate("window.__pwned") is None
    assert body.locator("script, iframe, img[onerror], [onmouseover], [style]").count() == 0
    hrefs = body.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert hrefs == ["https://example.com"]
    link = body.locator("a")
    assert link.get_attribute("rel") == "noopener noreferrer nofollow"
    assert link.get_attribute("target") == "_blank"
    expect(body).to_contain_text("<script>window.__pwned = 1</script>")  # shown as text
    expect(body).to_contain_text("[click me](javascript:window.__pwned=3)")
    body.get_by_text("raw link", exact=False).click()  # inert text, not a link
    page.locator(".markdown pre").first.hover()

    width = page.viewport_size["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    box = last_reply(page).bounding_box()
    assert box["x"] + box["width"] <= width
    assert page.evaluate("window.__pwned") is None
    assert dialogs == [] and page.errors == []
    shot(page, "hostile-markdown")


def test_the_chat_page_first_load_is_under_150_kb(page, chat_model, fake):
    sign_up(page)
    send(page, "hello")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    page.context.new_cdp_session(page).send("Network.setCacheDisabled", {"cacheDisabled": True})
    page.reload()
    page.wait_for_load_state("networkidle")
    # Decoded (uncompressed) bytes of the document and every script and stylesheet.
    sizes = dict(
        page.evaluate(
            """() => [performance.getEntriesByType('navigation')[0],
                       ...performance.getEntriesByType('resource')]
                .filter(e => e.entryType === 'navigation'
                        || ['script', 'link'].includes(e.initiatorType))
                .map(e => [e.name, e.decodedBodySize])"""
        )
    )
    total = sum(sizes.values())
    print(f"chat page first load: {total / 1000:.1f} kB in {len(sizes)} files (uncompressed)")
    assert any(url.endswith(".js") for url in sizes) and any(url.endswith(".css") for url in sizes)
    assert total < 150_000, sizes
