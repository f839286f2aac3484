"""The migration that made conversations trees: linear ones become single paths."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from chat import thread
from chat.models import Conversation

BEFORE = [("chat", "0004_reasoning")]
AFTER = [("chat", "0005_conversation_tree")]


@pytest.mark.django_db(transaction=True)
def test_linear_conversations_migrate_to_single_paths_showing_the_same_threads(make_user):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        old = executor.loader.project_state(BEFORE).apps
        owner = old.get_model("auth", "User").objects.create(username="old-timer")
        talks, lines = old.get_model("chat", "Conversation"), old.get_model("chat", "Message")
        threads = {}
        for size in (0, 1, 6):
            talk = talks.objects.create(owner_id=owner.pk, title=f"{size} messages")
            for n in range(size):
                role = "user" if n % 2 == 0 else "assistant"
                lines.objects.create(conversation=talk, role=role, content=f"{talk.pk}:{n}")
            threads[talk.pk] = [f"{talk.pk}:{n}" for n in range(size)]
        executor = MigrationExecutor(connection)
        executor.migrate(AFTER)
        executor.loader.build_graph()
        for pk, texts in threads.items():
            conversation = Conversation.objects.get(pk=pk)
            shown = thread.window(conversation).messages
            assert [m.content for m in shown] == texts
            assert [m.versions for m in shown] == [None] * len(texts)
            if texts:
                assert conversation.active_leaf_id == shown[-1].pk
                assert shown[0].parent_id is None
                assert [m.parent_id for m in shown[1:]] == [m.pk for m in shown[:-1]]
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
