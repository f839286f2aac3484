"""llama.cpp server's native POST /completion (LibertAI on Aleph Cloud, llama-server).

The chat is rendered into one prompt with the model's prompt format. Events are
`{"content": ..., "stop": false}`; the last has `"stop": true`, `stop_type`
and the token counts, and there is no [DONE] line.
"""

from collections.abc import AsyncIterator
from contextlib import aclosing

from providers import http
from providers.base import (
    ChatRequest,
    Completion,
    DiscoveredModel,
    Endpoint,
    Finish,
    ProviderError,
    TextDelta,
    Usage,
)
from providers.prompt_formats import render

# Our canonical sampling names -> llama.cpp's.
PARAM_NAMES = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "repetition_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


def _url(endpoint: Endpoint, path: str) -> str:
    return endpoint.base_url.rstrip("/") + path


def _body(request: ChatRequest, stream: bool) -> dict:
    prompt, stops = render(
        request.prompt_format or "chatml", request.messages, open_last=request.continues
    )
    body = {
        "prompt": prompt,
        "n_predict": request.max_tokens if request.max_tokens else -1,
        "stop": stops + [s for s in request.stop if s not in stops],
        "stream": stream,
        "cache_prompt": True,
    }
    for name, value in request.params.items():
        if name in PARAM_NAMES:
            body[PARAM_NAMES[name]] = value
    return body


def _usage(event: dict) -> Usage:
    return Usage.reported(event.get("tokens_evaluated"), event.get("tokens_predicted"))


def _finish(event: dict) -> str:
    return "length" if event.get("stop_type") == "limit" or event.get("stopped_limit") else "stop"


async def stream(endpoint: Endpoint, request: ChatRequest) -> AsyncIterator:
    deadline = http.deadline_for(endpoint)
    final, any_text = None, False
    url = _url(endpoint, "/completion")
    async with http.post_stream(endpoint, url, _body(request, True), deadline) as response:
        async with aclosing(http.json_events(response, deadline, done_marker=None)) as events:
            async for event in events:
                text = event.get("content")
                if isinstance(text, str) and text:
                    any_text = True
                    yield TextDelta(text)
                if event.get("stop"):
                    final = event
                    break
    if final is None:
        if any_text:
            raise ProviderError("unavailable", "stream ended before the reply finished")
        raise ProviderError("malformed", "empty stream")
    yield _usage(final)
    yield Finish(_finish(final))


async def complete(endpoint: Endpoint, request: ChatRequest) -> Completion:
    payload = await http.post_json(endpoint, _url(endpoint, "/completion"), _body(request, False))
    if error := http.error_in(payload):
        raise error
    if not isinstance(payload, dict) or "content" not in payload:
        raise ProviderError("malformed", "no content")
    return Completion(str(payload["content"]), _usage(payload), _finish(payload))


async def discover(endpoint: Endpoint) -> list[DiscoveredModel]:
    """/v1/models on recent servers, /props on older ones: one model per server."""
    try:
        payload = await http.get_json(endpoint, _url(endpoint, "/v1/models"))
        items = [item for item in payload.get("data", []) if isinstance(item, dict)]
        if items:
            return [
                DiscoveredModel(str(item["id"]), (item.get("meta") or {}).get("n_ctx"))
                for item in items
                if item.get("id")
            ]
    except (ProviderError, AttributeError) as exc:
        if isinstance(exc, ProviderError) and exc.kind in ("auth", "timeout"):
            raise
    payload = await http.get_json(endpoint, _url(endpoint, "/props"))
    if not isinstance(payload, dict):
        raise ProviderError("malformed", "props is not an object")
    name = payload.get("model_alias") or payload.get("model_path")
    if not name:
        raise ProviderError("malformed", "props names no model")
    settings = payload.get("default_generation_settings") or {}
    return [DiscoveredModel(str(name), settings.get("n_ctx") or payload.get("n_ctx"))]
