"""What a newcomer trips on, in Chromium: refused sends, notices, stale buttons, a model
that went away, a lost connection, a failing provider, console errors and charts."""

import re

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from chat.models import Message, Quota, UsageRecord
from providers.models import Model, Provider
from tests.browser.test_chat_page import last_reply, send, sign_up
from tests.live_server import Daphne, free_port

pytestmark = pytest.mark.browser


def quota_for(username: str, **limits):
    Quota.objects.create(user=get_user_model().objects.get(username=username), **limits)


def test_a_refused_send_keeps_the_text_and_its_error_stays_until_dismissed(page, chat_model, fake):
    sign_up(page, "bob")  # not the first account: quotas apply to him
    send(page, "hello")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    send(page, "a second one goes through")
    expect(page.locator("article.msg.user")).to_have_count(2)
    expect(page.locator("#composer-input")).to_have_value("")  # shown in the thread: cleared
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    quota_for("bob", requests_per_minute=0)
    send(page, "please keep this text")
    error = page.locator("#notices .notice.error")
    expect(error).to_contain_text("requests per minute")
    expect(page.locator("#composer-input")).to_have_value("please keep this text")
    assert error.get_attribute("role") == "alert"
    page.locator("details.settings > summary").click()
    page.locator(".settings-form button[type=submit]").click()
    info = page.locator("#notices .notice.info")
    expect(info.locator(".notice-text")).to_have_text("Settings saved for this conversation.")
    assert info.get_attribute("role") == "status"  # announced politely, once
    expect(info).to_have_count(0, timeout=9_000)  # information goes on its own
    expect(error).to_be_visible()  # the error stays
    error.locator(".notice-close").click()
    expect(error).to_have_count(0)
    assert page.locator("#notices").get_attribute("aria-live") is None  # no double reading


def test_regenerate_acts_on_any_reply_and_continue_only_at_the_end_of_a_branch(
    page, chat_model, fake
):
    fake.configure(tokens=["w "] * 300, token_interval=0.02)
    sign_up(page)
    send(page, "one")
    expect(page.locator(".stream-text")).to_contain_text("w w")
    page.keyboard.press("Escape")
    expect(last_reply(page)).to_have_attribute("data-status", "stopped")
    fake.configure(tokens=["done"], token_interval=0.0)
    send(page, "two")
    expect(page.locator("article.msg.assistant")).to_have_count(2)
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    replies = page.locator("article.msg.assistant")
    expect(replies.first.locator(".regen-btn")).to_be_visible()
    expect(replies.first.locator(".continue-btn")).to_be_hidden()  # it has turns below it
    page.reload()
    expect(page.locator("article.msg.assistant .regen-btn:visible")).to_have_count(2)
    fake.configure(tokens=["again"])
    page.locator("article.msg.assistant").first.locator(".regen-btn").click()
    expect(page.locator("article.msg.assistant")).to_have_count(1)  # the new branch
    expect(last_reply(page)).to_contain_text("again")
    expect(last_reply(page).locator(".versions")).to_contain_text("2 / 2")


def test_a_model_that_became_unavailable_is_named_and_another_must_be_picked(
    page, chat_model, fake
):
    other = Model.objects.create(
        provider=chat_model.provider, remote_id="other", display_name="Other Model", enabled=True
    )
    sign_up(page)
    send(page, "hi")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    Model.objects.filter(pk=chat_model.pk).update(enabled=False)
    page.reload()
    gone = page.locator("#notices .notice.error")
    expect(gone).to_contain_text("Fake Model, is no longer available")
    expect(page.locator("#model-picker")).to_have_value("")
    page.fill("#composer-input", "which model now?")
    page.keyboard.press("Enter")  # the browser asks for a model first; nothing is sent
    page.wait_for_timeout(500)
    assert Message.objects.filter(content="which model now?").count() == 0
    expect(page.locator("#composer-input")).to_have_value("which model now?")
    page.select_option("#model-picker", str(other.pk))
    page.locator("#composer-input").press("Enter")
    expect(page.locator("article.msg.user").last).to_contain_text("which model now?")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    expect(last_reply(page).locator(".msg-meta")).to_contain_text("Other Model")


def test_a_lost_connection_shows_reconnecting_and_resyncs_when_the_server_is_back(
    page, chat_model, fake
):
    port = free_port()
    server = Daphne(port=port).start()
    base = server.url
    try:
        sign_up(page)  # on the shared server; the session works on any process
        page.goto(base + "/")
        fake.configure(tokens=["slow "] * 600, token_interval=0.03)
        send(page, "a long one")
        expect(page.locator(".stream-text")).to_contain_text("slow slow")
        banner = page.locator("#connection")
        expect(banner).to_be_hidden()
        server.stop()  # a restart: the reply is saved as interrupted
        expect(banner).to_have_text("Reconnecting…")
        assert page.locator("body").get_attribute("data-live") == "reconnecting"
        server = Daphne(port=port).start()
        expect(banner).to_be_hidden(timeout=20_000)
        # The page asked what it missed: the reply is no longer shown as streaming.
        expect(last_reply(page)).to_have_attribute("data-status", "interrupted")
        expect(last_reply(page).locator(".continue-btn")).to_be_visible()
    finally:
        server.stop()


