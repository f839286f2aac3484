"""Chat prompt formats for raw-prompt backends, as data plus one renderer.

llama.cpp's /completion (and Workers AI in raw mode) takes one string, so the
conversation must be written out in the template the model was trained on,
with that template's stop strings. Each format is a handful of templates in
which `{content}` stands for a message's text.
"""

from dataclasses import dataclass, replace

ZERO_WIDTH_SPACE = "\u200b"


@dataclass(frozen=True)
class PromptFormat:
    label: str
    user: str
    assistant: str
    generation: str  # what the prompt ends with, for the model to continue
    stop: tuple[str, ...]
    system: str = ""  # a separate system block, or
    merge_system: str = ""  # the system text folded into the first user turn
    prefix: str = ""
    default_system: str = ""
    markers: tuple[str, ...] = ()  # control strings a message must not forge


FORMATS: dict[str, PromptFormat] = {
    "chatml": PromptFormat(
        label="ChatML",
        system="<|im_start|>system\n{content}<|im_end|>\n",
        user="<|im_start|>user\n{content}<|im_end|>\n",
        assistant="<|im_start|>assistant\n{content}<|im_end|>\n",
        generation="<|im_start|>assistant\n",
        stop=("<|im_end|>", "<|im_start|>"),
        markers=("<|im_start|>", "<|im_end|>"),
    ),
    "deepseek-r1": PromptFormat(
        label="DeepSeek-R1 and its distills",
        system="{content}",
        user="<｜User｜>{content}",
        assistant="<｜Assistant｜>{content}<｜end▁of▁sentence｜>",
        generation="<｜Assistant｜><think>\n",
        stop=("<｜end▁of▁sentence｜>", "<｜User｜>"),
        markers=("<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"),
    ),
    "alpaca": PromptFormat(
        label="Alpaca",
        system="{content}\n\n",
        user="### Instruction:\n{content}\n\n",
        assistant="### Response:\n{content}\n\n",
        generation="### Response:\n",
        stop=("### Instruction:", "### Response:"),
        default_system="Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.",
        markers=("### Instruction:", "### Response:"),
    ),
    "simple": PromptFormat(
        label="Simple (User/Assistant)",
        system="{content}\n\n",
        user="User: {content}\n",
        assistant="Assistant: {content}\n",
        generation="Assistant:",
        stop=("\nUser:", "\nAssistant:"),
        markers=("\nUser:", "\nAssistant:"),
    ),
    "llama2": PromptFormat(
        label="Llama 2 [INST]",
        merge_system="<<SYS>>\n{system}\n<</SYS>>\n\n{content}",
        user="<s>[INST] {content} [/INST]",
        assistant=" {content} </s>",
        generation="",
        stop=("</s>", "[INST]"),
        markers=("<s>", "</s>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"),
    ),
    "mistral": PromptFormat(
        label="Mistral [INST]",
        prefix="<s>",
        merge_system="{system}\n\n{content}",
        user="[INST] {content} [/INST]",
        assistant="{content}</s>",
        generation="",
        stop=("</s>", "[INST]"),
        markers=("<s>", "</s>", "[INST]", "[/INST]"),
    ),
    # Llama 3 and Gemma without the leading BOS token: llama.cpp adds it itself.
    "llama3": PromptFormat(
        label="Llama 3",
        system="<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
        user="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>",
        assistant="<|start_header_id|>assistant<|end_header_id|>\n\n{content}<|eot_id|>",
        generation="<|start_header_id|>assistant<|end_header_id|>\n\n",
        stop=("<|eot_id|>", "<|end_of_text|>"),
        markers=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|begin_of_text|>"),
    ),
    "gemma": PromptFormat(
        label="Gemma",
        merge_system="{system}\n\n{content}",
        user="<start_of_turn>user\n{content}<end_of_turn>\n",
        assistant="<start_of_turn>model\n{content}<end_of_turn>\n",
        generation="<start_of_turn>model\n",
        stop=("<end_of_turn>", "<start_of_turn>"),
        markers=("<start_of_turn>", "<end_of_turn>"),
    ),
    "zephyr": PromptFormat(
        label="Zephyr",
        system="<|system|>\n{content}</s>\n",
        user="<|user|>\n{content}</s>\n",
        assistant="<|assistant|>\n{content}</s>\n",
        generation="<|assistant|>\n",
        stop=("</s>", "<|user|>"),
        markers=("<|system|>", "<|user|>", "<|assistant|>", "</s>"),
    ),
}


# Qwen3, QwQ and other ChatML thinkers whose template opens the thinking block.
FORMATS["chatml-think"] = replace(
    FORMATS["chatml"],
    label="ChatML, thinking (Qwen3, QwQ)",
    generation="<|im_start|>assistant\n<think>\n",
)


def neutralize(text: str, markers: tuple[str, ...]) -> str:
    """Break up control strings inside a message so it cannot forge a turn."""
    for marker in markers:
        if marker in text:
            text = text.replace(marker, marker[0] + ZERO_WIDTH_SPACE + marker[1:])
    return text


def render(format_key: str, messages: list[dict], open_last: bool = False) -> tuple[str, list[str]]:
    """Write `messages` ({"role", "content"}) out as one prompt; return it and the stops.

    `open_last`: the last message is a partial assistant reply to continue, so the
    prompt ends inside it (no end marker, no new generation prompt)."""
    fmt = FORMATS[format_key]
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    system = neutralize(system, fmt.markers) or fmt.default_system
    turns = [m for m in messages if m["role"] != "system"]

    parts = [fmt.prefix]
    if system and fmt.system:
        parts.append(fmt.system.replace("{content}", system))
    for index, message in enumerate(turns):
        content = neutralize(message["content"], fmt.markers)
        if message["role"] == "user":
            if index == 0 and system and fmt.merge_system:
                content = fmt.merge_system.format(system=system, content=content)
            parts.append(fmt.user.replace("{content}", content))
        elif open_last and index == len(turns) - 1:
            parts.append(fmt.assistant.split("{content}")[0] + content)
            return "".join(parts), list(fmt.stop)
        else:
            parts.append(fmt.assistant.replace("{content}", content))
    parts.append(fmt.generation)
    return "".join(parts), list(fmt.stop)


def opens_thinking(format_key: str) -> bool:
    """Whether this format's prompt ends inside an opened `<think>` block."""
    fmt = FORMATS.get(format_key or "chatml")
    return fmt is not None and fmt.generation.rstrip().endswith("<think>")
