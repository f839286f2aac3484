"""One timer that streams every reply of the benchmark's fake upstream.

At 150 streams of 50 tokens a second, a coroutine per stream that wakes for
each token cost the fake about 40 µs a token: 0.3 of a core on the 2 cores it
shares with the app under test. A real backend runs on a machine of its own,
so the fake's cost is the benchmark's error, not the app's. Here one callback
per tick writes each stream's next token straight to its transport, and a
stream's coroutine wakes once, when its tokens are out.

Ticks keep a fixed grid, so time spent writing does not stretch the interval.
A client that hung up (its transport closing) ends its stream with
ConnectionResetError, as a failed write does on the coroutine path.
"""

import asyncio


class Ticker:
    def __init__(self, interval: float):
        self.interval = interval
        self.streams: dict[asyncio.Future, tuple[asyncio.Transport, list[bytes], list[int]]] = {}
        self.at = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def stream(self, transport: asyncio.Transport, pieces: list[bytes]) -> asyncio.Future:
        """Write one of `pieces` per tick from the next tick on; done as the last goes out."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        if not pieces:
            done.set_result(None)
            return done
        self.streams[done] = (transport, pieces, [0])
        if self.timer is None:
            self._arm(loop)
        return done

    def _arm(self, loop: asyncio.AbstractEventLoop):
        """The next tick, on the grid (or now, if the grid fell behind)."""
        self.at = max(self.at + self.interval, loop.time())
        self.timer = loop.call_at(self.at, self._tick)

    def _tick(self):
        for done, (transport, pieces, sent) in list(self.streams.items()):
            if done.done():  # its request was cancelled (the server is stopping)
                del self.streams[done]
            elif transport.is_closing():
                del self.streams[done]
                done.set_exception(ConnectionResetError("the client hung up"))
            else:
                transport.write(pieces[sent[0]])
                sent[0] += 1
                if sent[0] == len(pieces):
                    del self.streams[done]
                    done.set_result(None)
        self.timer = None
        if self.streams:
            self._arm(asyncio.get_running_loop())
