"""A process draws everything a reply draws as it starts, with no query."""

import pytest
from django.template import engines

from chat.live import warm


@pytest.mark.django_db
def test_warming_up_compiles_the_live_templates_and_asks_the_database_nothing(
    django_assert_num_queries,
):
    partials = engines["django"].engine.template_loaders[0]  # django-template-partials
    loader = partials.loaders[0]  # Django's cached loader, under it
    loader.reset()
    with django_assert_num_queries(0):
        warm.warm_up()
    assert "chat/live.html" in loader.get_template_cache
