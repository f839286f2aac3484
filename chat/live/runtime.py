"""Each process's background work, started and stopped from this one place.

- the partial-text saver (chat.live.saver), about once a second;
- the orphan sweep (chat.live.recovery), at start and every few seconds;
- the socket watcher (chat.live.presence), twice a second;
- the event-loop lag probe (chat.live.metrics);
- the listener for stop and snapshot commands to its replies (chat.live.control);
- at shutdown, every running reply saved as interrupted with all its text.

`ensure_started()` runs on the server's event loop the first time the ASGI
application sees a connection (chatsite/asgi.py), and again after a task died;
it is cheap to call. A test's event loop gets its own set.
"""

import asyncio
import contextvars
import logging
import weakref

from chat.live import control, jobs, metrics, presence, recovery, saver

log = logging.getLogger(__name__)

_tasks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict]" = weakref.WeakKeyDictionary()
LAG_PROBE_SECONDS = 0.5


async def measure_loop_lag(running: dict):
    """How late this loop wakes a timer: the wait every delta and command also sees."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        await asyncio.sleep(LAG_PROBE_SECONDS)
        metrics.LOOP_LAG.observe(max(0.0, loop.time() - asked - LAG_PROBE_SECONDS))


WORKERS = {
    "saver": saver.save_forever,
    "sweeper": recovery.sweep_forever,
    "watcher": presence.watch_forever,
    "lag": measure_loop_lag,
    "control": control.listen_forever,
}
metrics.ACTIVE_STREAMS.set_function(lambda: len(jobs.JOBS))
metrics.OPEN_SOCKETS.set_function(presence.count_all)


def ensure_started():
    loop = asyncio.get_running_loop()
    tasks = _tasks.setdefault(loop, {})
    for name, work in WORKERS.items():
        task = tasks.get(name)
        if task is None or task.done():
            # A fresh context: nothing of the request that happened to start it.
            tasks[name] = loop.create_task(work(jobs.JOBS), context=contextvars.Context())
            tasks[name].add_done_callback(_log_death)


def _log_death(task: asyncio.Task):
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "background task died; it restarts with the next connection", exc_info=task.exception()
        )


async def shutdown(grace_seconds: float = 8.0):
    """Stop every running reply as `interrupted` and save all its text (graceful restarts)."""
    await jobs.shutdown(grace_seconds)
    for task in _tasks.pop(asyncio.get_running_loop(), {}).values():
        task.cancel()
