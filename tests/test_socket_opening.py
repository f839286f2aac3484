"""chatsite.socket_opening: autobahn formats a new connection's settings only for debug logs."""

from pprint import pformat

import pytest
import txaio
from autobahn.twisted import websocket  # noqa: F401 - selects Twisted for txaio, as daphne does
from autobahn.websocket import protocol

from chatsite import socket_opening


@pytest.fixture
def installed(monkeypatch):
    monkeypatch.setattr(protocol, "pformat", protocol.pformat)  # put back afterwards
    level = txaio.get_global_log_level()
    socket_opening.install()
    yield
    txaio.set_global_log_level(level)


def test_a_connections_settings_are_formatted_only_while_debugging(installed):
    settings = [("openHandshakeTimeout", 5, "WebSocketServerFactory"), ("autoPingInterval", 0, "x")]
    txaio.set_global_log_level("info")
    assert protocol.pformat(settings) == socket_opening.STAND_IN
    txaio.set_global_log_level("debug")
    assert protocol.pformat(settings) == pformat(settings)
