"""Continuing a partial assistant reply in place ("Continue"), per wire format.

The request's messages end with the partial reply (ChatRequest.continues).
- Prompt formats (llama.cpp /completion, Workers AI raw mode): the prompt ends
  with the partial reply left open, so the model simply writes on
  (prompt_formats.render with open_last).
- Chat messages, mode "prefill": the partial reply stays the final assistant
  message. vLLM is asked to continue it (`continue_final_message`, no new
  generation prompt); llama.cpp's server and Ollama continue a final assistant
  message by themselves and ignore those two fields.
- Chat messages, mode "instruction" (the default, for backends that would start
  a new message, and always on Workers AI's messages): a short user instruction
  follows the partial reply. It is built here, sent once, never stored as a turn.
"""

from providers.base import ChatRequest

HIDDEN_INSTRUCTION = (
    "Continue your last message exactly where it stopped. Do not repeat any of it and do "
    "not comment on it: write only what comes next."
)
PREFILL_FIELDS = {"continue_final_message": True, "add_generation_prompt": False}


def chat_messages(request: ChatRequest, can_prefill: bool = True) -> tuple[list[dict], dict]:
    """The messages to send, and any extra body fields, for a chat-messages backend
    (Workers AI validates its input strictly: it always gets the instruction)."""
    if not request.continues:
        return request.messages, {}
    if request.continue_mode == "prefill" and can_prefill:
        return request.messages, dict(PREFILL_FIELDS)
    return [*request.messages, {"role": "user", "content": HIDDEN_INSTRUCTION}], {}
