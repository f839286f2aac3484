"""The seed catalog installs every provider and model from the provider documents, once."""

import pytest
from django.core.management import call_command

from providers.models import Model, Provider

WORKERS_AI_MODELS = [
    "@cf/qwen/qwen1.5-0.5b-chat",
    "@hf/thebloke/llamaguard-7b-awq",
    "@hf/thebloke/neural-chat-7b-v3-1-awq",
    "@cf/deepseek-ai/deepseek-math-7b-base",
    "@cf/meta/llama-2-7b-chat-fp16",
    "@cf/mistral/mistral-7b-instruct-v0.1",
    "@cf/tinyllama/tinyllama-1.1b-chat-v1.0",
    "@hf/thebloke/codellama-7b-instruct-awq",
    "@cf/thebloke/discolm-german-7b-v1-awq",
    "@cf/meta/llama-2-7b-chat-int8",
    "@hf/thebloke/mistral-7b-instruct-v0.1-awq",
    "@cf/qwen/qwen1.5-7b-chat-awq",
    "@hf/thebloke/llama-2-13b-chat-awq",
    "@hf/thebloke/deepseek-coder-6.7b-base-awq",
    "@hf/thebloke/openhermes-2.5-mistral-7b-awq",
    "@hf/thebloke/deepseek-coder-6.7b-instruct-awq",
    "@cf/deepseek-ai/deepseek-math-7b-instruct",
    "@cf/tiiuae/falcon-7b-instruct",
    "@hf/thebloke/zephyr-7b-beta-awq",
    "@cf/qwen/qwen1.5-1.8b-chat",
    "@cf/defog/sqlcoder-7b-2",
    "@cf/microsoft/phi-2",
    "@cf/qwen/qwen1.5-14b-chat-awq",
    "@cf/openchat/openchat-3.5-0106",
]
NEBULA_MODELS = [
    "deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
    "meta-llama/Llama-3.3-70B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct",
    "Qwen/Qwen2.5-Coder-32B-Instruct",
]


def snapshot():
    return (
        list(Provider.objects.order_by("pk").values()),
        list(Model.objects.order_by("pk").values()),
    )


@pytest.fixture
def no_provider_keys(monkeypatch):
    for name in (
        "DEEPINFRA_TOKEN",
        "NEBULA_API_KEY",
        "CLOUDFLARE_API_TOKEN",
        "CLOUDFLARE_ACCOUNT_ID",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.django_db
def test_catalog_installs_every_seed_provider_and_model(no_provider_keys):
    call_command("install_catalog")

    def models_of(name):
        return set(Model.objects.filter(provider__name=name).values_list("remote_id", flat=True))

    assert models_of("Cloudflare Workers AI") == set(WORKERS_AI_MODELS)
    assert models_of("Nebula Block") == set(NEBULA_MODELS)
    assert models_of("DeepInfra") == {"mistralai/Mistral-Nemo-Instruct-2407"}
    assert models_of("LibertAI (llama.cpp)") == {
        "neuralbeagle-7b",
        "mixtral-8x7b-instruct",
        "deepseek-coder-6.7b",
    }
    assert models_of("LibertAI (OpenAI-compatible)") == {"neuralbeagle-7b"}

    fp16 = Model.objects.get(remote_id="@cf/meta/llama-2-7b-chat-fp16")
    assert (fp16.default_max_tokens, fp16.context_window, fp16.max_output_tokens) == (
        2500,
        3072,
        2500,
    )
    assert Model.objects.get(remote_id="deepseek-coder-6.7b").prompt_format == "alpaca"
    assert Model.objects.get(remote_id="mixtral-8x7b-instruct").prompt_format == "chatml"
    assert Provider.objects.get(name="DeepInfra").base_url == "https://api.deepinfra.com/v1/openai"


@pytest.mark.django_db
def test_running_the_catalog_twice_changes_nothing(no_provider_keys):
    call_command("install_catalog")
    before = snapshot()
    call_command("install_catalog")
    assert snapshot() == before


@pytest.mark.django_db
def test_providers_stay_disabled_until_they_have_a_key(no_provider_keys, monkeypatch):
    monkeypatch.setenv("DEEPINFRA_TOKEN", "from-the-environment")
    call_command("install_catalog")
    enabled = dict(Provider.objects.values_list("name", "enabled"))
    assert enabled["DeepInfra"] is True
    assert enabled["Nebula Block"] is False
    assert enabled["Cloudflare Workers AI"] is False
    assert enabled["LibertAI (llama.cpp)"] is True  # needs no key
    assert Provider.objects.get(name="DeepInfra").api_key() == "from-the-environment"


@pytest.mark.django_db
def test_catalog_leaves_an_admins_changes_alone(no_provider_keys):
    call_command("install_catalog")
    Model.objects.filter(remote_id="@cf/microsoft/phi-2").update(enabled=False, display_name="Phi")
    call_command("install_catalog")
    phi = Model.objects.get(remote_id="@cf/microsoft/phi-2")
    assert (phi.enabled, phi.display_name) == (False, "Phi")
