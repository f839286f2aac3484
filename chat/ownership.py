"""The user's own rows, found by id, and the one refusal every command raises.

Another user's id, a missing id and junk all look the same from outside:
"does not exist". Every command goes through these lookups.
"""

import functools

from django.contrib.auth import get_user_model
from django.db import connection

from chat import rows
from chat.models import Conversation, Message, Preference

Status = Message.Status
MAX_ID = 2**63 - 1  # the largest id a database row can have


class Refused(Exception):
    """A command the user may not run now; the message says why and what to do."""


RIGHTS = ("is_superuser", "is_staff", "is_active")  # the flags every command checks


def current_user(user_id):
    """The account as it is now (rights, groups, staff), or None once it is deactivated.

    Every command runs this, so it is one plain query for the flags that decide rights;
    any other field loads if something asks for it. The ORM took 0.5 ms to build it.
    """
    sql, names = _account_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql, [user_id])
        row = cursor.fetchone()
    if row is None:
        return None
    values = [bool(v) if name in RIGHTS else v for name, v in zip(names, row, strict=True)]
    return get_user_model().from_db(connection.alias, names, values)


@functools.cache
def _account_sql() -> tuple[str, list[str]]:
    """The query, and the fields it reads in the model's order (as from_db takes them)."""
    meta = get_user_model()._meta
    fields = [f for f in meta.concrete_fields if f.primary_key or f.attname in RIGHTS]
    quote = connection.ops.quote_name
    listed = ", ".join(quote(field.column) for field in fields)
    pk, active = quote(meta.pk.column), quote(meta.get_field("is_active").column)
    sql = f"SELECT {listed} FROM {meta.db_table} WHERE {pk} = %s AND {active}"  # noqa: S608
    return sql, [field.attname for field in fields]


def owned_conversation(user, conversation_id, lock: bool = False) -> Conversation | None:
    """The user's conversation, or None. Every socket opening asks, so the statement is
    built once (chat.rows): through the ORM the lookup took 670–935 µs, here 121–125 µs
    (SQLite, the query included), out of about 12 ms of CPU for an opening."""
    where, key = "id = %s AND owner_id = %s", rows.db_value(Conversation, "id", conversation_id)
    return rows.one(Conversation, where, [key, user.pk], lock=lock)


def locked_conversation(user, conversation_id) -> Conversation:
    """The user's conversation, locked for this transaction: its commands run one at a
    time. Raises Conversation.DoesNotExist, as the ORM's get() would."""
    found = owned_conversation(user, conversation_id, lock=True)
    if found is None:
        raise Conversation.DoesNotExist
    return found


def lock_preferences(user, model) -> None:
    """Lock the user's preferences for this transaction (PostgreSQL: their starts run
    one at a time) and remember `model` as the one they last used; the row is made on
    their first start. One statement where it took two, and six on a first start (a
    lookup, then get_or_create's lookup, savepoint, insert and release, then the
    update): a hundred people arriving at once each pay for a first start."""
    with connection.cursor() as cursor:
        cursor.execute(_claim_sql(), [user.pk, model.pk])


@functools.cache
def _claim_sql() -> str:
    """An upsert: its conflict branch locks the existing row as FOR UPDATE would, and on
    both databases (SQLite 3.24 on)."""
    quote, meta = connection.ops.quote_name, Preference._meta
    user, model = (quote(meta.get_field(name).column) for name in ("user", "last_model"))
    return (
        f"INSERT INTO {quote(meta.db_table)} ({user}, {model}) VALUES (%s, %s) "  # noqa: S608
        f"ON CONFLICT ({user}) DO UPDATE SET {model} = excluded.{model}"
    )


def as_id(value, refusal: str = "That message does not exist.") -> int:
    """A row id from a command or form: a positive integer that fits the database."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise Refused(refusal)
    try:
        number = int(value)
    except ValueError:
        raise Refused(refusal) from None
    if not 0 < number <= MAX_ID:
        raise Refused(refusal)
    return number


def owned_message(conversation: Conversation, message_id) -> Message:
    message_id = as_id(message_id)
    message = Message.objects.filter(pk=message_id, conversation=conversation).first()
    if message is None:  # another user's id looks exactly like a missing one
        raise Refused("That message does not exist.")
    return message


def stoppable(user, conversation_id, message_id) -> int:
    conversation = Conversation.objects.get(pk=conversation_id, owner=user)
    message = owned_message(conversation, message_id)
    if message.status != Status.STREAMING:
        raise Refused("That reply has already finished.")
    return message.pk


def user_streaming_ids(user_id) -> list[int]:
    """The person's replies being written, in any conversation: every start asks, so it
    is plain SQL (the ORM spent 0.4 ms building the join)."""
    with connection.cursor() as cursor:
        cursor.execute(streaming_sql(), [user_id, Status.STREAMING.value])
        return [pk for (pk,) in cursor.fetchall()]


@functools.cache
def streaming_sql() -> str:
    """The ids of a person's replies being written; parameters: owner id, status."""
    messages, conversations = Message._meta.db_table, Conversation._meta.db_table
    return f"""
        SELECT m.id FROM {messages} m JOIN {conversations} c ON c.id = m.conversation_id
        WHERE c.owner_id = %s AND m.status = %s"""  # noqa: S608 - names from the models
