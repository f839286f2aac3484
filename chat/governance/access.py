"""Which model a message may use: the one rule of Model.objects.available_to (an
enabled model on an enabled provider; a superuser may use all, others a model with
no groups or one of their groups'), for one model, as every message asks it.

Written out over chat.rows: through the ORM, the DISTINCT over the groups join
took 1.6 ms, twenty times the query's own time, and raw() still 0.5 ms.
"""

import functools

from django.contrib.auth.models import Group
from django.db import connection

from chat import rows
from providers.models import Model, Provider


def model_for(user, pk: int) -> Model | None:
    """The model with its provider (one statement, joined), if `user` may use it now;
    else None."""
    return rows.one_with(Model, "provider", _available(), [pk, user.is_superuser, user.pk])


@functools.cache
def _available() -> str:
    quote = connection.ops.quote_name
    model, provider = quote(Model._meta.db_table), quote(Provider._meta.db_table)
    allowed = quote(Model.allowed_groups.through._meta.db_table)
    memberships = quote(Group.user_set.through._meta.db_table)
    return f"""
        {model}.id = %s AND {model}.enabled AND {provider}.enabled
        AND (
            %s
            OR NOT EXISTS (SELECT 1 FROM {allowed} a WHERE a.model_id = {model}.id)
            OR EXISTS (
                SELECT 1 FROM {allowed} a JOIN {memberships} g ON g.group_id = a.group_id
                WHERE a.model_id = {model}.id AND g.user_id = %s
            )
        )"""  # noqa: S608 - table names from the models, values as parameters
