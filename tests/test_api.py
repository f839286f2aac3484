"""The OpenAI-compatible API, driven by the official `openai` client against the real
app under daphne and the loopback fake, on every wire format: the same access,
quotas and ledger as the web chat, and one way in."""

import threading
import time
from datetime import timedelta

import httpx
import openai
import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.utils import timezone

from chat.api import admission, keys
from chat.models import ApiKey, Quota, UsageRecord
from providers.models import Model, Provider
from tests.chat_support import logged_in
from tests.fake_backend import DEFAULT_TOKENS

pytestmark = pytest.mark.django_db(transaction=True)
ANSWER = "".join(DEFAULT_TOKENS)
BASES = {"openai": "/v1", "llamacpp": "", "workers_ai": "/client/v4"}


@pytest.fixture
def api_group(db):
    group = Group.objects.create(name="api users")
    group.permissions.add(Permission.objects.get(codename="use_api"))
    return group


@pytest.fixture
def user(make_user, api_group):
    person = make_user("scripter")
    person.groups.add(api_group)
    return person


def model_on(fake, wire: str, name: str = "fake-model") -> Model:
    provider, _ = Provider.objects.get_or_create(
        name=f"Fake {wire}",
        defaults=dict(
            wire_format=wire, base_url=fake.url + BASES[wire], requires_key=False,
            account_id="acct-1", enabled=True,
        ),
    )  # fmt: skip
    return Model.objects.create(
        provider=provider, remote_id=name, display_name=f"{wire} {name}", enabled=True,
        prompt_format="chatml", context_window=8192,
    )  # fmt: skip


