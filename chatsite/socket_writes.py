"""Websocket frames go out on the spot when nothing is waiting to be sent before them.

Twisted (under daphne) queues every write and asks the event loop to say when
the socket can take it: one watcher added, a turn of the loop, the send, the
watcher removed. A streaming reply writes a small frame to every socket about
25 times a second, and at 150 streams those four steps per frame were 6% of the
process's CPU, and a turn of latency for every frame.

Here a write to a plain TCP connection whose queue is empty is sent at once;
whatever the socket does not take (it is full: a slow reader) is queued as
before, and Twisted writes it when it can. TLS connections, a connection that
is closing and queued data keep Twisted's own path, so order and back-pressure
are unchanged.
"""

from twisted.internet import tcp

_queued_write = tcp.Connection.write


def write(self, data):
    if (
        type(data) is bytes
        and data
        and not self.TLS
        and self.connected
        and not self.disconnecting
        and not self._writeDisconnected
        and not self.dataBuffer
        and not self._tempDataBuffer
    ):
        sent = self.writeSomeData(data)  # bytes sent, or a lost connection
        if type(sent) is int and sent > 0:
            if sent == len(data):
                return
            data = data[sent:]
    _queued_write(self, data)  # a lost connection is noticed by Twisted's next write


def install():
    tcp.Connection.write = write
