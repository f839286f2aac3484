"""One normaliser for a model's thinking, whatever the backend calls it.

Backends send reasoning three ways:
- a delta field, `reasoning_content` (llama.cpp server, DeepSeek, Workers AI's
  OpenAI shape) or `reasoning` (vLLM, OpenRouter, Ollama): the wire-format
  modules turn both into ReasoningDelta;
- `<think>…</think>` in the text itself (the /completion API, servers that do not
  parse it): ThinkTags, below, splits that text;
- only `…</think>`, when the prompt template already opened the tag.

ThinkTags is fed text as it arrives and returns events. Tags may be split
across chunks (`<th` | `ink>`), so a piece that could still become a tag is held
back until the next chunk decides it. A block that never closes is reasoning to
the end. A closing tag with no opening one, when the prompt did not open it,
means that the text so far was reasoning after all: AnswerWasReasoning says so,
and the listener moves what it has.
"""

import re
from collections.abc import AsyncIterator

from providers.base import AnswerWasReasoning, Finish, ReasoningDelta, TextDelta

OPEN, CLOSE = "<think>", "</think>"
FIELDS = ("reasoning_content", "reasoning")  # the delta fields, in order of preference


def from_fields(delta: dict) -> str:
    """The thinking in a delta, under whichever field name this backend uses."""
    for name in FIELDS:
        value = delta.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


# Model families whose thinking can be controlled, and how (what sync sets for a new model).
_CONTROLS = (
    (re.compile(r"qwen3|glm-4\.[5-9]|hunyuan|granite-3\.[2-9]", re.I), "switch"),
    (re.compile(r"gpt-oss|(^|/)o[134](-|$)|magistral", re.I), "effort"),
)


def control_for(remote_id: str) -> str:
    """How a model's thinking is controlled, guessed from its name; "" when unknown."""
    for pattern, control in _CONTROLS:
        if pattern.search(remote_id):
            return control
    return ""


def _held_back(text: str, tag: str) -> int:
    """How many characters at the end of `text` could be the start of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ThinkTags:
    def __init__(self, opened: bool = False):
        self.thinking = opened  # inside a block
        self.at_start = not opened  # nothing but whitespace seen: `<think>` may come
        self.closed = False  # after `</think>`: no more tags are looked for
        self.reasoned = False  # some reasoning came (tags or a delta field)
        self.answer_started = False  # whitespace after reasoning is dropped until text comes
        self.pending = ""

    def passes(self, text: str) -> bool:
        """Whether `text` is answer text exactly as it came (no tag, nothing to strip)."""
        return (
            self.answer_started
            and not self.pending
            and (self.closed or "<" not in text)
            and not (self.at_start or self.thinking)
        )

    def feed(self, text: str) -> list:
        if not self.pending and "<" not in text and not (self.at_start or self.thinking):
            return self._emit(text)  # no tag can start here: the common case, made cheap
        self.pending += text
        events: list = []
        while self.pending:
            before = (len(events), self.pending, self.at_start, self.thinking, self.closed)
            self._step(events)
            if (len(events), self.pending, self.at_start, self.thinking, self.closed) == before:
                break  # waiting for more text to decide
        return events

    def flush(self) -> list:
        """The stream ended: whatever is held back is text of the current kind."""
        text, self.pending = self.pending, ""
        return self._emit(text)

    def _step(self, events: list):
        if self.at_start:
            self._start()
        elif self.closed:
            events += self._emit(self.pending)
            self.pending = ""
        elif self.thinking:
            at = self.pending.find(CLOSE)
            if at < 0:
                self._emit_all_but(events, _held_back(self.pending, CLOSE))
            else:
                events += self._emit(self.pending[:at])
                self.pending = self.pending[at + len(CLOSE) :]
                self.thinking, self.closed = False, True
        else:
            self._answer(events)

    def _start(self):
        stripped = self.pending.lstrip()
        if stripped.startswith(OPEN):
            self.pending = stripped[len(OPEN) :]
            self.at_start, self.thinking = False, True
        elif stripped and not OPEN.startswith(stripped):
            self.at_start = False
        # else: only whitespace or the start of `<think>` so far

    def _answer(self, events: list):
        """Answer text, watching for a lone `</think>` (the template opened the block)."""
        at_close, at_open = self.pending.find(CLOSE), self.pending.find(OPEN)
        if at_open >= 0 and (at_close < 0 or at_open < at_close):
            self.closed = True  # the answer talks about the tags: it is all answer
        elif at_close < 0:
            keep = max(_held_back(self.pending, CLOSE), _held_back(self.pending, OPEN))
            self._emit_all_but(events, keep)
        else:
            events.append(AnswerWasReasoning())
            self.thinking = self.reasoned = True
            self.answer_started = False
            events += self._emit(self.pending[:at_close])
            self.pending = self.pending[at_close + len(CLOSE) :]
            self.thinking, self.closed = False, True

    def _emit_all_but(self, events: list, keep: int):
        cut = len(self.pending) - keep
        events += self._emit(self.pending[:cut])
        self.pending = self.pending[cut:]

    def _emit(self, text: str) -> list:
        if not text:
            return []
        if self.thinking:
            self.reasoned = True
            return [ReasoningDelta(text)]
        if not self.answer_started and self.reasoned:
            text = text.lstrip()
            if not text:
                return []
        self.answer_started = True
        return [TextDelta(text)]


async def normalise(events: AsyncIterator, opened: bool = False) -> AsyncIterator:
    """The provider's events, with reasoning in text split out as ReasoningDelta."""
    tags = ThinkTags(opened)
    async for event in events:
        if isinstance(event, TextDelta):
            if tags.passes(event.text):
                yield event  # the common case: answer text with no tag in sight
                continue
            for out in tags.feed(event.text):
                yield out
        else:
            if isinstance(event, ReasoningDelta):
                tags.reasoned = True
            elif isinstance(event, Finish):
                for out in tags.flush():
                    yield out
            yield event
    for out in tags.flush():
        yield out


def answer_only(text: str, opened: bool = False) -> str:
    """A whole reply without its thinking (a title, a non-streamed completion)."""
    tags = ThinkTags(opened)
    events = [*tags.feed(text), *tags.flush()]
    if any(isinstance(event, AnswerWasReasoning) for event in events):
        events = events[[type(e) for e in events].index(AnswerWasReasoning) :]
    return "".join(event.text for event in events if isinstance(event, TextDelta))