def api(server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def api_id(model: Model) -> str:
    return admission.api_id(model)


def ledger(key_row=None) -> list[UsageRecord]:
    return list(UsageRecord.objects.filter(api_key=key_row).order_by("id"))


@pytest.mark.parametrize("wire", ["openai", "llamacpp", "workers_ai"])
def test_the_openai_client_completes_and_streams_on_every_wire_format(app_server, fake, user, wire):
    model = model_on(fake, wire)
    row, key = keys.create(user, "script")
    client = api(app_server, key)
    assert [m.id for m in client.models.list()] == [api_id(model)]
    asked = [{"role": "user", "content": "Say hello"}]

    whole = client.chat.completions.create(model=api_id(model), messages=asked)
    assert whole.choices[0].message.content == ANSWER
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage.completion_tokens == len(DEFAULT_TOKENS)
    assert whole.model == api_id(model)

    stream = client.chat.completions.create(
        model=api_id(model), messages=asked, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(DEFAULT_TOKENS)

    rows = ledger(row)
    assert [(r.purpose, r.status, r.completion_tokens) for r in rows] == [
        ("api", "complete", len(DEFAULT_TOKENS))
    ] * 2  # one row per request, marked API, with the key
    assert {r.user_id for r in rows} == {user.pk} and not rows[0].message_id
    assert rows[0].prompt_tokens == whole.usage.prompt_tokens
    body = fake.requests[-1].body
    assert "Say hello" in (body.get("prompt") or str(body.get("messages")))  # translated
    assert ApiKey.objects.get(pk=row.pk).last_used is not None


def test_reasoning_goes_out_as_reasoning_content(app_server, fake, user):
    model = model_on(fake, "openai")
    fake.configure(reasoning=["Let ", "me ", "think."], tokens=["Hi."])
    _, key = keys.create(user, "thinker")
    client = api(app_server, key)
    asked = [{"role": "user", "content": "Hi"}]
    whole = client.chat.completions.create(model=api_id(model), messages=asked)
    assert whole.choices[0].message.content == "Hi."
    assert whole.choices[0].message.reasoning_content == "Let me think."
    chunks = list(client.chat.completions.create(model=api_id(model), messages=asked, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == "Let me think."
    assert "".join(d.content or "" for d in deltas) == "Hi."


def test_keys_that_do_not_work_get_401_and_a_group_without_the_api_403(
    app_server, fake, user, make_user
):
    model = model_on(fake, "openai")
    asked = dict(model=api_id(model), messages=[{"role": "user", "content": "Hi"}])
    revoked, revoked_key = keys.create(user, "old")
    keys.revoke(user, revoked)
    expired, expired_key = keys.create(user, "expired")
    ApiKey.objects.filter(pk=expired.pk).update(expires=timezone.now() - timedelta(seconds=1))
    for key in (revoked_key, expired_key, "csk-made-up", ""):
        with pytest.raises(openai.AuthenticationError):
            api(app_server, key or "x").chat.completions.create(**asked)

    outsider = make_user("outsider")  # in no group with the API permission
    _, outsider_key = keys.create(outsider, "sneaky")
    with pytest.raises(openai.PermissionDeniedError):
        api(app_server, outsider_key).chat.completions.create(**asked)
    with pytest.raises(openai.PermissionDeniedError):
        api(app_server, outsider_key).models.list()

    _, live_key = keys.create(user, "live")
    api(app_server, live_key).chat.completions.create(**asked)
    user.is_active = False
    user.save()
    with pytest.raises(openai.AuthenticationError):
        api(app_server, live_key).chat.completions.create(**asked)
    assert UsageRecord.objects.filter(purpose="api").count() == 1  # refusals spend nothing


def test_a_key_restricted_to_model_a_neither_lists_nor_uses_model_b(app_server, fake, user):
    first, second = model_on(fake, "openai", "model-a"), model_on(fake, "openai", "model-b")
    _, key = keys.create(user, "only A", allowed_models=[first])
    client = api(app_server, key)
    assert [m.id for m in client.models.list()] == [api_id(first)]
    client.chat.completions.create(model=api_id(first), messages=[{"role": "user", "content": "a"}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model=api_id(second), messages=[{"role": "user", "content": "b"}]
        )
    second.allowed_groups.add(Group.objects.create(name="elsewhere"))  # by group, too
    _, open_key = keys.create(user, "all mine")
    assert [m.id for m in api(app_server, open_key).models.list()] == [api_id(first)]


def test_only_a_bearer_key_opens_the_api_and_a_key_does_not_open_the_website(
    app_server, fake, user
):
    model_on(fake, "openai")
    _, key = keys.create(user, "k")
    browser = logged_in(user)
    cookie = {"sessionid": browser.cookies["sessionid"].value}
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=app_server.url, cookies=cookie) as signed_in:
        assert signed_in.get("/").status_code == 200  # the cookie opens the website
        assert signed_in.get("/v1/models").status_code == 401  # but not the API
        assert signed_in.post("/v1/chat/completions", json=body).status_code == 401
    with httpx.Client(base_url=app_server.url) as http:
        ignored = http.get("/v1/models", headers={"x-api-key": key})
        assert ignored.status_code == 401 and ignored.json()["error"]["code"] == "invalid_api_key"
        # No CSRF token needed with the key; a key does not sign in to the site.
        assert http.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).is_success
        site = http.get("/", headers={"Authorization": f"Bearer {key}"})
        assert site.status_code == 302 and "/accounts/login/" in site.headers["location"]


def test_bad_requests_get_openai_shaped_400s(app_server, fake, user):
    model = model_on(fake, "openai")
    _, key = keys.create(user, "k")
    headers = {"Authorization": f"Bearer {key}"}
    said = [{"role": "user", "content": "x"}]
    cases = [
        ({"messages": said, "tools": [{"type": "function"}]}, "Tools"),
        ({"messages": said, "temperature": 9}, "temperature must be between"),
        ({"messages": said, "n": 3}, "n = 1"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "role"),
        ({"messages": []}, "messages must be a non-empty list"),
        ({"messages": said, "stream": "yes"}, "stream must be true or false"),
    ]
    with httpx.Client(base_url=app_server.url, headers=headers) as http:
        junk = http.post("/v1/chat/completions", content=b"{not json")
        assert junk.status_code == 400 and "not valid JSON" in junk.json()["error"]["message"]
        for fields, says in cases:
            answer = http.post("/v1/chat/completions", json={"model": api_id(model), **fields})
            assert answer.status_code == 400, fields
            assert says in answer.json()["error"]["message"], fields
            assert answer.json()["error"]["type"] == "invalid_request_error"
    assert not ledger()  # nothing was spent


def test_quota_exhaustion_is_429_with_retry_after(app_server, fake, user):
    model = model_on(fake, "openai")
    Quota.objects.create(user=user, requests_per_minute=1)
    _, key = keys.create(user, "k")
    client = api(app_server, key)
    asked = dict(model=api_id(model), messages=[{"role": "user", "content": "Hi"}])
    client.chat.completions.create(**asked)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(**asked)
    retry = int(refused.value.response.headers["Retry-After"])
    assert 1 <= retry <= 60
    assert "requests per minute" in refused.value.message


def test_requests_beyond_the_concurrency_cap_are_refused(app_server, fake, user):
    model = model_on(fake, "openai")
    Quota.objects.create(user=user, max_concurrent=1)
    fake.configure(tokens=["slow "] * 100, token_interval=0.05)
    _, key = keys.create(user, "k")
    asked = dict(model=api_id(model), messages=[{"role": "user", "content": "Hi"}])
    first = api(app_server, key).chat.completions.create(**asked, stream=True)
    next(iter(first))  # the first request is running
    with pytest.raises(openai.RateLimitError) as refused:
        api(app_server, key).chat.completions.create(**asked)
    assert "being written" in refused.value.message
    first.close()


def test_a_client_that_disconnects_closes_the_upstream_connection(app_server, fake, user):
    model = model_on(fake, "llamacpp")
    fake.configure(tokens=["tok "] * 500, token_interval=0.02)
    row, key = keys.create(user, "k")
    stream = api(app_server, key).chat.completions.create(
        model=api_id(model), messages=[{"role": "user", "content": "Go"}], stream=True
    )
    chunks = iter(stream)
    for _ in range(3):
        next(chunks)
    stream.close()  # the client hangs up mid-reply
    assert fake.wait_for_hangup(5.0) is not None, "the upstream connection stayed open"
    deadline = time.monotonic() + 10
    while ledger(row)[0].status == "streaming" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ledger(row)[0].status == "stopped" and ledger(row)[0].completion_tokens < 500


def test_keys_are_stored_only_hashed_and_managed_on_the_settings_page(user):
    browser = logged_in(user)
    page = browser.post("/settings/api-keys/", {"name": "laptop"})
    assert page.status_code == 200
    shown = page.content.decode()
    row = ApiKey.objects.get(user=user)
    key = shown.split('<code id="new-key" class="select-all">')[1].split("</code>")[0]
    assert key.startswith(row.prefix) and len(key) > 40
    with connection.cursor() as cursor:  # the database holds no key, only its digest
        cursor.execute("SELECT * FROM chat_apikey")
        stored = " ".join(str(value) for record in cursor.fetchall() for value in record)
    assert key not in stored and keys.digest(key) in stored
    assert key not in browser.get("/settings/api-keys/").content.decode()  # shown once
    browser.post(f"/settings/api-keys/{row.pk}/revoke")
    assert ApiKey.objects.get(pk=row.pk).revoked is not None
    entries = LogEntry.objects.filter(object_id=str(row.pk)).order_by("id")
    changes = list(entries.values_list("change_message"))
    assert changes == [("Created API key.",), ("Revoked API key.",)]
    stranger = logged_in(type(user).objects.create_user("stranger", password="x-long-pass-1"))
    assert stranger.post(f"/settings/api-keys/{row.pk}/revoke").status_code == 404
    assert stranger.post("/settings/api-keys/", {"name": "nope"}).status_code == 403


def test_api_use_counts_against_the_web_chats_concurrency_cap(app_server, fake, user):
    from chat.governance import quotas

    model = model_on(fake, "openai")
    fake.configure(tokens=["slow "] * 100, token_interval=0.05)
    _, key = keys.create(user, "k")
    stream = api(app_server, key).chat.completions.create(
        model=api_id(model), messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    next(iter(stream))
    assert quotas.in_flight(user.pk).api_requests == 1
    done = threading.Event()
    threading.Thread(target=lambda: (list(stream), done.set()), daemon=True).start()
    assert done.wait(20)
    assert quotas.in_flight(user.pk).api_requests == 0


def test_admins_see_every_keys_owner_prefix_and_last_use_and_revoke_any(admin_client, user):
    row, _ = keys.create(user, "build app_server")
    ApiKey.objects.filter(pk=row.pk).update(last_used=timezone.now())
    listing = admin_client.get("/admin/chat/apikey/").content.decode()
    assert row.prefix in listing and "scripter" in listing and "build app_server" in listing
    assert (
        row.digest not in listing
        and row.digest
        not in admin_client.get(f"/admin/chat/apikey/{row.pk}/change/").content.decode()
    )
    admin_client.post("/admin/chat/apikey/", {"action": "revoke", "_selected_action": [row.pk]})
    assert ApiKey.objects.get(pk=row.pk).revoked is not None
    assert LogEntry.objects.filter(
        object_id=str(row.pk), change_message="Revoked API key."
    ).exists()
