"""OpenAI-compatible chat completions: DeepInfra, Nebula Block, vLLM, llama.cpp, Ollama…

Quirks handled here:
- the first chunk carries only the role; deltas may have null content;
- usage comes in a last chunk with empty `choices` (stream_options.include_usage),
  and DeepInfra adds `usage.estimated_cost`;
- reasoning arrives as `delta.reasoning_content` or `delta.reasoning`;
- some servers leak an end-of-sequence token ("</s>") as a delta of its own;
- an error object may arrive in the middle of a stream;
- a stream that ends with no finish reason and no [DONE] is an error, not an
  empty reply (llama-cpp-python answers a context overflow that way).
"""

from collections.abc import AsyncIterator
from contextlib import aclosing

from providers import continuation, http, reasoning
from providers.base import (
    ChatRequest,
    Completion,
    DiscoveredModel,
    Endpoint,
    Finish,
    ProviderError,
    ReasoningDelta,
    TextDelta,
    Usage,
)

LEAKED_EOS = {"</s>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>"}
LENGTH_REASONS = {"length", "max_tokens", "model_length"}


def _url(endpoint: Endpoint) -> str:
    return endpoint.base_url.rstrip("/") + "/chat/completions"


def _body(endpoint: Endpoint, request: ChatRequest, stream: bool) -> dict:
    messages, continuing = continuation.chat_messages(request)
    body = {
        "model": request.model,
        "messages": messages,
        "max_tokens": request.max_tokens,
        "stream": stream,
        **request.params,
        **continuing,
    }
    body.update(_reasoning(request))
    if request.stop:
        body["stop"] = request.stop
    if stream and endpoint.send_usage_option:
        body["stream_options"] = {"include_usage": True}
    return body


def _reasoning(request: ChatRequest) -> dict:
    """The thinking setting, the way this model takes it: OpenAI's `reasoning_effort`
    (gpt-oss, o-series, DeepSeek), or the chat template's `enable_thinking` switch
    (Qwen3, GLM, on llama.cpp and vLLM)."""
    effort = request.reasoning_effort
    if not effort:
        return {}
    if request.reasoning_control == "effort" and effort != "off":
        return {"reasoning_effort": effort}
    if request.reasoning_control == "switch":
        return {"chat_template_kwargs": {"enable_thinking": effort != "off"}}
    return {}


def _usage(raw) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage.reported(
        raw.get("prompt_tokens"), raw.get("completion_tokens"), raw.get("estimated_cost")
    )


def _finish(reason: str | None) -> str:
    return "length" if reason in LENGTH_REASONS else "stop"


async def stream(endpoint: Endpoint, request: ChatRequest) -> AsyncIterator:
    deadline = http.deadline_for(endpoint)
    finish, done, any_text = None, False, False
    async with http.post_stream(
        endpoint, _url(endpoint), _body(endpoint, request, True), deadline
    ) as response:
        async with aclosing(http.json_events(response, deadline)) as events:
            async for chunk in events:
                if chunk is http.DONE:
                    done = True
                    break
                usage = _usage(chunk.get("usage"))
                if usage:
                    yield usage
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if thought := reasoning.from_fields(delta):
                        any_text = True
                        yield ReasoningDelta(thought)
                    text = delta.get("content")
                    if text and text not in LEAKED_EOS:
                        any_text = True
                        yield TextDelta(text)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
    if finish is None and not done:
        if any_text:
            raise ProviderError("unavailable", "stream ended before the reply finished")
        raise ProviderError("malformed", "empty stream")
    yield Finish(_finish(finish))


async def complete(endpoint: Endpoint, request: ChatRequest) -> Completion:
    payload = await http.post_json(endpoint, _url(endpoint), _body(endpoint, request, False))
    if error := http.error_in(payload):
        raise error
    try:
        choice = payload["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ProviderError("malformed", "no choices") from None
    return Completion(
        text, _usage(payload.get("usage")) or Usage(), _finish(choice.get("finish_reason"))
    )


def _context_of(item: dict) -> int | None:
    """The context window as each server family reports it in its model list:
    vLLM `max_model_len`, OpenRouter and others `context_length`, llama-server
    `meta.n_ctx`."""
    meta = item.get("meta") if isinstance(item.get("meta"), dict) else {}
    for value in (item.get("max_model_len"), item.get("context_length"), meta.get("n_ctx")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


async def discover(endpoint: Endpoint) -> list[DiscoveredModel]:
    payload = await http.get_json(endpoint, endpoint.base_url.rstrip("/") + "/models")
    items = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        raise ProviderError("malformed", "model list has no data")
    return [
        DiscoveredModel(str(item["id"]), _context_of(item))
        for item in items
        if isinstance(item, dict) and item.get("id")
    ]
