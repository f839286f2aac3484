"""ASGI entry point: HTTP goes to Django, websockets to the chat consumer.

Websockets pass the Origin check (scheme, host and port of this site) and then
the session auth; the consumer itself refuses anonymous users. Every connection
makes sure this process's background work (chat.live.runtime) is running on
the server's event loop.
"""

import os
import sys

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_asgi_app = get_asgi_application()  # set up Django before importing consumers

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chat.live import runtime  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from chatsite.origin import SameOriginValidator  # noqa: E402


def _save_replies_before_shutdown():
    """Under daphne (Twisted on asyncio), let running replies save before the loop stops,
    so a SIGTERM (deploy, restart) keeps every token that had arrived."""
    if "twisted.internet.reactor" not in sys.modules:
        return  # another ASGI server: nothing to hook into
    import asyncio

    from twisted.internet import defer, reactor

    def before_shutdown():
        return defer.Deferred.fromFuture(asyncio.ensure_future(runtime.shutdown()))

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)


_save_replies_before_shutdown()

router = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)


async def application(scope, receive, send):
    runtime.ensure_started()
    await router(scope, receive, send)
