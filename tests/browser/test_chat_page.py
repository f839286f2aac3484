"""A person in Chromium: sign up, chat, stop, regenerate, refresh, edit, search, themes."""

import re

import pytest
from playwright.sync_api import expect

from chat.models import Message

pytestmark = pytest.mark.browser
PASSWORD = "correct-horse-battery-7"


def sign_up(page, username="ada"):
    page.goto("/accounts/signup/")
    page.fill("#id_username", username)
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("#composer-input")).to_be_visible()


def send(page, text):
    page.locator("html[data-js=ready]").wait_for(state="attached")  # no eval: the CSP forbids it
    new_chat = "/c/" not in page.url
    page.fill("#composer-input", text)
    page.keyboard.press("Enter")
    if new_chat:
        page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))


def last_reply(page):
    return page.locator("article.msg.assistant").last


def test_sign_up_pick_a_model_send_and_watch_tokens_arrive(page, chat_model, fake, shot):
    second = chat_model.__class__.objects.create(
        provider=chat_model.provider, remote_id="other", display_name="Other Model", enabled=True
    )
    fake.configure(tokens=[f"word{i} " for i in range(60)] + ["\n\n**done**"], token_interval=0.03)
    sign_up(page)
    page.select_option("#model-picker", str(second.pk))
    send(page, "Tell me a story")
    stream = page.locator(".stream-text")
    expect(stream).to_contain_text("word3")
    partial = stream.inner_text()
    shot(page, "streaming")
    expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=15_000)
    final = last_reply(page).inner_text()
    assert len(final) > len(partial)
    expect(last_reply(page).locator(".markdown strong")).to_have_text("done")
    expect(last_reply(page).locator(".msg-meta")).to_contain_text("Other Model")
    expect(last_reply(page).locator(".msg-meta")).to_contain_text("tok/s")
    assert fake.requests[0].body["model"] == "other"
    shot(page, "complete")
    assert page.errors == []


def test_stop_and_regenerate(page, chat_model, fake, shot):
    fake.configure(tokens=["slow "] * 400, token_interval=0.03)
    sign_up(page)
    send(page, "Go on and on")
    expect(page.locator(".stream-text")).to_contain_text("slow slow")
    page.keyboard.press("Escape")  # Esc stops
    expect(last_reply(page)).to_have_attribute("data-status", "stopped")
    expect(last_reply(page)).to_contain_text("Stopped.")
    shot(page, "stopped")
    fake.configure(tokens=["A ", "fresh ", "answer"])
    last_reply(page).locator(".regen-btn").click()
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    expect(last_reply(page)).to_contain_text("A fresh answer")
    assert page.locator("article.msg.assistant").count() == 1


def test_refresh_mid_reply_and_the_reply_continues(page, chat_model, fake):
    tokens = [f"t{i} " for i in range(120)]
    fake.configure(tokens=tokens, token_interval=0.03)
    sign_up(page)
    send(page, "Count")
    expect(page.locator(".stream-text")).to_contain_text("t10 ")
    page.reload()
    expect(page.locator(".stream-text")).to_contain_text("t60 ")
    expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=15_000)
    assert last_reply(page).locator(".msg-body").inner_text().strip() == "".join(tokens).strip()


def test_edit_and_resend(page, chat_model, fake):
    sign_up(page)
    send(page, "First try")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    page.locator("article.msg.user summary").first.click()
    page.fill("article.msg.user textarea", "Second try")
    fake.configure(tokens=["Edited ", "answer"])
    page.locator("article.msg.user .edit-form button").click()
    expect(page.locator("article.msg.user .user-text")).to_have_text("Second try")
    expect(last_reply(page)).to_contain_text("Edited answer")
    assert page.locator("article.msg").count() == 2


def test_search_rename_and_delete(page, chat_model, fake, shot):
    sign_up(page)
    for topic in ("apples and pears", "bicycles"):
        page.goto("/")
        send(page, f"Tell me about {topic}")
        expect(last_reply(page)).to_have_attribute("data-status", "complete")
    page.keyboard.press("Control+k")  # focuses search
    page.keyboard.type("pears")
    items = page.locator("#conversation-list .conv-item")
    expect(items).to_have_count(1)
    shot(page, "search")
    item = items.first
    item.locator("summary").click()
    item.locator("input[name=title]").fill("Fruit talk")
    item.locator(".rename-form button").click()
    expect(page.locator("#conversation-list")).to_contain_text("Fruit talk")
    page.fill("#search", "")
    page.locator("#search").dispatch_event("search")
    expect(page.locator("#conversation-list .conv-item")).to_have_count(2)
    target = page.locator("#conversation-list .conv-item", has_text="Fruit talk")
    target.locator("summary").click()
    page.once("dialog", lambda dialog: dialog.accept())
    target.locator("button.danger").click()
    expect(page.locator("#conversation-list .conv-item")).to_have_count(1)
    assert not Message.objects.filter(conversation__title="Fruit talk").exists()


def test_dark_mode_and_a_phone_sized_viewport(
    browser, app_server, transactional_db, chat_model, fake, shot
):
    context = browser.new_context(
        base_url=app_server.url, viewport={"width": 375, "height": 740}, color_scheme="dark"
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    sign_up(page)
    send(page, "Hello from a phone")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(21, 23, 28)"  # the dark theme, from the system setting
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    expect(page.locator("#sidebar")).not_to_be_in_viewport()
    shot(page, "phone-dark")
    page.locator(".drawer-open").click()
    expect(page.locator("#sidebar")).to_be_in_viewport()
    shot(page, "phone-drawer")
    page.keyboard.press("Escape")
    expect(page.locator("#sidebar")).not_to_be_in_viewport()
    context.close()


def test_the_theme_toggle_is_remembered(page, chat_model, shot):
    sign_up(page)
    page.locator("#theme-toggle").click()
    theme = page.evaluate("document.documentElement.dataset.theme")
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == theme
    shot(page, f"theme-{theme}")
