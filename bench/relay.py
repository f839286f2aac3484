"""The relay benchmark: what the app adds on top of the backend's own stream.

In one run it starts a fake OpenAI-compatible upstream (its own process), then
for each number of clients (one conversation each) measures the upstream
directly, and then the app under each setup, with the same load:

- embedded: one process, SQLite and the in-memory channel layer;
- PostgreSQL + Redis, one process;
- PostgreSQL + Redis, two worker processes behind one port (`WORKERS=2`).

Setups whose services do not answer are skipped and say so. For each it
prints added time to first token (p50/p99), delivered tokens against direct,
frames and bytes per reply, app CPU per token and share of a core, peak RSS
and errors; then the knee of each setup: the fewest clients at which added
p99 passes 100 ms; then the added p99 of each client's first reply (sent while
every client was arriving) beside that of the later ones.

    make bench                     # or: python -m bench.relay --help
"""

import argparse
import asyncio
import os
import time

from bench.apps import (
    App,
    Setup,
    postgres_available,
    redis_available,
    start_upstream,
)
from bench.load import Result, run_app, run_direct

KNEE_MS = 100.0
ONE_PROCESS = "PostgreSQL + Redis, 1 process"


def added(app: Result, direct: Result, p: int, first: bool | None = None) -> float:
    return app.ttft(p, first) - direct.ttft(p)


def row(clients: int, direct: Result, app: Result) -> str:
    tokens = sum(r.tokens for r in app.replies) or 1
    delivered = app.aggregate_rate / direct.aggregate_rate if direct.aggregate_rate else 0
    errors = f"{app.errors}" + (f" {app.error_kinds}" if app.errors else "")
    return (
        f"  {clients:7} {added(app, direct, 50):+9.0f} {added(app, direct, 99):+9.0f} "
        f"{delivered:9.3f} {app.frames_per_reply():8.1f} {app.bytes_per_reply():9,.0f} "
        f"{app.cpu / tokens * 1000:8.3f} {app.cpu / app.seconds:6.0%} "
        f"{app.rss_peak_mb:7.0f} {app.machine_share():7.0%} {app.rest_per_reply() * 1000:9.1f}"
        f"  {errors}"
    )


HEADER = (
    "  clients  +TTFT50  +TTFT99  delivered  frames/  bytes/   CPU ms/  CPU of   RSS  machine"
    "  rest ms/  errors\n"
    "             (ms)     (ms)   vs direct   reply    reply    token  a core   (MB)    busy"
    "     reply"
)


def knee(rows: list[tuple[int, float]]) -> int | None:
    """The fewest clients tried at which added p99 passed KNEE_MS; None if it never did."""
    return next((clients for clients, p99 in rows if p99 > KNEE_MS), None)


def knee_text(found: int | None, rows: list) -> str:
    if found is not None:
        return f"{found} clients"
    return f"above {rows[-1][0]} clients (the most tried)" if rows else "not measured"


def setups(args) -> tuple[list[Setup], list[str]]:
    chosen, skipped = [Setup("embedded (SQLite, in-memory layer), 1 process")], []
    if args.only_embedded:
        return chosen, skipped
    if args.only_redis:
        chosen = []
    if not redis_available(args.redis_url):
        return chosen, [f"PostgreSQL + Redis: no Redis at {args.redis_url}"]
    if not postgres_available(args.postgres_url):
        return chosen, [f"PostgreSQL + Redis: no PostgreSQL at {args.postgres_url}"]
    for workers in args.workers:
        name = ONE_PROCESS if workers == 1 else f"PostgreSQL + Redis, {workers} processes"
        chosen.append(Setup(name, args.redis_url, args.postgres_url, workers))
    return chosen, skipped


async def sweep(args) -> dict[str, list]:
    """Every level, direct then each setup, so that each figure sits beside its direct run."""
    levels = [int(x) for x in args.clients.split(",")]
    chosen, skipped = setups(args)
    for reason in skipped:
        print(f"Skipped: {reason}")
    results: dict[str, list] = {setup.name: [] for setup in chosen}
    process, upstream = start_upstream(args.tokens, args.rate, args.first_delay, args.markdown)
    try:
        for clients in levels:
            direct = await run_direct(upstream, clients, args.ramp, args.duration)
            print(
                f"\n{clients} clients; direct: TTFT p50 {direct.ttft(50):.0f} ms, p99 "
                f"{direct.ttft(99):.0f} ms, {direct.aggregate_rate:.0f} tokens/s",
                flush=True,
            )
            for setup in chosen:
                app = App(upstream, clients, setup)
                try:
                    through = await run_app(app, clients, args.ramp, args.duration)
                finally:
                    app.stop()
                results[setup.name].append((clients, direct, through))
                print(f"  {setup.name}:\n{row(clients, direct, through)}", flush=True)
    finally:
        process.terminate()
    return results


