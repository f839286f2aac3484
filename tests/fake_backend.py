"""A fake LLM server on real loopback HTTP, speaking all three wire formats.

It is a small HTTP/1.1 server on asyncio streams (chunked responses, like the
real servers), run in its own thread so that it works beside pytest's event
loop, a daphne subprocess or the benchmark. The bytes it sends follow the
transcripts captured from llama-server and llama-cpp-python in shared/.

Knobs (see Behaviour) cover first-token delay, token rate, HTTP errors, error
objects mid-stream, stalls, disconnects, malformed JSON, endless lines, events
split across reads (mid UTF-8 character), CRLF and keep-alive comments. It
records each request and when a client hung up, so tests can prove that
"stop" closed the upstream connection.
"""

import asyncio
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tests.fake_clock import Ticker

DEFAULT_TOKENS = ["Hello", ",", " wor", "ld", "!", " Ça", " va", " 🙂", "?"]


@dataclass
class Behaviour:
    tokens: list[str] = field(default_factory=lambda: list(DEFAULT_TOKENS))
    first_token_delay: float = 0.0
    token_interval: float = 0.0
    status: int = 200  # an HTTP error instead of a reply
    error: str = ""  # shapes the error body: auth, rate, context, server, bad
    retry_after: str | None = None
    error_after: int | None = None  # in-band error object after N tokens
    stall_after: int | None = None  # go silent (connection open) after N tokens
    disconnect_after: int | None = None  # drop the connection after N tokens
    malformed_after: int | None = None  # invalid JSON after N tokens
    endless_line_after: int | None = None  # a line that never ends after N tokens
    empty_stream: bool = False  # 200 and no events at all
    omit_end: bool = False  # no [DONE] / final stop event, clean close
    split_bytes: bool = False  # every event split over several reads
    crlf: bool = False
    keepalive: bool = False  # ": keep-alive" comments between events
    usage: bool = True
    cost: float | None = None  # DeepInfra's usage.estimated_cost
    usage_override: dict = field(default_factory=dict)  # fields replaced in usage, as sent
    usage_in_workers: bool = False
    expected_key: str | None = None
    models: list[str] = field(default_factory=lambda: ["fake-model"])
    n_ctx: int = 4096
    fail_first: int = 0  # answer the first N requests with `status`, then succeed
    endless: bool = False  # repeat `tokens` for ever, as fast as the client reads
    ignore_max_tokens: bool = False  # a backend that does not honour the output limit
    whole_delay: float = 0.0  # before answering a request that is not streamed
    # Thinking sent before `tokens` in a delta field ("reasoning_content" or "reasoning";
    # Workers AI then streams OpenAI-shaped chunks). Tags in the text need no option:
    # put "<think>" and "</think>" in `tokens`.
    reasoning: list[str] = field(default_factory=list)
    reasoning_field: str = "reasoning_content"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict
    body: dict | None
    started: float
    hung_up_at: float | None = None  # when the client closed before we finished


