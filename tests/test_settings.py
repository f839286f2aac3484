"""Start-up configuration fails loudly, naming the variable at fault."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def manage_check(**env):
    return manage("check", **env)


def manage(*command, **env):
    """manage.py COMMAND on the embedded defaults, with `env` over them."""
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "value",
    ["not a url", "mysql://root@localhost/db", "postgres://localhost:notaport/db", "postgres://h/"],
)
def test_malformed_database_url_fails_at_start_up_naming_it(value):
    result = manage_check(DATABASE_URL=value)
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REDIS_URL", "http://example"),
        ("DEBUG", "maybe"),
        ("SIGNUP_POLICY", "sometimes"),
        ("CSRF_TRUSTED_ORIGINS", "chat.example.com"),
    ],
)
def test_other_bad_values_fail_naming_the_variable(name, value):
    result = manage_check(**{name: value})
    assert result.returncode != 0
    assert name in result.stderr


def test_secrets_are_required_when_debug_is_off():
    result = manage_check(DEBUG="false", SECRET_KEY="", ALLOWED_HOSTS="chat.example.com")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


@pytest.mark.parametrize("weak", ["", "short", "change-me-to-another-long-random-string", "a" * 64])
def test_a_missing_or_weak_provider_keys_secret_is_refused_when_debug_is_off(weak):
    result = manage_check(
        DEBUG="false",
        SECRET_KEY="s" * 10 + "ecret-key-long-and-random-enough-0123456789",
        PROVIDER_KEYS_SECRET=weak,
        ALLOWED_HOSTS="chat.example.com",
    )
    assert result.returncode != 0
    assert "PROVIDER_KEYS_SECRET" in result.stderr
    assert "Fernet.generate_key()" in result.stderr  # says how to make one


@pytest.mark.parametrize(("workers", "each"), [("", 1500), ("1", 1500), ("2", 750), ("3", 500)])
def test_the_processes_behind_one_port_share_the_frame_budget(workers, each):
    """`make run WORKERS=N` (chatsite.serve) tells its processes N: they share the
    machine's cores, so each sends its part of STREAM_FRAMES_PER_SECOND."""
    shown = manage(
        "shell", "-c", "from django.conf import settings; print(settings.STREAM_FRAMES_PER_SECOND)",
        WORKERS=workers, STREAM_FRAMES_PER_SECOND="1500",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split()[-1] == str(each)


def test_embedded_defaults_pass_the_system_check():
    result = manage_check()
    assert result.returncode == 0, result.stderr


def test_production_settings_pass_the_deploy_check():
    import secrets

    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    environment.update(
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        PROVIDER_KEYS_SECRET=secrets.token_urlsafe(32),
        ALLOWED_HOSTS="chat.example.com",
        CSRF_TRUSTED_ORIGINS="https://chat.example.com",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_responses_carry_hsts_secure_cookies_and_csp(settings, client, db):
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_SSL_REDIRECT = True
    plain = client.get("/accounts/login/")
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")
    proxied = client.get("/accounts/login/", headers={"X-Forwarded-Proto": "https"})
    assert proxied.status_code == 200
    assert "max-age=31536000" in proxied.headers["Strict-Transport-Security"]
    assert "default-src 'self'" in proxied.headers["Content-Security-Policy"]
