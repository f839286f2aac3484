"""Opening a long conversation: server time, queries and bytes.

Builds a throw-away SQLite database with one conversation of 2,000 messages
(Markdown with code blocks, as replies look) in a tree: a long main branch and
10 side branches of versions along it. Then times the conversation page through
Django's full request path, in process, and counts its queries beside those of
a conversation a tenth the size: the number must not grow. Prints a table.

    make bench-page    # or: python -m bench.page_load --messages 2000 --branches 10 --runs 30
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 300
REPLY = (
    "Here is how:\n\n1. First step with **bold** text\n2. Second step\n\n"
    "```python\ndef hello(name):\n    return f'Hello, {name}!'\n```\n\nAnd a [link](https://example.com)."
)


def _tree(conversation, messages: int, branches: int, branch_length: int = 20):
    """A main branch with `branches` side branches, each a version of a main-branch
    message with `branch_length` turns below it; the main branch is shown."""
    from chat.models import Conversation, Message

    main = max(2, messages - branches * branch_length)
    rows = Message.objects.bulk_create(
        Message(
            conversation=conversation,
            role="assistant" if i % 2 else "user",
            content=REPLY if i % 2 else f"Question number {i}?",
            model_name="M",
            prompt_tokens=100,
            completion_tokens=50,
        )
        for i in range(messages)
    )
    for up, row in zip(rows[: main - 1], rows[1:main], strict=True):
        row.parent_id = up.pk
    side = rows[main:]
    for k in range(branches):
        at = (k + 1) * (main - 1) // branches  # a version of rows[at]; the last, in view
        chain = side[k * branch_length : (k + 1) * branch_length]
        parents = [rows[at].parent_id, *(row.pk for row in chain[:-1])]
        for row, parent in zip(chain, parents, strict=True):
            row.parent_id = parent
    Message.objects.bulk_update(rows, ["parent"], batch_size=500)
    Conversation.objects.filter(pk=conversation.pk).update(active_leaf=rows[main - 1])


def setup(messages: int, branches: int):
    os.environ["SQLITE_PATH"] = str(Path(tempfile.mkdtemp()) / "bench.sqlite3")
    os.environ["DATABASE_URL"] = ""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from chat.models import Conversation
    from providers.models import Model, Provider

    user = get_user_model().objects.create_user("bench", password="bench-password-1")
    provider = Provider.objects.create(
        name="Bench", wire_format="openai", base_url="http://127.0.0.1:9/v1", enabled=True
    )
    model = Model.objects.create(provider=provider, remote_id="m", display_name="M", enabled=True)
    conversations = []
    for size in (messages, messages // 10):
        conversation = Conversation.objects.create(owner=user, title="Long", model=model)
        _tree(conversation, size, branches)
        conversations.append(conversation)
    return user, conversations


def _queries(client, conversation) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        client.get(f"/c/{conversation.pk}/")
    return len(queries)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--branches", type=int, default=10)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    user, (conversation, smaller) = setup(args.messages, args.branches)

    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="localhost")  # a host the development settings allow
    client.force_login(user)
    url = f"/c/{conversation.pk}/"
    for _ in range(3):
        client.get(url)
    times = []
    for _ in range(args.runs):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            sys.exit(f"the page answered {response.status_code}")
    static = ROOT / "static"
    assets = [
        "css/app.css",
        "css/code.css",
        "js/theme.js",
        "js/app.js",
        "vendor/htmx-2.0.11.min.js",
        "vendor/htmx-ext-ws-2.0.4.min.js",
    ]
    asset_bytes = sum((static / a).stat().st_size for a in assets)
    p50, p95 = statistics.median(times), sorted(times)[int(len(times) * 0.95) - 1]
    versions = response.content.decode().count('class="versions"')
    fewer = _queries(client, smaller)
    fixed = "yes" if fewer == len(queries) else "NO"
    rows = [
        ("messages in conversation", f"{args.messages}, {args.branches} side branches"),
        ("versions controls in the first screen", f"{versions}"),
        ("server time p50 / p95 / max", f"{p50:.1f} / {p95:.1f} / {max(times):.1f} ms"),
        ("SQL queries per page", f"{len(queries)}"),
        (f"SQL queries, {args.messages // 10} messages", f"{fewer} (fixed: {fixed})"),
        ("HTML bytes", f"{len(response.content):,}"),
        ("HTML + CSS + JS bytes", f"{len(response.content) + asset_bytes:,}"),
        ("target: p95 under", f"{TARGET_MS} ms: {'holds' if p95 < TARGET_MS else 'MISSED'}"),
    ]
    width = max(len(r[0]) for r in rows)
    print("\nConversation page, first load")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