def report(results: dict[str, list]):
    knees = {}
    for name, rows in results.items():
        print(f"\n{name}\n{HEADER}")
        for clients, direct, through in rows:
            print(row(clients, direct, through))
        knees[name] = knee([(c, added(t, d, 99)) for c, d, t in rows])
    print(f"\nKnee: the fewest clients at which added time to first token p99 > {KNEE_MS:.0f} ms")
    for name, found in knees.items():
        print(f"  {name:52} {knee_text(found, results[name])}{scaling(name, knees, results)}")
    print(
        "\nAdded p99 (ms) of each client's first reply, sent while all clients were "
        "arriving (connecting, then sending at once), / of the later replies"
    )
    for name, rows in results.items():
        split = "  ".join(
            f"{c}: {added(t, d, 99, True):+.0f} / {added(t, d, 99, False):+.0f}" for c, d, t in rows
        )
        print(f"  {name:52} {split}")


def scaling(name: str, knees: dict, results: dict) -> str:
    """Beside a several-process knee: how many times the one-process knee it is."""
    one = knees.get(ONE_PROCESS)
    if not name.startswith("PostgreSQL") or name == ONE_PROCESS or not one:
        return ""
    if knees[name] is None:  # not reached: past the most clients tried
        return f"; more than {results[name][-1][0] / one:.2f} times the one-process knee"
    return f"; {knees[name] / one:.2f} times the one-process knee"


async def fast_upstream(args):
    """A fast backend must not turn into a flood of frames: at most 25 a second per stream."""
    process, upstream = start_upstream(args.tokens, args.fast_rate, args.first_delay)
    try:
        app = App(upstream, args.fast_clients)
        try:
            through = await run_app(app, args.fast_clients, 0.5, 4.0)
        finally:
            app.stop()
    finally:
        process.terminate()
    fps = through.fps_max()
    verdict = "holds" if fps <= 25.5 else "MISSED"
    print(
        f"\nUpstream at {args.fast_rate:g} tokens/s, {args.fast_clients} clients, embedded: "
        f"at most {fps:.1f} frames/s per stream ({verdict}: <= 25)"
    )


async def main_async(args):
    started = time.monotonic()
    print(
        f"Upstream: {args.tokens}-token replies at {args.rate:g} tokens/s after "
        f"{args.first_delay * 1000:.0f} ms; clients arrive over {args.ramp:g} s and send for "
        f"{args.duration:g} s; one conversation per client."
    )
    report(await sweep(args))
    if args.fast_clients:
        await fast_upstream(args)
    print(f"\nBenchmark took {time.monotonic() - started:.0f} s.")


def main():
    parser = argparse.ArgumentParser(description="Relay benchmark: the app against the backend.")
    # Up to 250: a two-process knee 1.5 times a one-process knee of 150 is past 200. Steps
    # of 25 up to 150, so that a knee's ratio to another is read to within a level.
    parser.add_argument(
        "--clients", default="10,25,50,75,100,125,150,200,250", help="levels, comma-separated"
    )
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument(
        "--markdown", action="store_true", help="replies with headings, lists, tables, code"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="upstream tokens/s per stream")
    parser.add_argument("--first-delay", type=float, default=0.2)
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds over which clients arrive")
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds of new messages (closed loop)"
    )
    parser.add_argument("--fast-rate", type=float, default=200.0)
    parser.add_argument("--fast-clients", type=int, default=20, help="0: skip that check")
    parser.add_argument("--only-embedded", action="store_true", help="skip PostgreSQL + Redis")
    parser.add_argument("--only-redis", action="store_true", help="skip the embedded setup")
    parser.add_argument(
        "--workers",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[1, 2],
        help="PostgreSQL + Redis: processes per run, comma-separated",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL")
        or "postgres://postgres@127.0.0.1:5432/postgres",
        help="a server where the bench may create and drop its own databases",
    )
    args = parser.parse_args()
    try:
        import uvloop  # the clients must not be the bottleneck

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
