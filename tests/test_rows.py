"""chat.rows reads and saves exactly what the ORM reads and saves."""

import uuid
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.forms.models import model_to_dict

from chat import rows
from chat.models import Conversation, Message, UsageRecord

pytestmark = pytest.mark.django_db


def saved(row) -> dict:
    fresh = type(row).objects.get(pk=row.pk)
    return {k: v for k, v in model_to_dict(fresh).items() if k not in ("id", "created", "updated")}


def test_a_row_inserted_reads_back_as_the_orm_would_have_saved_it(make_user, chat_model):
    owner = make_user()
    conversation = Conversation.objects.create(owner=owner)
    fields = dict(conversation=conversation, role="assistant", status="streaming",
                  model=chat_model, model_name="“Fake”", left_out=3, content="é ✓ <b>")  # fmt: skip
    fast, slow = rows.insert(Message(**fields)), Message.objects.create(**fields)
    assert fast.pk and fast.pk != slow.pk and not fast._state.adding
    assert saved(fast) == saved(slow)
    assert fast.created is not None  # auto_now_add set on the object, as save() does
    assert abs((Message.objects.get(pk=fast.pk).created - fast.created).total_seconds()) < 1
    child = rows.insert(Message(conversation=conversation, parent=fast, role="user"))
    assert Message.objects.get(pk=child.pk).parent_id == fast.pk
    ledger = dict(user=owner, message=fast, model=chat_model, model_name="m", provider_name="p",
                  status="streaming", cost=Decimal("0.00001234"), cost_source="none")  # fmt: skip
    one, other = rows.insert(UsageRecord(**ledger)), UsageRecord.objects.create(**ledger)
    assert saved(one) == saved(other)
    assert UsageRecord.objects.get(pk=one.pk).cost == Decimal("0.00001234")


def every_field(row) -> dict:
    return {f.attname: getattr(row, f.attname) for f in type(row)._meta.concrete_fields}


@pytest.mark.parametrize("lock", [False, True])
def test_a_row_read_by_one_is_the_row_the_orm_reads(make_user, chat_model, lock):
    owner = make_user()
    conversation = Conversation.objects.create(
        owner=owner, model=chat_model, title="ü <i>", system_prompt="be brief",
        settings={"temperature": 0.5, "stop": ["\n"]}, pinned=True,
    )  # fmt: skip
    where, params = (
        "id = %s AND owner_id = %s",
        [rows.db_value(Conversation, "id", conversation.pk), owner.pk],
    )
    found = rows.one(Conversation, where, params, lock=lock)
    assert every_field(found) == every_field(Conversation.objects.get(pk=conversation.pk))
    assert isinstance(found.pk, uuid.UUID) and found.pinned is True and not found._state.adding
    stranger = make_user("stranger")
    assert rows.one(Conversation, where, [params[0], stranger.pk], lock=lock) is None


def test_a_junk_id_is_refused_as_the_orm_refuses_it():
    with pytest.raises(ValidationError):
        rows.db_value(Conversation, "id", "not-a-uuid")
    with pytest.raises(ValidationError):
        Conversation.objects.filter(pk="not-a-uuid").first()


def test_an_update_saves_what_save_with_update_fields_saves(make_user, chat_model):
    owner = make_user()
    fast, slow = (Conversation.objects.create(owner=owner) for _ in range(2))
    leaf = Message.objects.create(conversation=fast, role="user", content="hi")
    for row in (fast, slow):
        row.model, row.active_leaf, row.title = chat_model, leaf, "new title"
        row.system_prompt = "not saved: not listed"
    before = fast.updated
    rows.update(fast, ("model", "active_leaf", "updated", "title"))
    slow.save(update_fields=["model", "active_leaf", "updated", "title"])
    after = Conversation.objects.get(pk=fast.pk)
    assert after.updated > before and after.updated == fast.updated  # auto_now stamped
    ignore = {"id", "created", "updated", "active_leaf"}
    assert {k: v for k, v in saved(after).items() if k not in ignore} == {
        k: v for k, v in saved(slow).items() if k not in ignore
    }
    assert (after.active_leaf_id, after.system_prompt) == (leaf.pk, "")


def test_an_update_where_saves_what_queryset_update_saves(make_user, chat_model):
    owner = make_user()
    conversation = Conversation.objects.create(owner=owner)
    fast, slow = (Message.objects.create(conversation=conversation, role="assistant") for _ in "ab")
    values = {
        "content": "é <b>", "status": "complete", "prompt_tokens": 7, "completion_tokens": None,
        "tokens_estimated": True, "cost": Decimal("0.000123"), "reasoning_seconds": 1.5,
    }  # fmt: skip
    assert rows.update_where(Message, values, "id = %s", [fast.pk]) == 1
    Message.objects.filter(pk=slow.pk).update(**values)
    assert saved(fast) == saved(slow)
    assert rows.update_where(Message, values, "id = %s", [10**9]) == 0
