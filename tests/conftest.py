import pytest
from django.contrib.auth import get_user_model

PASSWORD = "a-long-passphrase-1"  # noqa: S105 - a test fixture's password


@pytest.fixture(autouse=True)
def _test_settings(settings):
    # Tests run with DEBUG off, so the development host names must be listed to be allowed.
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost", "127.0.0.1"]
    # Hashing test users' passwords the slow, safe way costs seconds and proves nothing.
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """A new channel layer object for each test. Each async test runs on its own event
    loop, and a test that fails with sockets still open would leave the Redis layer's
    receive state bound to a loop that is gone, failing every test after it."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def make_user(db):
    def make(username="alice", password=PASSWORD, **extra):
        return get_user_model().objects.create_user(username, password=password, **extra)

    return make


@pytest.fixture(scope="session")
def fake_server():
    from tests.fake_backend import FakeBackend

    with FakeBackend() as server:
        yield server


@pytest.fixture
def fake(fake_server):
    """The session's fake backend, reset to well-behaved defaults for each test."""
    fake_server.configure()
    fake_server.requests.clear()
    return fake_server


@pytest.fixture
def chat_model(db, fake):
    """An enabled OpenAI-compatible model served by the loopback fake."""
    from providers.models import Model, Provider

    provider = Provider.objects.create(
        name="Fake",
        wire_format="openai",
        base_url=fake.url + "/v1",
        requires_key=False,
        enabled=True,
    )
    return Model.objects.create(
        provider=provider,
        remote_id="fake-model",
        display_name="Fake Model",
        enabled=True,
        context_window=8192,
        default_max_tokens=None,
    )


@pytest.fixture
def started_jobs(monkeypatch):
    """Every generation job started in this test's process, so a test can await one whole
    (its title call included) instead of sleeping."""
    from chat.live import jobs

    started, original = [], jobs.start

    def recording(plan, **options):
        job = original(plan, **options)
        started.append(job)
        return job

    monkeypatch.setattr(jobs, "start", recording)
    return started


@pytest.fixture
def cookie_for():
    """The Cookie header a real client of a running server sends for `user`."""
    from tests.chat_support import session_cookie

    return lambda user: session_cookie(user).decode()


@pytest.fixture(scope="session", autouse=True)
def _close_worker_connections(django_db_setup):
    """The worker threads keep their database connections (chat.db, asgiref); close them
    before the test database is dropped, which PostgreSQL refuses while anyone is connected."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    from chat import db

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)
    if db.ONE_THREAD.thread is not None:
        db.on_database_thread(connections.close_all)


@pytest.fixture(scope="session")
def app_server(django_db_setup, django_db_blocker):
    """The real app under daphne on the test database, for the browser and API tests."""
    from tests.live_server import Daphne

    server = Daphne().start()
    yield server
    server.stop()
