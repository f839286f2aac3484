"""An admin adds a provider, tests it, syncs its models, enables and restricts them."""

import re

import pytest
from django.contrib.auth.models import Group

from providers.models import Model, Provider

KEY = "sk-live-very-secret-0042"


def action(client, url, name, pks):
    return client.post(url, {"action": name, "_selected_action": pks}, follow=True)


def messages_in(response) -> str:
    return " ".join(str(m) for m in response.context["messages"])


@pytest.fixture
def provider_url(fake):
    return fake.url + "/v1"


@pytest.mark.django_db
def test_admin_adds_tests_syncs_enables_and_restricts_without_ever_showing_the_key(
    admin_client, fake, provider_url
):
    fake.configure(expected_key=KEY, models=["acme/small", "acme/large", "acme/huge"])
    pages = []

    response = admin_client.post(
        "/admin/providers/provider/add/",
        {
            "name": "Acme",
            "wire_format": "openai",
            "base_url": provider_url,
            "enabled": "on",
            "api_key": KEY,
            "requires_key": "on",
            "connect_timeout": "5",
            "read_timeout": "30",
            "total_timeout": "300",
            "send_usage_option": "on",
            "extra_headers": "{}",
        },
        follow=True,
    )
    pages.append(response)
    provider = Provider.objects.get(name="Acme")
    assert provider.api_key() == KEY
    assert KEY not in provider.api_key_encrypted  # encrypted at rest

    pages.append(admin_client.get(f"/admin/providers/provider/{provider.pk}/change/"))
    pages.append(admin_client.get("/admin/providers/provider/"))

    tested = action(admin_client, "/admin/providers/provider/", "test_connection", [provider.pk])
    pages.append(tested)
    assert re.search(r"Acme: OK in \d+ ms, 3 models listed", messages_in(tested))

    synced = action(admin_client, "/admin/providers/provider/", "sync_models", [provider.pk])
    pages.append(synced)
    assert "3 new (disabled)" in messages_in(synced)
    assert set(provider.models.values_list("remote_id", "enabled")) == {
        ("acme/small", False),
        ("acme/large", False),
        ("acme/huge", False),
    }

    two = list(
        provider.models.filter(remote_id__in=["acme/small", "acme/large"]).values_list(
            "pk", flat=True
        )
    )
    pages.append(action(admin_client, "/admin/providers/model/", "enable", two))
    assert set(Model.objects.filter(enabled=True).values_list("remote_id", flat=True)) == {
        "acme/small",
        "acme/large",
    }

    staff = Group.objects.create(name="staff-only")
    large = Model.objects.get(remote_id="acme/large")
    form = {
        "provider": provider.pk,
        "remote_id": large.remote_id,
        "display_name": "Acme Large",
        "enabled": "on",
        "allowed_groups": [staff.pk],
        "accepted_params": "[]",
        "param_defaults": "{}",
        "continue_mode": "prefill",
    }
    response = admin_client.post(f"/admin/providers/model/{large.pk}/change/", form, follow=True)
    pages.append(response)
    assert list(Model.objects.get(pk=large.pk).allowed_groups.all()) == [staff]

    for page in pages:
        assert KEY not in page.content.decode()


@pytest.mark.django_db
def test_a_wrong_key_shows_status_url_and_answer_with_the_key_taken_out(
    admin_client, fake, provider_url, caplog
):
    fake.configure(expected_key="the-right-key")
    provider = Provider(name="Acme", wire_format="openai", base_url=provider_url, enabled=True)
    provider.set_api_key(KEY)
    provider.save()
    response = action(admin_client, "/admin/providers/provider/", "test_connection", [provider.pk])
    text = messages_in(response)
    assert "rejected the API key" in text
    assert "HTTP 401" in text and f"{provider_url}/models" in text
    assert "Incorrect API key: [key]" in text  # the server echoed the key; it is taken out
    assert KEY not in response.content.decode() and KEY not in caplog.text
    assert "provider 'Acme': test connection failed" in caplog.text and "HTTP 401" in caplog.text


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("http://127.0.0.1:{port}/v1", "connection refused"),
        ("http://no-such-host.invalid/v1", "DNS"),
    ],
)
def test_a_connection_failure_says_what_failed(admin_client, address, says):
    from tests.live_server import free_port

    provider = Provider.objects.create(
        name="Gone", wire_format="openai", base_url=address.format(port=free_port()),
        requires_key=False, enabled=True,
    )  # fmt: skip
    response = action(admin_client, "/admin/providers/provider/", "test_connection", [provider.pk])
    text = messages_in(response)
    assert says in text and provider.base_url in text