def test_an_ended_session_says_so_instead_of_reconnecting(page, chat_model, fake):
    sign_up(page)
    send(page, "hi")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    from django.contrib.sessions.models import Session

    Session.objects.all().delete()
    banner = page.locator("#connection")
    expect(banner).to_contain_text("Your session has ended")
    expect(banner.locator("a")).to_have_attribute(
        "href", re.compile(r"^/accounts/login/\?next=%2Fc%2F")
    )
    expect(page.locator("#notices")).to_contain_text("You were signed out")


def test_the_admin_sees_the_status_url_and_answer_of_a_failing_provider(page, fake):
    sign_up(page)  # the first account is the admin
    broken = Provider.objects.create(
        name="Broken", wire_format="openai", base_url=fake.url + "/v1", api_key_env="",
        requires_key=True, enabled=True,
    )  # fmt: skip
    broken.set_api_key("sk-very-secret-123")
    broken.save()
    refused = Provider.objects.create(
        name="Refused", wire_format="openai", base_url=f"http://127.0.0.1:{free_port()}/v1",
        requires_key=False, enabled=True,
    )  # fmt: skip
    fake.configure(status=401, error="auth")
    page.goto("/admin/providers/provider/")
    page.locator(f"input[name=_selected_action][value='{broken.pk}']").check()
    page.locator(f"input[name=_selected_action][value='{refused.pk}']").check()
    page.select_option("select[name=action]", "test_connection")
    page.locator("button[name=index]").click()
    errors = page.locator("ul.messagelist li.error")
    expect(errors).to_have_count(2)
    first = errors.filter(has_text="Broken")
    expect(first).to_contain_text("HTTP 401")
    expect(first).to_contain_text(f"{fake.url}/v1/models")
    expect(first).to_contain_text("Incorrect API key")
    assert "sk-very-secret-123" not in page.content()  # the echoed key is taken out
    expect(errors.filter(has_text="Refused")).to_contain_text("connection refused")
    assert page.console_errors == []


WALKTHROUGH_REPLY = [
    "Here are the **prompt formats** for `/completion` backends:\n\n",
    "| Family | Format | Context |\n|:--|:-:|--:|\n",
    "| Qwen, SmolLM | ChatML | 32k |\n| Llama 3 | Llama 3 | 8k |\n\n",
    'And a helper:\n\n```python\ndef greet(name):\n    return f"Hello, {name}!"\n```\n',
]


def test_a_whole_session_logs_no_console_error_or_csp_violation(page, chat_model, fake, shot):
    sign_up(page)
    fake.configure(tokens=WALKTHROUGH_REPLY, token_interval=0.05)
    send(page, "Which prompt format should I pick?")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    expect(last_reply(page).locator("td.align-right").first).to_have_text("32k")
    expect(last_reply(page).locator("pre .code-copy")).to_have_count(1)
    shot(page, "walkthrough")
    fake.configure(tokens=["slow "] * 400, token_interval=0.03)
    send(page, "now something long")
    expect(page.locator(".stream-text")).to_contain_text("slow slow")
    page.keyboard.press("Escape")
    expect(last_reply(page)).to_have_attribute("data-status", "stopped")
    fake.configure(tokens=["again"])
    last_reply(page).locator(".regen-btn").click()
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    page.locator("details.settings > summary").click()
    page.fill("input[name=max_tokens]", "200")
    page.locator(".settings-form button[type=submit]").click()
    expect(page.locator("#notices .notice.info")).to_be_visible()
    page.locator("details.menu:not(.settings) > summary").click()  # Export
    expect(page.locator("details.settings")).not_to_have_attribute("open", "")
    page.goto("/admin/usage/")
    expect(page.locator("svg.usage-chart").first).to_be_visible()
    page.locator("svg.usage-chart g.bar").last.focus()
    shot(page, "usage-dashboard")
    page.goto("/usage/")
    expect(page.locator("svg.usage-chart").first).to_be_visible()
    shot(page, "my-usage")
    page.goto("/admin/")
    assert page.console_errors == [], page.console_errors
    assert page.errors == []


def test_charts_have_axes_values_on_focus_a_table_and_no_fake_peak(page, chat_model, fake):
    sign_up(page)
    page.goto("/admin/usage/")
    expect(page.locator(".chart-empty")).to_have_count(2)  # nothing used yet: said plainly
    assert "peak" not in page.content()
    user = get_user_model().objects.get(username="ada")
    UsageRecord.objects.create(
        user=user, model_name="m", provider_name="p", prompt_tokens=1200, completion_tokens=300,
        cost="0.42", cost_source="prices", status="complete",
    )  # fmt: skip
    page.goto("/admin/usage/")
    tokens = page.locator("svg.usage-chart").first
    expect(tokens.locator(".axis text")).to_contain_text(["0", "1,000", "2,000"])
    bar = tokens.locator("g.bar").last
    expect(bar.locator("title")).to_contain_text("1,500")
    value = bar.locator(".bar-value")
    assert value.evaluate("e => getComputedStyle(e).opacity") == "0"
    bar.focus()
    expect(value).to_have_css("opacity", "1")  # shown on keyboard focus
    page.locator("details.chart-data").first.locator("summary").click()
    expect(page.locator("details.chart-data table").first).to_contain_text("1,500")
    expect(page.locator("figure.chart figcaption").last).to_contain_text("USD")
    page.goto("/usage/")
    expect(page.locator("svg.usage-chart")).to_have_count(2)
    last_cost = page.locator("svg.usage-chart").last.locator("g.bar").last
    expect(last_cost.locator("title")).to_contain_text("$0.4200")
