"""The chat pages over HTTP: ownership, paging, settings validation, export."""

import json
import uuid
from itertools import pairwise

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chat.models import Conversation, Message


@pytest.fixture
def alice(client, make_user):
    user = make_user("alice")
    client.force_login(user)
    return user


@pytest.fixture
def bobs_chat(make_user, chat_model):
    bob = make_user("bob")
    conversation = Conversation.objects.create(owner=bob, title="Bob's secrets", model=chat_model)
    Message.objects.create(conversation=conversation, role="user", content="bob private words")
    return conversation


def with_messages(owner, model, count) -> Conversation:
    """One branch of `count` messages, each following the one before."""
    conversation = Conversation.objects.create(owner=owner, title=f"{count} messages", model=model)
    rows = Message.objects.bulk_create(
        Message(
            conversation=conversation, role="user" if i % 2 else "assistant", content=f"m{i} **x**"
        )
        for i in range(count)
    )
    for parent, row in pairwise(rows):
        row.parent_id = parent.pk
    Message.objects.bulk_update(rows, ["parent"], batch_size=500)
    conversation.active_leaf = rows[-1]
    conversation.save(update_fields=["active_leaf"])
    return conversation


@pytest.mark.django_db
def test_another_users_conversation_is_a_404_on_every_url(client, alice, bobs_chat):
    pk = bobs_chat.pk
    for name, method in [
        ("conversation", "get"),
        ("earlier", "get"),
        ("rename", "post"),
        ("pin", "post"),
        ("delete", "post"),
        ("choose_model", "post"),
        ("settings", "post"),
    ]:
        response = getattr(client, method)(
            reverse(name, args=[pk]), {"title": "pwned", "before": 99}
        )
        assert response.status_code == 404, name
    assert client.get(reverse("export", args=[pk, "json"])).status_code == 404
    bobs_chat.refresh_from_db()
    assert bobs_chat.title == "Bob's secrets"
    search = client.get(reverse("sidebar"), {"q": "private"})
    assert b"Bob" not in search.content


@pytest.mark.django_db
def test_opening_a_2000_message_conversation_uses_a_fixed_number_of_queries(
    client, alice, chat_model
):
    small = with_messages(alice, chat_model, 20)
    big = with_messages(alice, chat_model, 2000)
    counts = []
    for conversation in (small, big):
        with CaptureQueriesContext(connection) as queries:
            response = client.get(reverse("conversation", args=[conversation.pk]))
        assert response.status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
    html = response.content.decode()
    assert html.count('class="msg ') == 40  # the latest page only
    assert "m1999" in html and "m1959" not in html and "Loading earlier messages" in html


@pytest.mark.django_db
def test_earlier_messages_load_page_by_page(client, alice, chat_model):
    conversation = with_messages(alice, chat_model, 100)
    oldest_shown = conversation.messages.order_by("-id")[39]
    response = client.get(reverse("earlier", args=[conversation.pk]), {"before": oldest_shown.pk})
    html = response.content.decode()
    assert html.count('class="msg ') == 40
    assert f"m{100 - 41}" in html and f"m{100 - 40}" not in html


@pytest.mark.django_db
def test_the_sidebar_pages_by_cursor_with_pinned_first(client, alice, chat_model):
    for i in range(120):
        Conversation.objects.create(owner=alice, title=f"chat {i:03}")
    Conversation.objects.filter(title="chat 005").update(pinned=True)
    first = client.get(reverse("home")).content.decode()
    assert first.index("chat 005") < first.index("chat 119")
    assert first.count('class="conv-item') == 51  # 1 pinned + 50
    cursor = first.split("cursor=")[1].split('"')[0].replace("&amp;", "&")
    from urllib.parse import unquote

    second = client.get(reverse("sidebar"), {"cursor": unquote(cursor)}).content.decode()
    assert second.count('class="conv-item') == 50
    assert "chat 069" in second and "chat 070" not in second


