"""Versions and branches in Chromium: regenerate, step through versions with the
mouse and the keyboard, edit into a new branch, navigate back, reload."""

import pytest
from playwright.sync_api import expect

from tests.browser.test_chat_page import last_reply, send, sign_up

pytestmark = pytest.mark.browser


def done(page, text):
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    expect(last_reply(page)).to_contain_text(text)


def test_click_through_versions_edit_into_a_branch_and_navigate_back(page, chat_model, fake, shot):
    fake.configure(tokens=["Answer ", "one"])
    sign_up(page, "brancher")
    send(page, "First question")
    done(page, "Answer one")
    expect(page.locator(".versions")).to_have_count(0)  # one version: no controls

    fake.configure(tokens=["Answer ", "two"])
    last_reply(page).locator(".regen-btn").click()
    done(page, "Answer two")
    versions = last_reply(page).locator(".versions")
    expect(versions).to_contain_text("2 / 2")
    expect(versions.locator(".sr-only")).to_have_text("Version 2 of 2")
    shot(page, "versions")

    versions.get_by_role("button", name="Previous version").click()
    expect(last_reply(page)).to_contain_text("Answer one")
    expect(last_reply(page).locator(".versions")).to_contain_text("1 / 2")
    # The keyboard keeps its place: focus is back on the controls, Enter goes on.
    expect(last_reply(page).get_by_role("button", name="Next version")).to_be_focused()
    page.keyboard.press("Enter")
    expect(last_reply(page)).to_contain_text("Answer two")
    expect(last_reply(page).locator(".versions")).to_contain_text("2 / 2")

    fake.configure(tokens=["Edited ", "answer"])
    question = page.locator("article.msg.user").last
    question.locator(".edit-box summary").click()
    question.locator("textarea").fill("Second thoughts")
    question.get_by_role("button", name="Save as a new version").click()
    done(page, "Edited answer")
    question = page.locator("article.msg.user").last
    expect(question).to_contain_text("Second thoughts")
    expect(question.locator(".versions")).to_contain_text("2 / 2")
    expect(page.locator("article.msg")).to_have_count(2)  # only the branch shown

    question.get_by_role("button", name="Previous version").click()
    expect(page.locator("article.msg.user").last).to_contain_text("First question")
    done(page, "Answer two")  # the newest reply below the first question
    page.reload()
    expect(page.locator("article.msg.user").last).to_contain_text("First question")
    expect(last_reply(page)).to_contain_text("Answer two")
    expect(last_reply(page).locator(".versions")).to_contain_text("2 / 2")

    before = page.url
    last_reply(page).get_by_role("button", name="Branch into a new conversation from here").click()
    page.wait_for_url(lambda url: url != before and "/c/" in url)
    expect(page.locator("#conv-title")).to_contain_text("(branch)")
    expect(page.locator("article.msg")).to_have_count(2)
    expect(last_reply(page)).to_contain_text("Answer two")
    assert page.errors == []
