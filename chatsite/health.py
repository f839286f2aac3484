"""For operators: is the process alive, can it serve, and what is it doing.

- /healthz: the process answers. No database, no data.
- /readyz: the database and the channel layer both answer, within two seconds;
  503 says which did not. No data.
- /metrics: Prometheus text (chat/live/metrics.py), only with METRICS_TOKEN set,
  and only to a request that brings it as a bearer token; otherwise 404.
"""

import asyncio
import hmac

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import Http404, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

READY_TIMEOUT = 2.0


@never_cache
@require_GET
async def healthz(request):
    """Async, so that no worker thread (which may be waiting on the database) delays it."""
    return HttpResponse("ok", content_type="text/plain")


def _database_answers():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _database() -> bool:
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await sync_to_async(_database_answers)()
        return True
    except Exception:
        return False


async def _channel_layer() -> bool:
    """A message to ourselves through the layer, there and back."""
    layer = get_channel_layer()
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "ready.check"})
            await layer.receive(channel)
        return True
    except Exception:
        return False


@never_cache
@require_GET
async def readyz(request):
    checks = {"database": await _database(), "channel_layer": await _channel_layer()}
    ready = all(checks.values())
    body = {name: "ok" if ok else "failing" for name, ok in checks.items()}
    return JsonResponse(body, status=200 if ready else 503)


@never_cache
@require_GET
def metrics(request):
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if not token or not hmac.compare_digest(given.encode(), token.encode()):
        raise Http404  # off, or not for you: the same answer either way
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