class FakeBackend:
    def __init__(self, loop=None, shared_clock=False, **behaviour):
        self.behaviour = Behaviour(**behaviour)
        # One timer writes every stream's tokens (tests.fake_clock): for the benchmark.
        self._ticker = Ticker(self.behaviour.token_interval) if shared_clock else None
        self.requests: list[Seen] = []
        self._loop = loop or asyncio.new_event_loop()
        self._token_bytes: dict[tuple[str, str], bytes] = {}  # see _token_data
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server = None
        self.port = 0

    # --- lifecycle ----------------------------------------------------------
    def start(self) -> "FakeBackend":
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=10)
        return self

    async def _start(self):
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self):
        async def close():
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configure(self, **changes):
        self.behaviour = Behaviour(**changes)
        self._token_bytes.clear()

    def wait_for_hangup(self, timeout: float = 5.0) -> float | None:
        """Seconds from the last streamed request's start until the client hung up, or None."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            streamed = [r for r in self.requests if r.body and r.body.get("stream")]
            if streamed and streamed[-1].hung_up_at is not None:
                return streamed[-1].hung_up_at
            time.sleep(0.01)
        return None

    # --- HTTP plumbing -------------------------------------------------------
    async def _handle(self, reader, writer):
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _one_request(self, reader, writer) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length", 0) or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        seen = Seen(method, urlsplit(target).path, headers, body, time.monotonic())
        self.requests.append(seen)
        watcher = asyncio.ensure_future(self._watch_hangup(reader, writer, seen))
        try:
            keep_open = await self._route(seen, writer)
        except ConnectionError:
            # A write failed because the client went away: that is a hang-up too,
            # and it may come before the watcher reads the end of the stream.
            if seen.hung_up_at is None:
                seen.hung_up_at = time.monotonic() - seen.started
            raise
        finally:
            watcher.cancel()
        return keep_open

    async def _watch_hangup(self, reader, writer, seen):
        # While we answer, the client sends nothing more: EOF means it hung up.
        if await reader.read(1) == b"":
            seen.hung_up_at = time.monotonic() - seen.started
            writer.transport.abort()  # stop writing into a closed connection

    async def _respond(self, writer, status, payload, extra_headers=()):
        data = json.dumps(payload).encode()
        head = [f"HTTP/1.1 {status} X", "Content-Type: application/json"]
        head += [f"Content-Length: {len(data)}", *extra_headers]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await writer.drain()
        return True

    async def _start_stream(self, writer):
        head = [
            "HTTP/1.1 200 OK",
            "Content-Type: text/event-stream",
            "Transfer-Encoding: chunked",
            "Connection: close",  # as servers that close after a stream say
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()

    async def _chunk(self, writer, data: bytes):
        if writer.transport.is_closing():
            raise ConnectionResetError("the client hung up")  # asyncio would buffer for ever
        b = self.behaviour
        pieces = [data]
        if b.split_bytes and len(data) > 3:
            # Cut inside the event, and inside multi-byte characters when there are any.
            cuts = sorted({1, len(data) // 2, len(data) - 2})
            pieces = [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        for piece in pieces:
            writer.write(self._framed(piece))
            await writer.drain()
            if b.split_bytes:
                await asyncio.sleep(0.002)

    @staticmethod
    def _framed(piece: bytes) -> bytes:
        return f"{len(piece):x}\r\n".encode() + piece + b"\r\n"

    async def _event(self, writer, payload):
        await self._send_data(writer, self._data(payload))

    async def _send_data(self, writer, data: bytes):
        if self.behaviour.keepalive:
            nl = "\r\n" if self.behaviour.crlf else "\n"
            await self._chunk(writer, f": keep-alive{nl}{nl}".encode())
        await self._chunk(writer, data)

    def _data(self, payload) -> bytes:
        nl = "\r\n" if self.behaviour.crlf else "\n"
        text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
        return f"data: {text}{nl}{nl}".encode()

    async def _end(self, writer):
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    # --- routing --------------------------------------------------------------
    async def _route(self, seen, writer) -> bool:
        b, path = self.behaviour, seen.path
        fmt = (
            "workers"
            if "/ai/" in path
            else "llamacpp"
            if path in ("/completion", "/props")
            else "openai"
        )
        if b.expected_key and seen.headers.get("authorization") != f"Bearer {b.expected_key}":
            return await self._error(writer, fmt, 401, "auth", seen)
        failing = b.status != 200 and (not b.fail_first or len(self.requests) <= b.fail_first)
        if failing:
            return await self._error(writer, fmt, b.status, b.error, seen)
        if seen.method == "GET":
            return await self._listing(writer, path)
        body = seen.body or {}
        if not body.get("stream"):
            await asyncio.sleep(b.whole_delay)
            return await self._respond(writer, 200, self._whole(fmt, body))
        await self._stream(writer, fmt, body)
        return False  # a streamed body may have been cut short; never reuse

    def _reply_tokens(self, body) -> tuple[list[str], bool]:
        limit = body.get("max_tokens") or body.get("n_predict") or -1
        tokens = self.behaviour.tokens
        if self.behaviour.endless:
            return itertools.cycle(tokens), False
        if self.behaviour.ignore_max_tokens:
            return tokens, False
        if isinstance(limit, int) and 0 < limit < len(tokens):
            return tokens[:limit], True
        return tokens, False

    def _prompt_tokens(self, body) -> int:
        text = body.get("prompt") or " ".join(
            m.get("content", "") for m in body.get("messages", [])
        )
        return max(1, len(str(text).split()))

    async def _stream(self, writer, fmt, body):
        b = self.behaviour
        await self._start_stream(writer)
        if b.empty_stream:
            return await self._end(writer)
        tokens, truncated = self._reply_tokens(body)
        if fmt == "openai":
            await self._event(writer, self._openai_chunk({"role": "assistant"}))
        await asyncio.sleep(b.first_token_delay)
        for thought in b.reasoning:
            await self._event(writer, self._reasoning_event(fmt, thought))
            await asyncio.sleep(b.token_interval)
        count = 0
        if self._ticker and self._plain(b) and tokens:
            tokens = list(tokens)
            await self._send_data(writer, self._token_data(fmt, tokens[0], 0, body))
            pieces = [self._framed(self._token_data(fmt, token, index, body))
                      for index, token in enumerate(tokens[1:], 1)]  # fmt: skip
            await self._ticker.stream(writer.transport, pieces)
            tokens, count = [], len(tokens)
        for index, token in enumerate(tokens):
            if index and b.token_interval:
                await asyncio.sleep(b.token_interval)
            if await self._fault(writer, fmt, index):
                return
            await self._send_data(writer, self._token_data(fmt, token, index, body))
            count = index + 1
        if await self._fault(writer, fmt, count):
            return
        if not b.omit_end:
            for event in self._closing_events(fmt, body, count, truncated):
                await self._event(writer, event)
        await self._end(writer)

    def _plain(self, b: Behaviour) -> bool:
        """Tokens at the ticker's rate and nothing else per token: the benchmark's reply."""
        faults = (b.error_after, b.stall_after, b.disconnect_after, b.malformed_after,
                  b.endless_line_after)  # fmt: skip
        return (b.token_interval == self._ticker.interval and not b.endless and not b.split_bytes
                and not b.keepalive and all(f is None for f in faults))  # fmt: skip

    async def _fault(self, writer, fmt, index) -> bool:
        """Inject the configured fault before token `index`; True if the reply is over."""
        b = self.behaviour
        if b.error_after == index:
            await self._event(writer, self._error_body(fmt, "server"))
            await self._end(writer)
            return True
        if b.malformed_after == index:
            await self._event(writer, '{"choices": [{"delta": {"content": "x"')
            await self._end(writer)
            return True
        if b.disconnect_after == index:
            writer.transport.abort()
            return True
        if b.stall_after == index:
            await asyncio.Event().wait()  # silent until the client hangs up or the server stops
        if b.endless_line_after == index:
            await self._chunk(writer, b"data: ")
            for _ in range(4096):  # up to 256 MiB, far past any sane cap
                await self._chunk(writer, b"x" * 65536)
            return True
        return False

    # --- bodies, per wire format ------------------------------------------
    def _openai_chunk(self, delta, finish=None, usage=None, choices=True):
        chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1795313966,
            "model": "fake-model",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            if choices
            else [],
        }
        if usage:
            chunk["usage"] = usage
        return chunk

    def _reasoning_event(self, fmt, thought):
        if fmt == "llamacpp":
            raise ValueError("/completion has no reasoning field: use tags in `tokens`")
        return self._openai_chunk({self.behaviour.reasoning_field: thought})

    def _token_data(self, fmt, token, index, body) -> bytes:
        """A token's event, encoded once per token text where it carries no index: the
        benchmark's upstream streams thousands a second and must not take the app's CPU."""
        if fmt == "llamacpp":
            return self._data(self._token_event(fmt, token, index, body))
        key = (fmt, token)
        if key not in self._token_bytes:
            self._token_bytes[key] = self._data(self._token_event(fmt, token, index, body))
        return self._token_bytes[key]

    def _token_event(self, fmt, token, index, body):
        if fmt == "openai" or (fmt == "workers" and self.behaviour.reasoning):
            return self._openai_chunk({"content": token})
        if fmt == "llamacpp":
            return {
                "index": 0,
                "content": token,
                "tokens": [index],
                "stop": False,
                "id_slot": -1,
                "tokens_predicted": index + 1,
                "tokens_evaluated": self._prompt_tokens(body),
            }
        return {"response": token}

    def _usage(self, body, completion):
        usage = {
            "prompt_tokens": self._prompt_tokens(body),
            "completion_tokens": completion,
            "total_tokens": self._prompt_tokens(body) + completion,
        }
        if self.behaviour.cost is not None:
            usage["estimated_cost"] = self.behaviour.cost
        return {**usage, **self.behaviour.usage_override}

    def _closing_events(self, fmt, body, count, truncated):
        b = self.behaviour
        if fmt == "openai":
            events = [self._openai_chunk({}, finish="length" if truncated else "stop")]
            if b.usage and (body.get("stream_options") or {}).get("include_usage"):
                events.append(self._openai_chunk({}, usage=self._usage(body, count), choices=False))
            return [*events, "[DONE]"]
        if fmt == "llamacpp":
            return [
                {
                    "index": 0,
                    "content": "",
                    "stop": True,
                    "stop_type": "limit" if truncated else "eos",
                    "stopping_word": "",
                    "tokens_predicted": count,
                    "tokens_evaluated": self._prompt_tokens(body),
                    "truncated": False,
                    "timings": {"predicted_n": count},
                }
            ]
        events = []
        if b.usage_in_workers:
            events.append({"response": "", "usage": self._usage(body, count)})
        return [*events, "[DONE]"]

    def _whole(self, fmt, body):
        tokens, truncated = self._reply_tokens(body)
        tokens = list(itertools.islice(tokens, 4096))  # an endless reply cannot be whole
        text = "".join(tokens)
        if fmt == "openai":
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "model": "fake-model",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "length" if truncated else "stop",
                    }
                ],
                "usage": self._usage(body, len(tokens)),
            }
        if fmt == "llamacpp":
            return {
                "content": text,
                "stop": True,
                "stop_type": "limit" if truncated else "eos",
                "tokens_predicted": len(tokens),
                "tokens_evaluated": self._prompt_tokens(body),
            }
        result = {"response": text}
        if self.behaviour.usage_in_workers:
            result["usage"] = self._usage(body, len(tokens))
        return {"result": result, "success": True, "errors": [], "messages": []}

    async def _listing(self, writer, path):
        b = self.behaviour
        if path.endswith("/ai/models/search"):
            result = [{"name": name, "task": {"name": "Text Generation"}} for name in b.models]
            return await self._respond(writer, 200, {"result": result, "success": True})
        if path == "/props":
            return await self._respond(
                writer,
                200,
                {"model_alias": b.models[0], "default_generation_settings": {"n_ctx": b.n_ctx}},
            )
        if path.endswith("/models"):
            data = [
                {"id": name, "object": "model", "meta": {"n_ctx": b.n_ctx}} for name in b.models
            ]
            return await self._respond(writer, 200, {"object": "list", "data": data})
        return await self._respond(writer, 404, self._error_body("llamacpp", "missing"))

    def _error_body(self, fmt, kind, key=""):
        if fmt == "workers":
            codes = {
                "auth": (10000, "Authentication error"),
                "rate": (3036, "Rate limited"),
                "bad": (5007, "No such model or task"),
            }
            code, message = codes.get(kind, (3040, "Capacity temporarily exceeded"))
            if kind == "context":
                code, message = 5006, "Input is too long for this model's context window"
            return {
                "result": None,
                "success": False,
                "errors": [{"code": code, "message": message}],
            }
        if kind == "context" and fmt == "llamacpp":
            return {
                "error": {
                    "code": 400,
                    "message": "request (5031 tokens) exceeds the available context size "
                    "(512 tokens), try increasing it",
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": 5031,
                    "n_ctx": 512,
                }
            }
        shapes = {
            "auth": ("invalid_request_error", "invalid_api_key", f"Incorrect API key: {key}"),
            "rate": ("rate_limit_error", "rate_limit_exceeded", "Rate limit reached"),
            "context": (
                "invalid_request_error",
                "context_length_exceeded",
                "This model's maximum context length is 2048 tokens.",
            ),
            "bad": ("invalid_request_error", "", "Unsupported parameter"),
            "missing": ("not_found_error", 404, "File Not Found"),
        }
        kind_type, code, message = shapes.get(kind, ("server_error", 500, "Internal error"))
        return {"error": {"message": message, "type": kind_type, "code": code}}

    async def _error(self, writer, fmt, status, kind, seen):
        key = seen.headers.get("authorization", "")  # echoed, as some real servers do
        extra = [f"Retry-After: {self.behaviour.retry_after}"] if self.behaviour.retry_after else []
        return await self._respond(writer, status, self._error_body(fmt, kind, key), extra)


# A reply shaped like a model's: headings, paragraphs with inline markup, a list,
# a table and a code block. Every token holds one "tok", which the benchmark counts.
MARKDOWN_PIECES = [
    "## tok", " tok\n\n", "tok", " **tok**", " tok", " `tok`", " tok", " tok.\n\n",
    "- tok", " tok\n", "- tok", " *tok*\n", "- tok", " tok\n\n",
    "| tok", " | tok |\n|---|---|\n| tok", " | tok |\n\n",
    "```python\ntok", " = tok", "(tok)\n```\n\n",
    "tok", " tok", " tok", " tok", " tok", " tok", " tok", " tok.\n\n",
]  # fmt: skip


def markdown_tokens(count: int) -> list[str]:
    return list(itertools.islice(itertools.cycle(MARKDOWN_PIECES), count))


def main():
    """Run the fake on its own, for the benchmark: prints its port, serves until killed."""
    import argparse

    import uvloop  # a lighter loop: the benchmark's upstream shares the app's cores

    parser = argparse.ArgumentParser(description="A fake LLM backend on loopback.")
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second per stream")
    parser.add_argument("--first-delay", type=float, default=0.2, help="seconds to the first token")
    parser.add_argument("--markdown", action="store_true", help="a reply with Markdown in it")
    args = parser.parse_args()
    fake = FakeBackend(
        loop=uvloop.new_event_loop(),
        shared_clock=True,
        tokens=markdown_tokens(args.tokens) if args.markdown else ["tok "] * args.tokens,
        token_interval=1.0 / args.rate,
        first_token_delay=args.first_delay,
    ).start()
    print(fake.port, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
