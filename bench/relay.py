"""The relay benchmark: what the app adds on top of the backend's own stream.

In one run it starts a fake OpenAI-compatible upstream (its own process), then
for each scenario drives N concurrent clients twice, the same way each time:

- direct: httpx streaming straight from the upstream (what the backend gives);
- through the app: real websocket clients on the app under daphne (its own process).

Clients arrive evenly over the ramp and send their next message as soon as a
reply completes, until the duration is over. It prints the two side by side
(time to first token, delivered tokens/s, frame gaps and rates, CPU, RSS, bytes)
and then looks for the knee: the number of clients at which the added time to
first token p99 passes 100 ms, on the embedded setup and on Redis.

    make bench                     # or: python -m bench.relay --help
"""

import argparse
import asyncio
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import websockets

from tests.frames import NEW_REPLY

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- measurements ------------------------------------------------------------------


@dataclass
class Reply:
    ttft: float = 0.0  # seconds from send to the first text
    tokens: int = 0
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
    seconds: float
    cpu: float = float("nan")
    rss_peak_mb: float = float("nan")
    rss_per_stream_kb: float = float("nan")
    peak_streams: int = 0
    errors: int = 0
    error_kinds: dict = field(default_factory=dict)

    def ttft(self, p):
        return pct([r.ttft for r in self.replies], p) * 1000

    @property
    def per_stream_rate(self):
        return statistics.median([r.rate for r in self.replies if r.rate]) if self.replies else 0

    @property
    def aggregate_rate(self):
        return sum(r.tokens for r in self.replies) / self.seconds

    def gap_p99(self):
        return pct([g for r in self.replies for g in r.gaps], 99) * 1000

    def frames_per_reply(self):
        return statistics.mean(r.frames for r in self.replies) if self.replies else 0

    def fps_max(self):
        return max((r.frames_per_second for r in self.replies), default=0)

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
    await asyncio.sleep(max(0, start - time.monotonic()))
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    async with httpx.AsyncClient(timeout=60) as client:
        while time.monotonic() < stop:
            reply, sent = Reply(), time.monotonic()
            with active:
                async with client.stream("POST", url, json=body) as response:
                    async for line in response.aiter_lines():
                        reply.bytes += len(line) + 1
                        if not line.startswith("data: {") or '"content"' not in line:
                            continue
                        now = time.monotonic()
                        count = line.count("tok")
                        if not reply.tokens:
                            reply.ttft, reply.first_at = now - sent, now
                        else:
                            reply.gaps.append(now - reply.last_at)
                        reply.tokens += count
                        reply.frames += 1
                        reply.last_at = now
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
    while time.monotonic() < stop:
        try:
            await _app_session(base, conversation, cookie, stop, out, active)
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else "none"
            errors.add(f"socket closed ({code})")
        except (TimeoutError, OSError) as failure:
            errors.add(type(failure).__name__)
        except RuntimeError:
            errors.add("refused")


async def _app_session(base, conversation, cookie, stop, out, active):
    url = base.replace("http://", "ws://") + f"/ws/chat/{conversation}/"
    async with websockets.connect(
        url, origin=base, additional_headers={"Cookie": cookie}, max_size=None, open_timeout=60
    ) as socket:
        while time.monotonic() < stop:
            reply, sent = Reply(), time.monotonic()
            reply_id = None
            with active:
                await socket.send(json.dumps({"command": "send", "content": "go"}))
                while True:
                    frame = await asyncio.wait_for(socket.recv(), 60)
                    reply.bytes += len(frame)
                    if reply_id is None and (found := NEW_REPLY.search(frame)):
                        reply_id = found.group(1)
                        final_marker = f'<article id="msg-{reply_id}"'
                    if frame.startswith('<span id="body-') and 'hx-swap-oob="beforeend"' in frame:
                        now = time.monotonic()
                        if not reply.tokens:
                            reply.ttft, reply.first_at = now - sent, now
                        else:
                            reply.gaps.append(now - reply.last_at)
                        reply.tokens += frame.count("tok")
                        reply.frames += 1
                        reply.last_at = now
                    elif reply_id and frame.startswith(final_marker) and "outerHTML" in frame:
                        break
                    elif re.search(r'class="notice[ "]', frame):
                        raise RuntimeError(f"the app refused: {frame}")
            out.append(reply)


# --- processes -----------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