@pytest.mark.django_db
def test_search_finds_titles_and_message_content_and_treats_input_as_text(
    client, alice, chat_model
):
    chat = Conversation.objects.create(owner=alice, title="Holiday plans")
    Message.objects.create(conversation=chat, role="user", content="pack the snorkel")
    Conversation.objects.create(owner=alice, title="Other")
    assert b"Holiday plans" in client.get(reverse("sidebar"), {"q": "snorkel"}).content
    assert b"Holiday plans" in client.get(reverse("sidebar"), {"q": "holiday"}).content
    hostile = client.get(reverse("sidebar"), {"q": "' OR 1=1 --<script>"})
    assert hostile.status_code == 200
    assert b"Holiday" not in hostile.content and b"<script>" not in hostile.content


@pytest.mark.django_db
def test_rename_escapes_html_and_settings_refuse_absurd_values(client, alice, chat_model):
    chat_model.accepted_params = ["temperature", "top_p", "top_k"]
    chat_model.save()
    chat = Conversation.objects.create(owner=alice, model=chat_model)
    response = client.post(
        reverse("rename", args=[chat.pk]), {"title": "<img src=x onerror=alert(1)>"}
    )
    assert b"<img" not in response.content and b"&lt;img" in response.content
    bad = client.post(reverse("settings", args=[chat.pk]), {"temperature": "1e9", "top_k": "-5"})
    assert bad.status_code == 400
    assert b"less than or equal to 2" in bad.content
    chat.refresh_from_db()
    assert chat.settings == {}
    good = client.post(
        reverse("settings", args=[chat.pk]), {"temperature": "0.3", "system_prompt": "Be terse."}
    )
    assert good.status_code == 200
    chat.refresh_from_db()
    assert chat.settings == {"temperature": 0.3} and chat.system_prompt == "Be terse."


@pytest.mark.django_db
def test_settings_show_only_what_the_model_accepts(client, alice, chat_model):
    chat_model.accepted_params = ["temperature"]
    chat_model.param_defaults = {"temperature": 0.7}
    chat_model.save()
    chat = Conversation.objects.create(owner=alice, model=chat_model)
    Message.objects.create(conversation=chat, role="user", content="hi")
    html = client.get(reverse("conversation", args=[chat.pk])).content.decode()
    assert 'name="temperature"' in html and 'placeholder="0.7"' in html
    assert 'name="top_k"' not in html and 'name="repetition_penalty"' not in html


@pytest.mark.django_db
def test_export_as_markdown_and_json_and_import_round_trip(client, alice, chat_model):
    chat = with_messages(alice, chat_model, 4)
    chat.messages.filter(role="assistant").update(reasoning="first, think")
    markdown = client.get(reverse("export", args=[chat.pk, "md"]))
    assert markdown["Content-Type"].startswith("text/markdown")
    assert "# 4 messages" in markdown.content.decode() and "m3 **x**" in markdown.content.decode()
    exported = client.get(reverse("export", args=[chat.pk, "json"])).json()
    assert [m["content"] for m in exported["messages"]] == [f"m{i} **x**" for i in range(4)]

    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("chat.json", json.dumps(exported).encode(), "application/json")
    response = client.post(reverse("import_conversation"), {"file": upload})
    assert response.status_code == 302
    imported = Conversation.objects.exclude(pk=chat.pk).get(owner=alice)
    assert list(imported.messages.values_list("content", flat=True)) == [
        f"m{i} **x**" for i in range(4)
    ]
    thoughts = list(imported.messages.order_by("id").values_list("role", "reasoning"))
    assert {reasoning for role, reasoning in thoughts if role == "assistant"} == {"first, think"}
    assert "first, think" not in markdown.content.decode()  # Markdown holds the answers
    junk = SimpleUploadedFile("x.json", b"{not json", "application/json")
    assert client.post(reverse("import_conversation"), {"file": junk}).status_code == 400


