"""The per-conversation settings panel: only what the chosen model accepts.

Ranges are the widest the seed providers document; anything outside them is
refused with a message instead of being passed on to the backend.
"""

from django import forms

from providers.models import REASONING_EFFORTS

RANGES = {
    "temperature": (0.0, 2.0, "Temperature"),
    "top_p": (0.0, 1.0, "Top p"),
    "top_k": (0, 1000, "Top k"),
    "repetition_penalty": (0.01, 5.0, "Repetition penalty"),
    "presence_penalty": (-2.0, 2.0, "Presence penalty"),
    "frequency_penalty": (-2.0, 2.0, "Frequency penalty"),
}
MAX_SYSTEM_PROMPT = 8000
MAX_TOKENS_CEILING = 1_000_000


class SettingsForm(forms.Form):
    system_prompt = forms.CharField(
        required=False, max_length=MAX_SYSTEM_PROMPT, widget=forms.Textarea(attrs={"rows": 3})
    )

    def __init__(self, *args, model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.model = model
        ceiling = (model.max_output_tokens if model else None) or MAX_TOKENS_CEILING
        default = model.default_max_tokens if model else None
        self.fields["max_tokens"] = forms.IntegerField(
            required=False,
            min_value=1,
            max_value=ceiling,
            label="Max tokens",
            widget=forms.NumberInput(attrs={"placeholder": default or "model default"}),
        )
        if model is not None and model.reasoning:
            self.fields["reasoning_effort"] = forms.ChoiceField(
                required=False,
                label="Thinking",
                choices=[("", "Model default"), *REASONING_EFFORTS],
            )
        defaults = (model.param_defaults or {}) if model else {}
        for name in (model.accepted_params or []) if model else []:
            if name not in RANGES:
                continue
            low, high, label = RANGES[name]
            field_class = forms.IntegerField if isinstance(low, int) else forms.FloatField
            attrs = {"placeholder": defaults.get(name, ""), "step": "any"}
            self.fields[name] = field_class(
                required=False,
                min_value=low,
                max_value=high,
                label=label,
                widget=forms.NumberInput(attrs=attrs),
            )

    def apply(self, conversation):
        conversation.system_prompt = self.cleaned_data["system_prompt"]
        conversation.settings = {
            name: value
            for name, value in self.cleaned_data.items()
            if name != "system_prompt" and value not in (None, "")
        }
        conversation.save(update_fields=["system_prompt", "settings"])


def for_conversation(conversation, data=None) -> SettingsForm:
    initial = {"system_prompt": conversation.system_prompt, **(conversation.settings or {})}
    return SettingsForm(data, initial=initial, model=conversation.model)
