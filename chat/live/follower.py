"""What one socket does with each event about the replies it shows: the resync rules.

A socket may join in the middle of a reply, miss a delta (a Redis hiccup), or
get deltas and a snapshot in either order. Deltas carry a sequence number; the
follower remembers the last one forwarded per reply and decides, for each event:

- forward: the next delta in order, or a snapshot the socket was waiting for
  (followed by the deltas held meanwhile that it does not cover);
- hold: a delta that arrives while a snapshot is awaited;
- resync: a gap, so the socket must ask the job for a snapshot and hold;
- drop: a delta the socket already has (covered by a snapshot, or a repeat).

If no job answers in time (it died, or runs in a process out of reach), the
socket shows the saved text instead and forwards no more deltas for it: the
final message will come from the job's end or from the orphan sweep.

Plain logic, no sockets or timers: the consumer (chat.live.consumer) does the
sending and the waiting, and the unit tests drive this class directly.
"""

from dataclasses import dataclass, field

FORWARD, HOLD, RESYNC, DROP = "forward", "hold", "resync", "drop"
NO_MORE_DELTAS = float("inf")


@dataclass
class Step:
    action: str
    payloads: list = field(default_factory=list)  # what to send, in order
    replace: bool = False  # the first payload replaces what the page shows (a snapshot)
    resync: bool = False  # and then ask for a snapshot again: a gap after this one


class ReplyFollower:
    def __init__(self):
        self.seen: dict[int, float] = {}  # message id -> last sequence number forwarded
        self.waiting: dict[int, list[tuple[int, object]]] = {}  # held (seq, payload) per reply

    def following(self) -> list[int]:
        return [*self.seen, *self.waiting]

    def is_waiting(self, message_id: int) -> bool:
        return message_id in self.waiting

    def start_resync(self, message_id: int) -> bool:
        """Wait for a snapshot of this reply; False if already waiting."""
        if message_id in self.waiting:
            return False
        self.waiting[message_id] = []
        return True

    def delta(self, message_id: int, seq: int, payload) -> Step:
        if message_id in self.waiting:
            self.waiting[message_id].append((seq, payload))
            return Step(HOLD)
        last = self.seen.get(message_id, 0)
        if seq <= last:
            return Step(DROP)
        if seq > last + 1:
            self.waiting[message_id] = [(seq, payload)]
            return Step(RESYNC)
        self.seen[message_id] = seq
        return Step(FORWARD, [payload])

    def snapshot(self, message_id: int, seq: int, payload) -> Step:
        """The job's reply so far: shown in place of the page's, then the held deltas after it."""
        held = self.waiting.pop(message_id, None)
        if held is None:
            return Step(DROP)  # not asked for, or already answered (by the database)
        self.seen[message_id] = seq
        payloads = [payload]
        held.sort(key=lambda item: item[0])
        for index, (held_seq, held_payload) in enumerate(held):
            if held_seq <= self.seen[message_id]:
                continue  # covered by the snapshot
            if held_seq > self.seen[message_id] + 1:
                self.waiting[message_id] = held[index:]  # another gap: hold the rest
                return Step(FORWARD, payloads, replace=True, resync=True)
            self.seen[message_id] = held_seq
            payloads.append(held_payload)
        return Step(FORWARD, payloads, replace=True)

    def saved_text(self, message_id: int, payload, still_streaming: bool) -> Step:
        """No job answered in time: show the text saved in the database instead."""
        if self.waiting.pop(message_id, None) is None:
            return Step(DROP)  # the snapshot came after all
        if still_streaming:
            self.seen[message_id] = NO_MORE_DELTAS
            return Step(FORWARD, [payload], replace=True)
        self.seen.pop(message_id, None)
        return Step(FORWARD)  # finished: the caller sends the final message

    def done(self, message_id: int):
        """The reply ended: forget it (its final message replaces everything)."""
        self.waiting.pop(message_id, None)
        self.seen.pop(message_id, None)
