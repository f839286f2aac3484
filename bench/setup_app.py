"""Prepare the benchmark's throw-away database: a model on the upstream, and per
client an account, signed in, with one conversation. Prints {"tabs": [[conversation
id, session cookie], ...]} as JSON.

A client is one person at one tab, on the default limits: one account with a
hundred replies running at once would measure that account's serialised starts
(chat.turns), which no real person meets, and would need the per-account caps
lifted.

    python bench/setup_app.py UPSTREAM_URL CLIENTS   (run by bench.apps, in the tree
                                                      under test)
"""

import json
import os
import sys

WARM_UP = 4  # extra tabs: a warm-up reply on each worker (bench.load), up to four


def main():
    upstream, clients = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from chat.models import Conversation
    from providers.models import Model, Provider

    call_command("migrate", verbosity=0)
    users = get_user_model().objects.bulk_create(
        get_user_model()(username=f"bench{i}", password="!")  # "!": no password to sign in
        for i in range(clients + WARM_UP)
    )
    provider = Provider.objects.create(
        name="Upstream",
        wire_format="openai",
        base_url=upstream + "/v1",
        requires_key=False,
        enabled=True,
    )
    model = Model.objects.create(
        provider=provider, remote_id="m", display_name="M", enabled=True, context_window=32768
    )
    conversations = Conversation.objects.bulk_create(
        # Titled already, so no title requests add to the upstream's load.
        Conversation(owner=user, model=model, title=f"bench {i}")
        for i, user in enumerate(users)
    )
    tabs = []
    for user, conversation in zip(users, conversations, strict=True):
        client = Client()
        client.force_login(user)
        session = client.cookies[settings.SESSION_COOKIE_NAME].value
        tabs.append([str(conversation.pk), f"{settings.SESSION_COOKIE_NAME}={session}"])
    print(json.dumps({"tabs": tabs}))


if __name__ == "__main__":
    main()
