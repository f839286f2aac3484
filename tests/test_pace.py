"""Adaptive coalescing: a late event loop makes replies send fewer, larger frames."""

import asyncio
import time

from chat.live.pace import Pace


def test_the_batch_interval_grows_while_the_loop_runs_late_and_recovers(settings):
    settings.STREAM_BATCH_SECONDS = 0.04
    pace = Pace()
    assert pace.interval() == 0.04  # a loop that keeps time: the usual 25 frames a second
    for _ in range(60):
        pace.observe(0.05)  # every batch timer fires 50 ms late
    assert 0.1 < pace.interval() < Pace.MAX_SECONDS
    for _ in range(200):
        pace.observe(1.0)  # hopelessly late
    assert pace.interval() == Pace.MAX_SECONDS  # text still shows four times a second
    for _ in range(300):
        pace.observe(0.0)
    assert pace.interval() < 0.041  # back to normal once the load is gone


def test_many_running_replies_share_the_process_frames(settings):
    settings.STREAM_BATCH_SECONDS, settings.STREAM_FRAMES_PER_SECOND = 0.04, 1500
    running = [10]
    pace = Pace(running=lambda: running[0])
    assert pace.interval() == 0.04  # few replies: each at its usual 25 frames a second
    running[0] = 60
    assert pace.interval() == 0.04  # 60 x 25 = 1500: still within the budget
    running[0] = 150
    assert abs(pace.interval() - 0.1) < 1e-9  # 150 share 1500 frames: 10 each
    pace.observe(0.5)  # a late loop stretches it further
    assert pace.interval() > 0.1
    running[0] = 10_000
    assert pace.interval() == Pace.MAX_SECONDS  # never rarer than four times a second


async def test_waiting_measures_how_late_the_timer_fired(settings):
    settings.STREAM_BATCH_SECONDS = 0.04
    pace, seen = Pace(), []
    pace.observe = seen.append
    waiting = asyncio.create_task(pace.wait())
    await asyncio.sleep(0)  # its 40 ms timer is set
    time.sleep(0.1)  # noqa: ASYNC251 - the point: the event loop is busy for 100 ms
    await waiting
    assert len(seen) == 1 and 0.05 <= seen[0] < 0.5  # it fired about 60 ms late


def _job(monkeypatch):
    """A job with nowhere to publish: the frames it would send are collected instead."""
    import uuid

    from chat.live import events, jobs
    from chat.plan import Plan
    from providers.base import ChatRequest, Endpoint

    sent = []

    async def publish(conversation_id, message_id, seq, frames):
        sent.append(frames)

    monkeypatch.setattr(events, "publish_delta", publish)
    plan = Plan(1, 1, uuid.uuid4(), "p", Endpoint("openai", "http://x"), ChatRequest("m", []))
    return jobs.Job(plan), sent


async def test_markdown_being_typed_is_redrawn_at_most_so_often_plain_prose_every_time(
    monkeypatch,
):
    from chat.live import publishing

    monkeypatch.setattr(publishing, "SLOW_TAIL_SECONDS", 3600)  # never due again, for the test
    job, sent = _job(monkeypatch)
    for words in ("Plain", " words", " flow"):
        job.take(words)
        await job.flush()
    assert len(sent) == 3  # prose: every flush
    job.take("\n\n- a list **item")
    await job.flush()  # the first parse is due at once
    job.take("** and more")
    await job.flush()
    assert len(sent) == 4 and job.answer_changed  # held back, not lost
    job.take("\n- two")
    job.done = True  # the reply ended: whatever is held goes out
    await job.flush()
    assert len(sent) == 5 and not job.answer_changed
    assert "two" in sent[-1][0] and "and more" in sent[-1][0]


async def test_a_late_loop_stretches_markdown_redraws_but_not_prose_or_code(monkeypatch, settings):
    from chat.live import publishing

    settings.STREAM_BATCH_SECONDS = 0.04
    monkeypatch.setattr(publishing, "PACE", Pace())
    job, sent = _job(monkeypatch)
    job.take("- a list **item")
    await job.flush()  # parsed
    job.last_parse = time.monotonic() - 0.2  # 200 ms ago: due again at ten a second
    job.take(" more")
    assert job._answer_due()
    for _ in range(300):
        publishing.PACE.observe(1.0)  # the loop runs hopelessly late
    assert not job._answer_due()  # now held: redraws stretch to about 0.6 s
    job.last_parse = time.monotonic() - 0.7
    assert job._answer_due()
    job.take("\n\n```py\nx = 1\n")
    await job.flush()
    job.take("y = 2")
    assert job._answer_due()  # code (like prose) is appended at every flush, however late


async def test_a_wait_cut_short_ends_at_once_and_is_not_lateness(settings):
    settings.STREAM_BATCH_SECONDS = 5.0
    pace, seen = Pace(), []
    pace.observe = seen.append
    nap = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(pace.wait(nap))
    await asyncio.sleep(0.01)
    nap.set_result(True)
    await asyncio.wait_for(waiting, 0.5)  # not five seconds
    assert seen == []


async def test_a_reply_that_ends_mid_interval_sends_its_last_delta_at_once(monkeypatch, settings):
    """The page waits for the final frame, which follows the last delta: the rest of a
    publishing interval (stretched under load) must not hold every reply's ending."""
    from chat.live import publishing

    settings.STREAM_BATCH_SECONDS = 5.0
    monkeypatch.setattr(publishing, "PACE", Pace())
    job, sent = _job(monkeypatch)
    job.shown.set()
    publishing = asyncio.create_task(job.publish_loop())
    job.take("First")
    await asyncio.sleep(0.05)
    assert len(sent) == 1 and job.nap is not None  # published; now resting for 5 s
    job.take(" and last")
    job.wake()  # the upstream's reply ended
    await asyncio.wait_for(publishing, 0.5)
    assert len(sent) == 2 and "and last" in sent[-1][0]