class App:
    """The app under daphne on a throw-away database, with one user and many conversations."""

    def __init__(self, upstream: str, clients: int, redis_url: str = "", root: Path = ROOT):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder = Path(tempfile.mkdtemp(prefix="chat-bench-"))
        self.env = {
            **os.environ,
            "DEBUG": "false",
            "SECRET_KEY": "bench-" + "x" * 50,
            "PROVIDER_KEYS_SECRET": "bench-provider-keys-" + secrets.token_urlsafe(32),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "false",
            "SQLITE_PATH": str(folder / "bench.sqlite3"),
            "DATABASE_URL": "",
            "REDIS_URL": redis_url,
            "MAX_CONCURRENT_GENERATIONS": "1000000",
            "MAX_SOCKETS_PER_USER": "1000000",  # the bench is one user with many tabs
            "LOG_LEVEL": "error",
        }
        setup = subprocess.run(
            [sys.executable, "-m", "bench.setup_app", upstream, str(clients)],
            cwd=root,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        data = json.loads(setup.stdout.strip().splitlines()[-1])
        self.cookie, self.conversations = data["cookie"], data["conversations"]
        self.log = open(folder / "daphne.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
             "chatsite.asgi:application"],
            cwd=root, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for_port(self.port)

    def stop(self):
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30):
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def start_upstream(tokens: int, rate: float, first_delay: float):
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_backend", "--tokens", str(tokens), "--rate", str(rate),
         "--first-delay", str(first_delay)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    port = int(process.stdout.readline())
    return process, f"http://127.0.0.1:{port}"


# --- scenarios -------------------------------------------------------------------------


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
    return Result(out, time.monotonic() - begin, peak_streams=active.peak)


async def run_app(app: App, clients: int, ramp: float, duration: float) -> Result:
    out, active = [], Active()
    pid = app.process.pid
    # One reply first, so that imports and caches are warm before measuring.
    await app_client(
        app.url, app.conversations[-1], app.cookie, 0, time.monotonic() + 0.01, [], Active()
    )
    rss_base, cpu_base = proc_rss(pid), proc_cpu(pid)
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
            app_client(app.url, app.conversations[i], app.cookie, begin + i * ramp / clients,
                       begin + duration, out, active, errors)
            for i in range(clients)
        ]
    )  # fmt: skip
    done.set()
    await sampler
    seconds = time.monotonic() - begin
    result = Result(out, seconds, cpu=proc_cpu(pid) - cpu_base, peak_streams=active.peak)
    result.errors, result.error_kinds = errors.count, errors.kinds
    result.rss_peak_mb = peak / 2**20
    result.rss_per_stream_kb = (peak - rss_base) / 1024 / max(active.peak, 1)
    return result


def table(title: str, direct: Result, app: Result):
    d, a = direct, app
    rows = [
        ("replies measured", f"{len(direct.replies)}", f"{len(app.replies)}", ""),
        ("errors (closed sockets, refusals)", "", f"{app.errors} {app.error_kinds or ''}", ""),
        ("time to first token p50", f"{direct.ttft(50):.1f} ms", f"{app.ttft(50):.1f} ms",
         f"+{app.ttft(50) - direct.ttft(50):.1f} ms"),
        ("time to first token p99", f"{direct.ttft(99):.1f} ms", f"{app.ttft(99):.1f} ms",
         f"+{app.ttft(99) - direct.ttft(99):.1f} ms"),
        ("tokens/s per stream (median)", f"{d.per_stream_rate:.1f}", f"{a.per_stream_rate:.1f}",
         f"{a.per_stream_rate / d.per_stream_rate:.1%}"),
        ("tokens/s aggregate", f"{direct.aggregate_rate:.0f}", f"{app.aggregate_rate:.0f}",
         f"{app.aggregate_rate / direct.aggregate_rate:.1%}"),
        ("inter-frame gap p99", f"{direct.gap_p99():.1f} ms", f"{app.gap_p99():.1f} ms", ""),
        ("frames per reply", f"{d.frames_per_reply():.1f}", f"{a.frames_per_reply():.1f}", ""),
        ("frames/s per stream (max)", f"{direct.fps_max():.1f}", f"{app.fps_max():.1f}", ""),
        ("bytes received per reply", f"{d.bytes_per_reply():,.0f}", f"{a.bytes_per_reply():,.0f}",
         ""),
        ("app CPU seconds", "", f"{app.cpu:.1f} s in {app.seconds:.0f} s", ""),
        ("app peak RSS", "", f"{app.rss_peak_mb:.1f} MB", ""),
        ("app RSS growth per active stream", "", f"{app.rss_per_stream_kb:.0f} KB "
         f"({app.peak_streams} streams)", ""),
    ]  # fmt: skip
    print(f"\n{title}")
    print(f"  {'':34}{'direct':>16}{'through the app':>22}{'difference':>14}")
    for name, a, b, c in rows:
        print(f"  {name:34}{a:>16}{b:>22}{c:>14}")


def added_ttft(app: Result, direct: Result) -> float:
    """What the app adds to time to first token, read conservatively: the larger of the
    p50 and p99 differences (a saturated upstream can inflate the direct p99 alone)."""
    return max(app.ttft(50) - direct.ttft(50), app.ttft(99) - direct.ttft(99))


