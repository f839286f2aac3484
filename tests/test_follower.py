"""The resync rules of one socket, without sockets: chat.live.follower.ReplyFollower."""

import inspect

from channels.consumer import AsyncConsumer

from chat.live.follower import DROP, FORWARD, HOLD, RESYNC, ReplyFollower


def test_deltas_in_order_are_forwarded():
    follower = ReplyFollower()
    assert follower.delta(7, 1, "Hel").payloads == ["Hel"]
    step = follower.delta(7, 2, "lo")
    assert (step.action, step.payloads) == (FORWARD, ["lo"])


def test_a_gap_asks_for_a_snapshot_and_holds_until_it_comes():
    follower = ReplyFollower()
    follower.delta(7, 1, "a")
    assert follower.delta(7, 3, "c").action == RESYNC  # seq 2 was lost
    assert follower.delta(7, 4, "d").action == HOLD
    step = follower.snapshot(7, 3, "abc")  # the job's text up to seq 3
    assert (step.action, step.payloads, step.replace) == (FORWARD, ["abc", "d"], True)
    assert follower.delta(7, 5, "e").payloads == ["e"]


def test_joining_mid_reply_waits_for_the_snapshot_however_the_race_goes():
    # Deltas before the snapshot, some covered by it and some not.
    follower = ReplyFollower()
    assert follower.start_resync(9)
    assert not follower.start_resync(9)  # asked once
    for seq, text in [(5, "e"), (6, "f"), (7, "g")]:
        assert follower.delta(9, seq, text).action == HOLD
    step = follower.snapshot(9, 6, "abcdef")
    assert step.payloads == ["abcdef", "g"]  # 5 and 6 were in the snapshot: dropped
    # The snapshot first, then a delta it already covered.
    other = ReplyFollower()
    other.start_resync(4)
    assert other.snapshot(4, 2, "ab").payloads == ["ab"]
    assert other.delta(4, 2, "b").action == DROP
    assert other.delta(4, 3, "c").payloads == ["c"]


def test_a_duplicate_delta_or_snapshot_is_dropped():
    follower = ReplyFollower()
    follower.delta(1, 1, "x")
    assert follower.delta(1, 1, "x").action == DROP
    assert follower.snapshot(1, 1, "x").action == DROP  # nobody asked for it


def test_a_gap_among_the_held_deltas_asks_again():
    follower = ReplyFollower()
    follower.start_resync(2)
    follower.delta(2, 4, "d")
    follower.delta(2, 6, "f")
    step = follower.snapshot(2, 3, "abc")
    assert (step.payloads, step.resync) == (["abc", "d"], True)  # 5 is missing
    assert follower.is_waiting(2)
    assert follower.snapshot(2, 5, "abcde").payloads == ["abcde", "f"]


def test_without_an_answer_the_saved_text_is_shown_and_later_deltas_are_ignored():
    follower = ReplyFollower()
    follower.start_resync(3)
    step = follower.saved_text(3, "saved so far", still_streaming=True)
    assert (step.action, step.payloads, step.replace) == (FORWARD, ["saved so far"], True)
    assert follower.delta(3, 40, "late").action == DROP  # the final message will come
    assert follower.snapshot(3, 41, "late snapshot").action == DROP
    finished = ReplyFollower()
    finished.start_resync(5)
    step = finished.saved_text(5, "all of it", still_streaming=False)
    assert (step.action, step.payloads) == (FORWARD, [])  # the caller sends the final message


def test_the_saved_text_is_not_shown_when_the_snapshot_came_first():
    follower = ReplyFollower()
    follower.start_resync(3)
    follower.snapshot(3, 2, "ab")
    assert follower.saved_text(3, "a", still_streaming=True).action == DROP


def test_a_reply_that_ends_while_waiting_is_forgotten():
    follower = ReplyFollower()
    follower.start_resync(8)
    follower.delta(8, 3, "c")
    follower.done(8)
    assert not follower.is_waiting(8) and follower.following() == []
    assert follower.snapshot(8, 3, "abc").action == DROP
    assert follower.saved_text(8, "abc", still_streaming=False).action == DROP


def test_channels_dispatch_is_still_what_the_consumer_copies():
    # ChatConsumer.dispatch is Channels' AsyncConsumer.dispatch minus the
    # aclose_old_connections() hop per event (see chat/live/consumer.py). If
    # Channels changes it, re-read it and copy again.
    source = inspect.getsource(AsyncConsumer.dispatch)
    assert "handler = getattr(self, get_handler_name(message), None)" in source
    assert "await aclose_old_connections()" in source
    assert "await handler(message)" in source
    assert len(source.strip().splitlines()) == 10, source
