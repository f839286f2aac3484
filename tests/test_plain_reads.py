"""The plain-SQL reads every start makes give the ORM's answers, in every case."""

import itertools

import pytest
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from chat import ownership
from chat.governance import access, quotas
from chat.models import ApiKey, Conversation, Message, Preference, Quota, UsageRecord
from providers.models import Model, Provider

pytestmark = pytest.mark.django_db


def test_one_model_is_available_exactly_when_the_orm_says_so(make_user):
    """Every mix of model and provider switches, groups allowed and membership."""
    staff, outsider = Group.objects.create(name="staff"), Group.objects.create(name="others")
    people = [
        make_user("member"),
        make_user("stranger"),
        make_user("root", is_superuser=True, is_staff=True),
    ]
    people[0].groups.add(staff)
    people[1].groups.add(outsider)
    models = []
    cases = itertools.product([True, False], [True, False], [(), (staff,), (outsider, staff)])
    for n, (model_on, provider_on, groups) in enumerate(cases):
        provider = Provider.objects.create(name=f"p{n}", base_url="http://x", enabled=provider_on)
        model = Model.objects.create(
            provider=provider, remote_id=f"m{n}", display_name=f"M{n}", enabled=model_on
        )
        model.allowed_groups.set(groups)
        models.append(model)
    for person, model in itertools.product(people, models):
        fresh = ownership.current_user(person.pk)
        expected = Model.objects.available_to(person).filter(pk=model.pk).first()
        found = access.model_for(fresh, model.pk)
        assert found == expected, (person.username, model.remote_id)
        if found is not None:
            assert found.provider.name == model.provider.name  # loaded with the row
    assert access.model_for(people[2], 10**9) is None


def test_the_current_account_has_its_rights_and_loads_the_rest_on_demand(make_user):
    person = make_user("alice", is_staff=True)
    account = ownership.current_user(person.pk)
    assert (account.pk, account.is_staff, account.is_superuser, account.is_active) == (
        person.pk, True, False, True,
    )  # fmt: skip
    assert account.is_staff is True  # a bool on every database, not SQLite's 1
    assert account.username == "alice" and account.email == person.email
    person.is_active = False
    person.save()
    assert ownership.current_user(person.pk) is None
    assert ownership.current_user(10**9) is None


def _replies_of_alice_and_bob(make_user):
    """Alice with one reply being written and one done; Bob with one being written."""
    alice, bob = make_user("alice"), make_user("bob")
    mine, theirs = Conversation.objects.create(owner=alice), Conversation.objects.create(owner=bob)
    running = Message.objects.create(conversation=mine, role="assistant", status="streaming")
    Message.objects.create(conversation=mine, role="assistant", status="complete")
    Message.objects.create(conversation=theirs, role="assistant", status="streaming")
    return alice, bob, running, theirs


def test_streaming_ids_are_the_persons_own_running_replies(make_user):
    alice, _, running, _ = _replies_of_alice_and_bob(make_user)
    assert ownership.user_streaming_ids(alice.pk) == [running.pk]
    assert ownership.user_streaming_ids(make_user("carol").pk) == []


def test_limits_come_from_own_and_group_quotas_and_default_without_any(make_user, settings):
    settings.MAX_CONCURRENT_GENERATIONS = 3
    alice, bob = make_user("alice"), make_user("bob")
    team = Group.objects.create(name="team")
    assert quotas.limits_for(alice) == quotas.Limits(max_concurrent=3)
    bob.groups.add(team)
    Quota.objects.create(group=team, requests_per_minute=5)
    assert quotas.limits_for(bob).requests_per_minute == 5
    Quota.objects.create(user=alice, tokens_per_day=100, max_concurrent=1)
    assert quotas.limits_for(alice) == quotas.Limits(tokens_per_day=100, max_concurrent=1)


def test_in_flight_counts_own_replies_and_api_requests_only_for_people_with_a_key(make_user):
    alice, bob, running, theirs = _replies_of_alice_and_bob(make_user)
    api = {"purpose": "api", "status": "streaming", "model_name": "m", "provider_name": "p"}
    UsageRecord.objects.create(user=alice, **api)
    assert quotas.in_flight(alice.pk) == quotas.InFlight([running.pk], 0)  # no key: not read
    ApiKey.objects.create(user=alice, name="k", prefix="sk-x", digest="0" * 64)
    assert quotas.in_flight(alice.pk) == quotas.InFlight([running.pk], 1)
    assert quotas.in_flight(alice.pk).count(leaving_out=running.pk) == 1
    stale = UsageRecord.objects.create(user=alice, **api)
    UsageRecord.objects.filter(pk=stale.pk).update(created=timezone.now() - quotas.API_STALE * 2)
    UsageRecord.objects.create(user=alice, **{**api, "status": "complete"})
    UsageRecord.objects.create(user=alice, **{**api, "purpose": "reply"})
    assert quotas.in_flight(alice.pk).api_requests == 1  # neither stale, ended nor a chat's
    assert quotas.in_flight(bob.pk) == quotas.InFlight([theirs.messages.get().pk], 0)


def test_preferences_are_made_on_the_first_start_and_remember_the_last_model(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    provider = Provider.objects.create(name="P", base_url="http://127.0.0.1:9/v1")
    first, second = (Model.objects.create(provider=provider, remote_id=n) for n in "ab")
    with transaction.atomic():
        ownership.lock_preferences(alice, first)
    made = Preference.objects.get(user=alice)
    assert made.last_model_id == first.pk
    with transaction.atomic():
        ownership.lock_preferences(alice, second)
        ownership.lock_preferences(bob, second)
    assert Preference.objects.get(user=alice).pk == made.pk
    assert {(p.user_id, p.last_model_id) for p in Preference.objects.all()} == {
        (alice.pk, second.pk),
        (bob.pk, second.pk),
    }
    with pytest.raises(RuntimeError), transaction.atomic():  # a refused start keeps nothing
        ownership.lock_preferences(alice, first)
        raise RuntimeError
    assert Preference.objects.get(user=alice).last_model_id == second.pk


def test_a_session_reads_as_django_reads_it_until_it_expires(db, time_machine):
    from django.contrib.sessions.backends.db import SessionStore as DjangoStore

    from chat.accounts.session_store import SessionStore

    time_machine.move_to("2026-01-01 12:00Z")
    session = SessionStore()
    session["who"] = "alice"
    session.set_expiry(60)
    session.save()
    key = session.session_key
    for store in (SessionStore, DjangoStore):
        assert dict(store(key).load()) == {"who": "alice", "_session_expiry": 60}
    assert SessionStore("no-such-key").load() == {}
    time_machine.move_to("2026-01-01 12:01:01Z")
    for store in (SessionStore, DjangoStore):
        expired = store(key)
        assert expired.load() == {} and expired.session_key is None
