"""Prepare the benchmark's throw-away database: one user, a model on the upstream,
one conversation per client. Prints {"cookie": ..., "conversations": [...]} as JSON.

    python -m bench.setup_app UPSTREAM_URL CLIENTS   (run by bench.relay)
"""

import json
import os
import sys

WARM_UP = 6  # extra conversations, so that a warm-up reply reaches every worker


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
    user = get_user_model().objects.create_user("bench", password="bench-password-1")
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
        for i in range(clients + WARM_UP)
    )
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    print(json.dumps({"cookie": cookie, "conversations": [str(c.pk) for c in conversations]}))


if __name__ == "__main__":
    main()
