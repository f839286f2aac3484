"""The load the benchmark puts on a backend or on the app, and what it records.

Clients arrive evenly over the ramp and send their next message as soon as a
reply completes, until the duration is over. The direct client is a bare
HTTP/1.1 request so that it adds as little as possible; the app clients are
real websocket tabs speaking the page's protocol.
"""

import asyncio
import json
import re
import statistics
import time
from dataclasses import dataclass, field

import httpx
import websockets

from bench.apps import App, machine_cpu, proc_cpu, proc_rss
from tests import frames
from tests.frames import NEW_REPLY

# One per text event of the fake backend (`{"content": "tok "}`, or a piece of Markdown
# holding one "tok"); not the "…_tokens" of its usage report.
TOKEN = re.compile(rb"tok(?!ens)")
REPLY_SECONDS = 60  # a reply that has not ended by then counts as an error
FINAL_STATUS = re.compile(r'<article id="msg-\d+" class="msg assistant status-(\w+)')


class ReplyFailed(Exception):
    """A reply that ended other than complete: it counts as an error, not as a reply."""


@dataclass
class Reply:
    ttft: float = 0.0  # seconds from send to the first text
    first: bool = False  # a client's first reply: sent while every client was arriving
    tokens: int = 0
    in_window: int = 0  # of those, the ones that arrived before the load's end
    frames: int = 0  # frames that carried text
    bytes: int = 0  # everything received for this reply
    first_at: float = 0.0
    last_at: float = 0.0
    gaps: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        span = self.last_at - self.first_at
        return (self.tokens - 1) / span if span > 0 and self.tokens > 1 else 0.0

    @property
    def frames_per_second(self) -> float:
        span = self.last_at - self.first_at
        return (self.frames - 1) / span if span > 0 and self.frames > 1 else 0.0


