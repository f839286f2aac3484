"""ASGI entry point: HTTP goes to Django, websockets to the chat consumer.

Websockets pass the Origin check (scheme, host and port of this site) and then
get their session; the consumer itself reads who it belongs to and refuses
anonymous users. Every connection makes sure this process's background work
(chat.live.runtime) is running on the server's event loop.
"""

import gc
import os
import sys

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_asgi_app = get_asgi_application()  # set up Django before importing consumers

from importlib import import_module  # noqa: E402

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import CookieMiddleware  # noqa: E402
from django.conf import settings  # noqa: E402

from chat.live import runtime, warm  # noqa: E402
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

if "twisted.internet.reactor" in sys.modules:  # under daphne: frames go out on the spot,
    from chatsite import socket_opening, socket_writes  # and sockets open without pprint

    socket_writes.install()
    socket_opening.install()


class SessionReader:
    """The session for a websocket, read-only: Channels' SessionMiddleware also wraps
    every message sent to look for session changes to save, once per delta per
    socket. Sign-in and sign-out happen over HTTP; a chat socket never changes it."""

    def __init__(self, inner):
        self.inner = inner
        self.store = import_module(settings.SESSION_ENGINE).SessionStore

    async def __call__(self, scope, receive, send):
        key = scope["cookies"].get(settings.SESSION_COOKIE_NAME)
        return await self.inner({**scope, "session": self.store(key)}, receive, send)


def websocket_stack(inner):
    """Cookies, then the session. Who the session belongs to is read by the chat
    socket itself, in its first trip to the database (chat.live.socket_work.opening):
    Channels' AuthMiddleware read it on a thread of its own, one socket at a time,
    and a hundred sockets opening at once waited half a second there."""
    return CookieMiddleware(SessionReader(inner))


router = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": SameOriginValidator(websocket_stack(URLRouter(websocket_urlpatterns))),
    }
)


async def application(scope, receive, send):
    runtime.ensure_started()
    await router(scope, receive, send)


warm.warm_up()  # the first reply must not pay for compiling templates

# Everything loaded so far lives as long as the process: keep it out of the cyclic
# collector's full passes, which otherwise stopped the event loop for up to 85 ms
# at a time under load (45 ms with this).
gc.collect()
gc.freeze()
