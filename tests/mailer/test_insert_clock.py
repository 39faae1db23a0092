"""Times written at insert come from PostgreSQL's clock, like every time compared across hosts:
an order's and a message's ``created_at`` and a message's first ``due_at`` are database
defaults, so a host whose clock is off cannot put an order in the sweep's past or an email in
the mailer's future."""

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from core.dbclock import db_now
from mailer.services import outbox_message_create
from tests import factories

pytestmark = pytest.mark.django_db


def test_a_message_and_an_order_take_their_insert_times_from_the_database_not_the_host(product):
    # This host's clock an hour ahead (what Django's own time would write); PostgreSQL's is true.
    ahead = timezone.now() + timedelta(hours=1)
    with mock.patch("django.utils.timezone.now", return_value=ahead):
        message = outbox_message_create(key="clock", to="a@example.com", subject="s", body="b")
        order = factories.order(product=product)
    now = db_now()
    for value in (message.due_at, message.created_at, order.created_at):
        assert abs((value - now).total_seconds()) < 60, value
