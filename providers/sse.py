"""Server-sent events from raw bytes, with as little work per token as stays correct.

A backend sends one event per token, so this runs thousands of times a second
under load. It splits bytes on newlines (a newline byte never occurs inside a
UTF-8 character, so characters split across reads survive), accepts LF, CRLF
and CR line endings, skips comments and the fields we do not use (event, id,
retry), joins multi-line data with newlines, and flushes a last event that has
no blank line after it. Lines longer than the cap are refused.
"""

from providers.base import ProviderError


class EventDecoder:
    def __init__(self, max_line: int):
        self.max_line = max_line
        self.rest = b""  # an unfinished line
        self.data: list[bytes] = []  # data lines of the event being read

    def feed(self, chunk: bytes) -> list[bytes]:
        """The data of every event that ends in `chunk` (with what came before)."""
        buffer = self.rest + chunk if self.rest else chunk
        if b"\r" in buffer:
            # A CR at the very end may be half of a CRLF: wait for the next read.
            held = buffer.endswith(b"\r")
            buffer = buffer[:-1] if held else buffer
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            buffer += b"\r" if held else b""
        lines = buffer.split(b"\n")
        self.rest = lines.pop()
        if len(self.rest) > self.max_line:
            raise ProviderError("malformed", "endless line")
        return self._events(lines)

    def flush(self) -> list[bytes]:
        """At the end of the stream: the last event, even with no blank line after it."""
        lines = [self.rest.rstrip(b"\r"), b""] if self.rest else [b""]
        self.rest = b""
        return self._events(lines)

    def _events(self, lines: list[bytes]) -> list[bytes]:
        found = []
        for line in lines:
            if not line:
                if self.data:
                    found.append(b"\n".join(self.data))
                    self.data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self.data.append(value[1:] if value.startswith(b" ") else value)
            elif line == b"data":
                self.data.append(b"")
        return found