@pytest.mark.django_db
@pytest.mark.parametrize("wire_format", ["openai", "llamacpp"])
def test_a_synced_llama_cpp_model_gets_its_context_standard_parameters_and_a_reply_limit(
    admin_client, fake, wire_format, settings
):
    # llama-server's model list carries meta.n_ctx (see the captured transcripts).
    fake.configure(models=["models/SmolLM2-135M-Instruct.Q4_1.gguf"], n_ctx=512)
    root = fake.url + ("/v1" if wire_format == "openai" else "")
    provider = Provider.objects.create(
        name="Local", wire_format=wire_format, base_url=root, requires_key=False, enabled=True
    )
    action(admin_client, "/admin/providers/provider/", "sync_models", [provider.pk])
    model = provider.models.get()
    assert model.context_window == 512
    assert {"temperature", "top_p"} <= set(model.accepted_params)
    assert model.default_max_tokens == 256  # half the context: "hi" cannot run to 2,000
    fake.configure(models=["big"], n_ctx=131072)
    action(admin_client, "/admin/providers/provider/", "sync_models", [provider.pk])
    assert provider.models.get(remote_id="big").default_max_tokens == settings.DEFAULT_REPLY_RESERVE


@pytest.mark.django_db
def test_sync_flags_models_that_disappear_instead_of_deleting_them(
    admin_client, fake, provider_url
):
    provider = Provider.objects.create(
        name="Acme", wire_format="openai", base_url=provider_url, requires_key=False, enabled=True
    )
    fake.configure(models=["a", "b"])
    action(admin_client, "/admin/providers/provider/", "sync_models", [provider.pk])
    fake.configure(models=["a"])
    response = action(admin_client, "/admin/providers/provider/", "sync_models", [provider.pk])
    assert "1 no longer listed" in messages_in(response)
    assert dict(provider.models.values_list("remote_id", "missing_upstream")) == {
        "a": False,
        "b": True,
    }


@pytest.mark.django_db
def test_a_blank_key_field_keeps_the_stored_key_and_clear_removes_it(admin_client, provider_url):
    provider = Provider(name="Acme", wire_format="openai", base_url=provider_url)
    provider.set_api_key(KEY)
    provider.save()
    form = {
        "name": "Acme",
        "wire_format": "openai",
        "base_url": provider_url,
        "requires_key": "on",
        "connect_timeout": "5",
        "read_timeout": "30",
        "total_timeout": "300",
        "extra_headers": "{}",
        "api_key": "",
    }
    admin_client.post(f"/admin/providers/provider/{provider.pk}/change/", form)
    provider.refresh_from_db()
    assert provider.api_key() == KEY
    admin_client.post(
        f"/admin/providers/provider/{provider.pk}/change/", {**form, "clear_api_key": "on"}
    )
    provider.refresh_from_db()
    assert provider.api_key() == ""


@pytest.mark.django_db
def test_models_restricted_to_a_group_are_only_available_to_its_members(make_user):
    provider = Provider.objects.create(
        name="Acme",
        wire_format="openai",
        base_url="http://x.invalid",
        requires_key=False,
        enabled=True,
    )
    open_model = Model.objects.create(
        provider=provider, remote_id="open", display_name="Open", enabled=True
    )
    closed = Model.objects.create(
        provider=provider, remote_id="closed", display_name="Closed", enabled=True
    )
    Model.objects.create(provider=provider, remote_id="off", display_name="Off", enabled=False)
    group = Group.objects.create(name="insiders")
    closed.allowed_groups.add(group)
    outsider, insider = make_user("outsider"), make_user("insider")
    insider.groups.add(group)
    assert list(Model.objects.available_to(outsider)) == [open_model]
    assert set(Model.objects.available_to(insider)) == {open_model, closed}
    assert closed.allows(insider) and not closed.allows(outsider)


@pytest.mark.django_db
@pytest.mark.parametrize("n_ctx", [2**70, -1, 0])
def test_a_model_list_with_impossible_ids_and_windows_syncs_what_it_can(
    admin_client, fake, provider_url, n_ctx
):
    provider = Provider.objects.create(
        name="Odd", wire_format="openai", base_url=provider_url, requires_key=False, enabled=True
    )
    fake.configure(models=["fine", "x" * 400], n_ctx=n_ctx)
    response = action(admin_client, "/admin/providers/provider/", "sync_models", [provider.pk])
    assert response.status_code == 200
    model = provider.models.get()  # the 400-character id is not a model the table can hold
    assert (model.remote_id, model.context_window) == ("fine", None)
