"""chat.rows.insert saves exactly what Model.save() saves."""

from decimal import Decimal

import pytest
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
