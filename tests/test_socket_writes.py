"""chatsite.socket_writes: a write to an idle socket goes out at once; the rest queue.

Real sockets (a connected pair), Twisted's own TCP connection class, and a
reactor that only records which sockets asked to be told when writable.
"""

import socket

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol

from chatsite import socket_writes


class RecordingReactor:
    def __init__(self):
        self.writers = set()

    def addWriter(self, writer):  # noqa: N802 - Twisted's names
        self.writers.add(writer)

    def removeWriter(self, writer):  # noqa: N802
        self.writers.discard(writer)

    def addReader(self, reader):  # noqa: N802
        pass

    def removeReader(self, reader):  # noqa: N802
        pass


@pytest.fixture
def pair(monkeypatch):
    monkeypatch.setattr(tcp.Connection, "write", socket_writes.write)
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    reactor = RecordingReactor()
    connection = tcp.Connection(ours, Protocol(), reactor)
    connection.connected = 1
    theirs.settimeout(2)
    yield connection, theirs, reactor
    ours.close()
    theirs.close()


def read_exactly(sock, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += sock.recv(size - len(data))
    return data


def test_a_write_to_an_idle_socket_is_sent_at_once(pair):
    connection, theirs, reactor = pair
    connection.write(b"frame one")
    connection.write(b"frame two")
    assert read_exactly(theirs, 18) == b"frame oneframe two"
    assert not reactor.writers  # nothing queued, no watcher asked for


def test_what_a_full_socket_does_not_take_is_queued_in_order(pair):
    connection, theirs, reactor = pair
    big = bytes(range(256)) * 4096  # 1 MiB: more than the socket buffers hold
    connection.write(big)
    assert reactor.writers == {connection}  # the rest waits for Twisted
    connection.write(b"after")  # queued behind it, not sent ahead
    received = b""
    while len(received) < len(big) + 5:
        connection.doWrite()  # what the reactor does when the socket can take more
        received += theirs.recv(1 << 20)
    assert received == big + b"after"
    assert not reactor.writers  # all sent: the watcher is gone


def test_a_closing_connection_keeps_twisteds_path(pair):
    connection, theirs, reactor = pair
    connection.disconnecting = True
    connection.write(b"last words")
    assert reactor.writers == {connection}
    theirs.setblocking(False)
    with pytest.raises(BlockingIOError):
        theirs.recv(100)  # not sent on the spot


def test_a_write_to_a_lost_connection_is_left_to_twisted(pair):
    connection, theirs, reactor = pair
    theirs.close()
    connection.write(b"x" * 100_000)  # the peer is gone: the send fails, nothing raises
    assert reactor.writers == {connection}  # Twisted's next write notices and closes
