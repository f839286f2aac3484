"""The SSE reader on hand-cut byte streams: the edges real servers produce."""

import asyncio
import json

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers import http
from providers.base import ProviderError


def response_from(chunks: list[bytes]) -> httpx.Response:
    async def body():
        for chunk in chunks:
            yield chunk

    return httpx.Response(200, content=body(), headers={"content-type": "text/event-stream"})


async def events(chunks: list[bytes]) -> list[str]:
    deadline = asyncio.get_running_loop().time() + 5
    return [data async for data in http.sse_data(response_from(chunks), deadline)]


async def test_an_event_split_across_reads_is_reassembled():
    assert await events([b"da", b'ta: {"a"', b": 1}\n", b"\n", b"data: 2\n\n"]) == ['{"a": 1}', "2"]


async def test_crlf_line_endings_including_a_cr_lf_split_between_reads():
    assert await events([b"data: one\r", b"\n\r\n", b"data: two\r\n\r\n"]) == ["one", "two"]


async def test_keepalive_comments_and_other_fields_are_skipped():
    stream = [b": keep-alive\n\n", b"event: ping\nid: 3\n\n", b"retry: 10\ndata: x\n\n"]
    assert await events(stream) == ["x"]


async def test_a_multibyte_character_split_between_reads_survives():
    encoded = "data: Ça 🙂\n\n".encode()
    cut = encoded.index("🙂".encode()) + 2  # inside the emoji's four bytes
    assert await events([encoded[:7], encoded[7:cut], encoded[cut:]]) == ["Ça 🙂"]


async def test_a_stream_that_ends_without_done_or_blank_line_still_yields_its_last_event():
    assert await events([b"data: first\n\n", b'data: {"stop": true}']) == [
        "first",
        '{"stop": true}',
    ]


async def test_multi_line_data_is_joined_with_newlines():
    assert await events([b"data: a\ndata: b\n\n"]) == ["a\nb"]


async def test_an_endless_line_is_cut_off():
    with pytest.raises(ProviderError) as caught:
        await events([b"data: "] + [b"x" * 65536] * 40)
    assert caught.value.kind == "malformed"


async def test_a_compressed_stream_is_decompressed_before_it_is_split():
    import gzip

    packed = gzip.compress(b"data: one\n\ndata: two\n\n")
    response = response_from([packed[:10], packed[10:]])
    response.headers["content-encoding"] = "gzip"
    deadline = asyncio.get_running_loop().time() + 5
    assert [data async for data in http.sse_data(response, deadline)] == ["one", "two"]


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()  # NaN and infinities, which only the standard module reads
    | st.text(),  # lone surrogates included
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(JSON_VALUES, st.booleans())
def test_backend_json_reads_as_the_standard_module_reads_it(value, as_bytes):
    text = json.dumps(value, ensure_ascii=bool(as_bytes))
    raw = text.encode("utf-8", "surrogatepass") if as_bytes else text
    assert repr(http.parse_json(raw)) == repr(json.loads(raw))


def test_an_integer_past_64_bits_reads_as_a_number():
    assert http.parse_json(str(2**70)) == float(2**70)


@pytest.mark.parametrize("raw", [b"", b"{", b'{"a": }', b"\xff\xfe", "[1,]"])
def test_json_that_neither_reads_is_malformed(raw):
    with pytest.raises(ProviderError) as refused:
        http.parse_json(raw)
    assert refused.value.kind == "malformed"