@pytest.mark.django_db
def test_json_keeps_the_whole_tree_and_the_active_path_and_markdown_writes_that_path(
    client, alice, chat_model
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    chat = with_messages(alice, chat_model, 4)  # m0 .. m3, one branch
    first = chat.messages.order_by("id").first()
    other = Message.objects.create(
        conversation=chat, parent=first, role="user", content="other branch"
    )
    chat.active_leaf = other
    chat.save()
    markdown = client.get(reverse("export", args=[chat.pk, "md"])).content.decode()
    assert "other branch" in markdown and "m2 **x**" not in markdown  # the path shown
    exported = client.get(reverse("export", args=[chat.pk, "json"])).json()
    assert exported["format"] == "chatsite.conversation.v2"
    upload = SimpleUploadedFile("chat.json", json.dumps(exported).encode(), "application/json")
    assert client.post(reverse("import_conversation"), {"file": upload}).status_code == 302
    imported = Conversation.objects.exclude(pk=chat.pk).get(owner=alice)
    shape = {m.content: (m.parent.content if m.parent else None) for m in imported.messages.all()}
    assert shape == {
        "m0 **x**": None, "m1 **x**": "m0 **x**", "m2 **x**": "m1 **x**",
        "m3 **x**": "m2 **x**", "other branch": "m0 **x**",
    }  # fmt: skip
    assert imported.active_leaf.content == "other branch"
    page = client.get(reverse("conversation", args=[imported.pk])).content.decode()
    assert "other branch" in page and "m3 **x**" not in page and "2 / 2" in page
    # A parent that does not come before its child (a cycle, or junk) is refused.
    exported["messages"][0]["parent"] = exported["messages"][-1]["n"]
    bad = SimpleUploadedFile("bad.json", json.dumps(exported).encode(), "application/json")
    response = client.post(reverse("import_conversation"), {"file": bad})
    assert response.status_code == 400 and b"parent that does not come before" in response.content
    assert chat.messages.count() == 5  # the source is untouched


@pytest.mark.django_db
def test_new_chat_refusal_keeps_nothing(client, alice):
    response = client.post(reverse("new_chat"), {"content": "hi"})
    assert response.status_code == 400
    assert b"No model is available" in response.content
    assert not Conversation.objects.exists()


def test_unknown_conversation_ids_are_404(client, alice):
    assert client.get(reverse("conversation", args=[uuid.uuid4()])).status_code == 404


@pytest.mark.django_db
def test_markdown_export_says_which_replies_failed_or_stopped_and_imports_are_marked(
    client, alice, chat_model
):
    chat = with_messages(alice, chat_model, 2)
    Message.objects.filter(conversation=chat, content="m0 **x**").update(
        status="stopped", error_message="Stopped: the reply reached the length limit."
    )
    markdown = client.get(reverse("export", args=[chat.pk, "md"])).content.decode()
    assert "*[Stopped: the reply reached the length limit.]*" in markdown
    exported = client.get(reverse("export", args=[chat.pk, "json"])).json()

    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("chat.json", json.dumps(exported).encode(), "application/json")
    client.post(reverse("import_conversation"), {"file": upload})
    imported = Conversation.objects.exclude(pk=chat.pk).get(owner=alice)
    assert imported.title == "2 messages (imported)"


@pytest.mark.parametrize(
    ("answer", "title"),
    [
        ("- **Trip to Lisbon**", "Trip to Lisbon"),
        ('"Quoted title"', "Quoted title"),
        ("1. Numbered idea", "Numbered idea"),
        ("> A quote", "A quote"),
        ("## Heading title", "Heading title"),
        ("Title: `sorting` in Python\nmore text", "sorting in Python"),
    ],
)
def test_automatic_titles_lose_list_markers_quotes_and_markdown(answer, title):
    from chat.live.titles import clean

    assert clean(answer) == title