def verdicts(main: Result, direct: Result, fast: Result):
    checks = [
        ("added time to first token (p50 and p99) <= 50 ms", added_ttft(main, direct) <= 50),
        (
            "delivered tokens/s >= 99% of direct",
            main.aggregate_rate >= 0.99 * direct.aggregate_rate,
        ),
        ("<= 25 frames/s per stream at 50 tok/s", main.fps_max() <= 25.5),
        ("<= 25 frames/s per stream at 200 tok/s", fast.fps_max() <= 25.5),
        ("app RSS growth <= 300 KB per active stream", main.rss_per_stream_kb <= 300),
    ]
    print("\nTargets")
    for name, ok in checks:
        print(f"  {'holds ' if ok else 'MISSED'}  {name}")


def redis_available(url: str) -> bool:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return True
    except Exception:
        return False


async def knee(upstream, levels, ramp, duration, redis_url="") -> str:
    for clients in levels:
        direct = await run_direct(upstream, clients, ramp, duration)
        app = App(upstream, clients, redis_url)
        try:
            through = await run_app(app, clients, ramp, duration)
        finally:
            app.stop()
        added = added_ttft(through, direct)
        p50 = through.ttft(50) - direct.ttft(50)
        p99 = through.ttft(99) - direct.ttft(99)
        print(
            f"    {clients:5} clients: added time to first token {added:7.1f} ms "
            f"(p50 {p50:+.1f}, p99 {p99:+.1f}); "
            f"app CPU {through.cpu / through.seconds:.0%} of a core"
        )
        if added > 100:
            return f"{clients} clients"
    return f"above {levels[-1]} clients (the most tried)"


async def main_async(args):
    upstream_process, upstream = start_upstream(args.tokens, args.rate, args.first_delay)
    fast_process, fast_upstream = start_upstream(args.tokens, args.fast_rate, args.first_delay)
    started = time.monotonic()
    try:
        print(f"Upstream: {args.tokens}-token replies at {args.rate:g} tokens/s after "
              f"{args.first_delay * 1000:.0f} ms; {args.clients} clients over {args.ramp:g} s, "
              f"{args.duration:g} s each run.")  # fmt: skip
        direct = await run_direct(upstream, args.clients, args.ramp, args.duration)
        app = App(upstream, args.clients)
        try:
            through = await run_app(app, args.clients, args.ramp, args.duration)
        finally:
            app.stop()
        table(
            f"Embedded (SQLite, in-memory channel layer), {args.clients} clients", direct, through
        )

        fast_direct = await run_direct(fast_upstream, args.fast_clients, 0.5, args.fast_duration)
        app = App(fast_upstream, args.fast_clients)
        try:
            fast = await run_app(app, args.fast_clients, 0.5, args.fast_duration)
        finally:
            app.stop()
        table(
            f"Upstream at {args.fast_rate:g} tokens/s, {args.fast_clients} clients",
            fast_direct,
            fast,
        )
        verdicts(through, direct, fast)

        levels = [int(x) for x in args.knee.split(",")] if args.knee else []
        if levels:
            print(
                f"\nKnee ({args.knee_tokens}-token replies; clients where added TTFT p99 > 100 ms)"
            )
            short_process, short = start_upstream(args.knee_tokens, args.rate, args.first_delay)
            try:
                print("  embedded:")
                embedded = await knee(short, levels, args.ramp, args.knee_duration)
                if redis_available(args.redis_url):
                    print(f"  Redis ({args.redis_url}):")
                    on_redis = await knee(
                        short, levels, args.ramp, args.knee_duration, args.redis_url
                    )
                else:
                    on_redis = f"not measured: no Redis at {args.redis_url}"
            finally:
                short_process.terminate()
            print(f"  knee, embedded: {embedded}")
            print(f"  knee, Redis:    {on_redis}")
    finally:
        upstream_process.terminate()
        fast_process.terminate()
    print(f"\nBenchmark took {time.monotonic() - started:.0f} s.")


def main():
    parser = argparse.ArgumentParser(description="Relay benchmark: the app against the backend.")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="upstream tokens/s per stream")
    parser.add_argument("--first-delay", type=float, default=0.2)
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds over which clients arrive")
    parser.add_argument("--duration", type=float, default=14.0, help="seconds of new messages")
    parser.add_argument("--fast-rate", type=float, default=200.0)
    parser.add_argument("--fast-clients", type=int, default=20)
    parser.add_argument("--fast-duration", type=float, default=4.0)
    parser.add_argument("--knee", default="25,50,100,200", help="client counts to try; empty: skip")
    parser.add_argument("--knee-tokens", type=int, default=100)
    parser.add_argument("--knee-duration", type=float, default=4.0)
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
