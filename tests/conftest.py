import pytest
from django.contrib.auth import get_user_model

PASSWORD = "a-long-passphrase-1"  # noqa: S105 - a test fixture's password


@pytest.fixture
def make_user(db):
    def make(username="alice", password=PASSWORD, **extra):
        return get_user_model().objects.create_user(username, password=password, **extra)

    return make
