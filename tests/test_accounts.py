import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

PASSWORD = "correct-horse-battery-7"
User = get_user_model()


def signup(client, username):
    return client.post(
        reverse("signup"),
        {"username": username, "password1": PASSWORD, "password2": PASSWORD},
    )


@pytest.mark.django_db
def test_first_signup_becomes_admin_and_second_does_not(client, settings):
    settings.SIGNUP_POLICY = "open"
    response = signup(client, "founder")
    assert response.status_code == 302
    founder = User.objects.get(username="founder")
    assert founder.is_superuser and founder.is_staff and founder.is_active

    client.logout()
    signup(client, "second")
    second = User.objects.get(username="second")
    assert second.is_active
    assert not second.is_staff and not second.is_superuser


@pytest.mark.django_db
def test_open_signup_logs_the_new_user_in(client, settings):
    settings.SIGNUP_POLICY = "open"
    response = signup(client, "founder")
    assert response.headers["Location"] == reverse("home")
    assert client.get(reverse("home")).status_code == 200


@pytest.mark.django_db
def test_approval_mode_keeps_a_new_account_out_until_an_admin_activates_it(
    client, settings, make_user
):
    settings.SIGNUP_POLICY = "approval"
    make_user("admin", is_staff=True, is_superuser=True)

    response = signup(client, "newbie")
    assert response.headers["Location"] == reverse("pending")
    assert "waiting for an administrator" in client.get(reverse("pending")).content.decode()
    assert not User.objects.get(username="newbie").is_active

    response = client.post(reverse("login"), {"username": "newbie", "password": PASSWORD})
    assert response.status_code == 200
    assert "waiting for an administrator" in response.content.decode()
    assert client.get(reverse("home")).status_code == 302  # still anonymous

    User.objects.filter(username="newbie").update(is_active=True)
    response = client.post(reverse("login"), {"username": "newbie", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get(reverse("home")).status_code == 200


@pytest.mark.django_db
def test_approval_mode_does_not_reveal_pending_accounts_to_wrong_passwords(
    client, settings, make_user
):
    settings.SIGNUP_POLICY = "approval"
    make_user("admin", is_staff=True, is_superuser=True)
    make_user("newbie", password=PASSWORD, is_active=False)
    response = client.post(reverse("login"), {"username": "newbie", "password": "wrong"})
    assert "waiting for an administrator" not in response.content.decode()


@pytest.mark.django_db
def test_closed_mode_refuses_signups(client, settings, make_user):
    settings.SIGNUP_POLICY = "closed"
    make_user("admin", is_staff=True, is_superuser=True)
    assert client.get(reverse("signup")).status_code == 403
    response = signup(client, "intruder")
    assert response.status_code == 403
    assert not User.objects.filter(username="intruder").exists()


@pytest.mark.django_db
def test_closed_mode_still_lets_the_first_admin_in_on_an_empty_site(client, settings):
    settings.SIGNUP_POLICY = "closed"
    signup(client, "founder")
    assert User.objects.get(username="founder").is_superuser


@pytest.mark.django_db
def test_anonymous_visitor_is_sent_to_the_login_page(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith(reverse("login"))
    assert b"Log in" in client.get(response.headers["Location"]).content


@pytest.mark.django_db
def test_password_change_keeps_the_user_logged_in_with_the_new_password(client, make_user):
    make_user("alice", password=PASSWORD)
    client.login(username="alice", password=PASSWORD)
    new = "another-long-passphrase-9"
    response = client.post(
        reverse("password_change"),
        {"old_password": PASSWORD, "new_password1": new, "new_password2": new},
    )
    assert response.status_code == 302
    assert User.objects.get(username="alice").check_password(new)


def test_every_page_carries_a_strict_content_security_policy(client, db):
    csp = client.get(reverse("login")).headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
