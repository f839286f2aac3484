"""/healthz, /readyz and /metrics, as an operator's probes and Prometheus see them."""

import json
import logging
import re

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from tests.chat_support import Socket, new_conversation
from tests.live_server import Daphne, free_port

pytestmark = pytest.mark.django_db(transaction=True)
TOKEN = "metrics-token-for-the-test-0123456789"


def sample(text: str, name: str, labels: str = "") -> float:
    """One value from Prometheus's text format (0 when the series does not exist yet)."""
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_healthz_and_readyz_answer_without_a_login_and_carry_no_data():
    client = Client()
    assert client.get("/healthz").content == b"ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"database": "ok", "channel_layer": "ok"}


def test_readyz_fails_when_the_database_is_down():
    nowhere = f"postgres://postgres@127.0.0.1:{free_port()}/chatsite"
    server = Daphne(extra_env={"DATABASE_URL": nowhere}).start()
    try:
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200  # alive
        ready = httpx.get(server.url + "/readyz", timeout=10)
    finally:
        server.stop()
    assert ready.status_code == 503
    assert ready.json() == {"database": "failing", "channel_layer": "ok"}


async def test_metrics_are_off_without_a_token_and_count_a_streamed_reply(
    make_user, chat_model, fake, settings, caplog
):
    caplog.set_level(logging.INFO, logger="chat.replies")
    client = Client()
    assert (await sync_to_async(client.get)("/metrics")).status_code == 404  # off by default
    settings.METRICS_TOKEN = TOKEN
    wrong = await sync_to_async(client.get)("/metrics", headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 404

    async def scrape() -> str:
        response = await sync_to_async(client.get)(
            "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code == 200
        return response.content.decode()

    before = await scrape()
    owner = await sync_to_async(make_user)("owner")
    tab = Socket(owner, await new_conversation(owner, chat_model))
    await tab.open()
    await tab.send(command="send", content="count me")
    await tab.until_final()
    after = await scrape()
    await tab.close()
    complete = 'status="complete"'
    replies = sample(after, "chat_replies_total", complete)
    assert replies == sample(before, "chat_replies_total", complete) + 1
    relayed = sample(after, "chat_tokens_relayed_total") - sample(
        before, "chat_tokens_relayed_total"
    )
    assert relayed == len(fake.behaviour.tokens)
    ttft = sample(after, "chat_time_to_first_token_seconds_count")
    assert ttft == sample(before, "chat_time_to_first_token_seconds_count") + 1
    for name in ("chat_active_streams", "chat_open_sockets", "chat_event_loop_lag_seconds_count"):
        assert re.search(rf"^{name} ", after, re.M), name
    # One line per reply for the log: ids and numbers, never the text.
    line = json.loads(next(r.getMessage() for r in caplog.records if r.name == "chat.replies"))
    assert line["status"] == "complete" and line["provider"] == chat_model.provider.name
    assert line["completion_tokens"] == len(fake.behaviour.tokens) and line["ttft_ms"] >= 0
    assert "count me" not in json.dumps(line) and fake.behaviour.tokens[0] not in json.dumps(line)
