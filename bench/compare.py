"""This tree against an earlier commit, in one run, on both configurations.

The machine is noisy, so a figure means something only beside the same
measurement of the code it replaces, taken minutes apart. This checks out REF
(a git worktree in a temporary folder), then for the embedded setup and for
PostgreSQL + Redis (when they answer) runs the same load through both trees' app, twice each
in alternation, next to the upstream measured directly:

    make bench-compare                         # against HEAD~1, 50 clients
    python -m bench.compare --baseline main~3 --clients 100
"""

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.apps import ROOT, App, Setup, postgres_available, redis_available, start_upstream
from bench.load import run_app, run_direct


def worktree(ref: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="chat-baseline-")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(folder), ref],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    return folder


def remove_worktree(folder: Path):
    subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT, check=False)
    shutil.rmtree(folder.parent, ignore_errors=True)


async def measure(root: Path, upstream: str, clients: int, args, setup: Setup):
    app = App(upstream, clients, setup, root=root)
    try:
        return await run_app(app, clients, args.ramp, args.duration)
    finally:
        app.stop()


def row(label: str, result, direct) -> str:
    tokens = sum(r.tokens for r in result.replies) or 1
    p50 = result.ttft(50) - direct.ttft(50)
    p99 = result.ttft(99) - direct.ttft(99)
    delivered = result.aggregate_rate / direct.aggregate_rate
    return (
        f"  {label:22} added TTFT p50 {p50:+7.1f} ms, p99 {p99:+7.1f} ms; "
        f"delivered {delivered:6.1%}; frames/reply {result.frames_per_reply():.0f}; "
        f"CPU {result.cpu / tokens * 1000:.3f} ms/token; RSS {result.rss_peak_mb:.0f} MB; "
        f"machine busy {result.machine_share():.0%}; "
        f"replies {len(result.replies)}; errors {result.errors}"
        + (f" {result.error_kinds}" if result.errors else "")
    )


async def main_async(args):
    base = worktree(args.baseline)
    upstream_process, upstream = start_upstream(
        args.tokens, args.rate, args.first_delay, args.markdown
    )
    started = time.monotonic()
    try:
        print(
            f"{args.clients} clients, {args.tokens}-token {'Markdown ' if args.markdown else ''}"
            f"replies at {args.rate:g} tokens/s after "
            f"{args.first_delay * 1000:.0f} ms, {args.duration:g} s a run; baseline "
            f"{args.baseline} ({args.commit}) against this tree."
        )
        configs = [] if args.only_redis else [Setup("embedded (SQLite, in-memory layer)")]
        if not args.only_embedded and redis_available(args.redis_url):
            postgres = args.postgres_url if postgres_available(args.postgres_url) else ""
            name = f"{'PostgreSQL' if postgres else 'SQLite'} + Redis"
            workers = f", {args.workers} processes" if args.workers > 1 else ""
            configs.append(Setup(name + workers, args.redis_url, postgres, args.workers))
        for setup in configs:
            direct = await run_direct(upstream, args.clients, args.ramp, args.duration)
            p50, p99 = direct.ttft(50), direct.ttft(99)
            print(f"\n{setup.name}; direct TTFT p50 {p50:.0f} ms, p99 {p99:.0f} ms")
            for round_ in range(1, args.rounds + 1):
                for label, root in (("baseline", base), ("this tree", ROOT)):
                    result = await measure(root, upstream, args.clients, args, setup)
                    print(row(f"{label}, run {round_}", result, direct), flush=True)
    finally:
        upstream_process.terminate()
        remove_worktree(base)
    print(f"\nComparison took {time.monotonic() - started:.0f} s.")


def main():
    parser = argparse.ArgumentParser(description="This tree against an earlier commit.")
    parser.add_argument("--baseline", default="HEAD~1", help="a git ref")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument(
        "--markdown", action="store_true", help="replies with headings, lists, tables, code"
    )
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--first-delay", type=float, default=0.2)
    parser.add_argument("--ramp", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only-redis", action="store_true", help="skip the embedded setup")
    parser.add_argument("--only-embedded", action="store_true", help="skip Redis")
    parser.add_argument("--workers", type=int, default=1, help="processes, on Redis")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL")
        or "postgres://postgres@127.0.0.1:5432/postgres",
    )
    args = parser.parse_args()
    args.commit = subprocess.check_output(
        ["git", "rev-parse", "--short", args.baseline], cwd=ROOT, text=True
    ).strip()
    try:
        import uvloop  # the clients must not be the bottleneck

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