def pct(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


@dataclass
class Result:
    replies: list[Reply]
    seconds: float  # from the first client's start until the last reply ended
    window: float  # the load's duration: clients send new messages until its end
    cpu: float = float("nan")
    machine_busy: float = float("nan")  # CPU seconds the whole machine was busy meanwhile
    machine_all: float = float("nan")  # CPU seconds it had (the run's time, every core)
    rss_peak_mb: float = float("nan")
    rss_per_stream_kb: float = float("nan")
    peak_streams: int = 0
    errors: int = 0
    error_kinds: dict = field(default_factory=dict)

    def ttft(self, p, first: bool | None = None):
        """Time to first token (ms); of first replies only, or of later ones only."""
        chosen = [r.ttft for r in self.replies if first is None or r.first == first]
        return pct(chosen, p) * 1000

    @property
    def per_stream_rate(self):
        return statistics.median([r.rate for r in self.replies if r.rate]) if self.replies else 0

    @property
    def aggregate_rate(self):
        """Tokens a second that reached the clients while the load ran. Not all tokens
        over all the time: the run ends with the last reply started before the end,
        so one client's reply starting just before it or just after it moved that
        figure by a few percent from run to run, beyond what the app changed."""
        return sum(r.in_window for r in self.replies) / self.window

    def gap_p99(self):
        return pct([g for r in self.replies for g in r.gaps], 99) * 1000

    def frames_per_reply(self):
        return statistics.mean(r.frames for r in self.replies) if self.replies else 0

    def fps_max(self):
        return max((r.frames_per_second for r in self.replies), default=0)

    def machine_share(self) -> float:
        """How busy the machine's cores were, all of them together."""
        return self.machine_busy / self.machine_all

    def rest_per_reply(self) -> float:
        """CPU seconds per reply spent outside the app: PostgreSQL, Redis, the bench's
        upstream and clients, anything else on the machine."""
        return (self.machine_busy - self.cpu) / max(len(self.replies), 1)

    def bytes_per_reply(self):
        return statistics.mean(r.bytes for r in self.replies) if self.replies else 0


# --- clients -------------------------------------------------------------------------


class Active:
    """How many replies are streaming right now (for RSS per stream)."""

    def __init__(self):
        self.now = self.peak = 0

    def __enter__(self):
        self.now += 1
        self.peak = max(self.peak, self.now)

    def __exit__(self, *exc):
        self.now -= 1


async def direct_client(url: str, start: float, stop: float, out: list, active: Active):
    """The backend as a lean client sees it: a raw HTTP/1.1 request, lines read as they come.

    Deliberately not httpx: at 100 streams its per-chunk cost saturated this process
    and made the backend look slower than it is."""
    await asyncio.sleep(max(0, start - time.monotonic()))
    address = httpx.URL(url)
    body = json.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    ).encode()
    request = (
        f"POST {address.raw_path.decode()} HTTP/1.1\r\nHost: {address.host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    while time.monotonic() < stop:
        reply, sent = Reply(), time.monotonic()
        with active:
            reader, writer = await asyncio.open_connection(address.host, address.port)
            writer.write(request)
            try:
                while data := await reader.read(65536):  # the backend closes after a reply
                    reply.bytes += len(data)
                    count = len(TOKEN.findall(data))
                    if not count:
                        continue
                    now = time.monotonic()
                    if not reply.tokens:
                        reply.ttft, reply.first_at = now - sent, now
                    else:
                        reply.gaps.append(now - reply.last_at)
                    reply.tokens += count
                    if now <= stop:
                        reply.in_window = reply.tokens
                    reply.frames += 1
                    reply.last_at = now
            finally:
                writer.close()
        out.append(reply)


class Errors:
    """Replies that did not complete: a closed socket, a refusal, a time-out."""

    def __init__(self):
        self.count = 0
        self.kinds: dict[str, int] = {}

    def add(self, kind: str):
        self.count += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1


async def app_client(
    base: str, conversation, cookie, start, stop, out: list, active: Active, errors=None
):
    """One tab: send, read the reply to its end, send again until `stop`. A socket that
    closes or a reply that never ends counts as an error, and the tab reconnects."""
    errors = errors if errors is not None else Errors()
    await asyncio.sleep(max(0, start - time.monotonic()))
    mine = []
    while time.monotonic() < stop:
        try:
            await _app_session(base, conversation, cookie, stop, mine, active)
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else "none"
            errors.add(f"socket closed ({code})")
        except (TimeoutError, OSError) as failure:
            errors.add(type(failure).__name__)
        except RuntimeError:
            errors.add("refused")
        except ReplyFailed as failed:
            errors.add(f"reply {failed}")
    if mine:
        mine[0].first = True
    out.extend(mine)


def _connect(base, conversation, cookie):
    url = base.replace("http://", "ws://") + f"/ws/chat/{conversation}/"
    return websockets.connect(
        url, origin=base, additional_headers={"Cookie": cookie}, max_size=None, open_timeout=60
    )


async def _app_session(base, conversation, cookie, stop, out, active):
    """Send and read replies until `stop`; with `stop` None, exactly one."""
    async with _connect(base, conversation, cookie) as socket:
        await _converse(socket, stop, out, active)


async def _converse(socket, stop, out, active):
    while stop is None or time.monotonic() < stop:
        reply = Reply()
        # One deadline for the whole reply: wait_for made a task and a timer per frame,
        # client CPU taken from the machine the app runs on.
        with active:
            async with asyncio.timeout(REPLY_SECONDS):
                await _send_and_read(socket, reply, stop)
        out.append(reply)
        if stop is None:
            return


async def _send_and_read(socket, reply: Reply, stop):
    """Send a message, then read frames until its reply's final one."""
    sent, reply_id = time.monotonic(), None
    await socket.send(json.dumps({"command": "send", "content": "go"}))
    while True:
        frame = await socket.recv()
        reply.bytes += len(frame)
        if reply_id is None and (found := NEW_REPLY.search(frame)):
            reply_id = found.group(1)
            final_marker = f'<article id="msg-{reply_id}"'
            page = frames.Reply()
        if reply_id and _carries_text(frame, page, int(reply_id)):
            now = time.monotonic()
            shown = page.parts["frozen"].count("tok") + page.parts["tail"].count("tok")
            if not reply.tokens:
                reply.ttft, reply.first_at = now - sent, now
            else:
                reply.gaps.append(now - reply.last_at)
            reply.tokens = shown
            if stop is None or now <= stop:
                reply.in_window = shown
            reply.frames += 1
            reply.last_at = now
        elif reply_id and frame.startswith(final_marker) and "outerHTML" in frame:
            if (ended := FINAL_STATUS.match(frame)) and ended[1] != "complete":
                raise ReplyFailed(ended[1])  # an error, a cut or an interruption
            return
        elif re.search(r'class="notice[ "]', frame):
            raise RuntimeError(f"the app refused: {frame}")


def _carries_text(frame: str, page, reply_id: int) -> bool:
    """Whether a frame changed the reply's text (page parts updated in place).

    Commits before live Markdown sent plain-text deltas (`<span id="body-N"
    hx-swap-oob="beforeend">`); they are read too, so that bench.compare can
    measure such a commit beside this one."""
    if frame.startswith('<span id="body-') and 'hx-swap-oob="beforeend"' in frame:
        page.parts["tail"] += frame
        return True
    return frame.startswith("<div ") and page.apply(frame, reply_id)


async def run_direct(upstream: str, clients: int, ramp: float, duration: float) -> Result:
    out, active = [], Active()
    begin = time.monotonic()
    await asyncio.gather(
        *[
            direct_client(upstream + "/v1/chat/completions", begin + i * ramp / clients,
                          begin + duration, out, active)
            for i in range(clients)
        ]
    )  # fmt: skip
    return Result(out, time.monotonic() - begin, duration, peak_streams=active.peak)


async def warm_every_worker(app: App, spare: list, patience: float = 60):
    """A whole reply on one spare conversation per worker process, so that none meets
    the load with cold caches and a small pool. Which worker takes a connection is the
    kernel's choice, and a worker still starting takes none (the port answers as soon
    as the first is up): a socket that reached a worker already warmed is closed, and
    another opened a moment later."""
    workers, kept = app.workers(), {}
    deadline = time.monotonic() + patience
    try:
        while len(kept) < len(workers) and time.monotonic() < deadline:
            before = {pid: app.connections(pid) for pid in workers}
            socket = await _connect(app.url, *spare[len(kept)])
            took = [pid for pid in workers if app.connections(pid) > before[pid]]
            if took and took[0] not in kept:
                kept[took[0]] = socket
            else:
                await socket.close()
                await asyncio.sleep(0.1)
        if len(kept) < len(workers):
            print(f"  ({len(workers) - len(kept)} worker(s) could not be warmed)", flush=True)
        await asyncio.gather(*[_converse(socket, None, [], Active()) for socket in kept.values()])
    finally:
        for socket in kept.values():
            await socket.close()


async def run_app(app: App, clients: int, ramp: float, duration: float) -> Result:
    out, active = [], Active()
    pid = app.process.pid
    await warm_every_worker(app, app.tabs[clients:])
    rss_base, cpu_base, (busy_base, all_base) = proc_rss(pid), proc_cpu(pid), machine_cpu()
    peak = rss_base
    begin = time.monotonic()
    done = asyncio.Event()

    async def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc_rss(pid))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    errors = Errors()
    await asyncio.gather(
        *[
            app_client(app.url, conversation, cookie, begin + i * ramp / clients,
                       begin + duration, out, active, errors)
            for i, (conversation, cookie) in enumerate(app.tabs[:clients])
        ]
    )  # fmt: skip
    done.set()
    await sampler
    seconds = time.monotonic() - begin
    result = Result(out, seconds, duration, cpu=proc_cpu(pid) - cpu_base, peak_streams=active.peak)
    result.errors, result.error_kinds = errors.count, errors.kinds
    busy, every = machine_cpu()
    result.machine_busy, result.machine_all = busy - busy_base, every - all_base
    result.rss_peak_mb = peak / 2**20
    result.rss_per_stream_kb = (peak - rss_base) / 1024 / max(active.peak, 1)
    return result
