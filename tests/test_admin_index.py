"""The admin as staff open it: the shop's apps first under a summary of the day whose every figure
links to the list it counts; an order list that shows why a payment failed and finds orders by
product name; an order page without empty headings; django-rq's dashboard naming rq-scheduler."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from embedded.shopper import element, element_text
from orders.models import Order, OrderStatus, PaymentMethod
from orders.services import order_process
from tests import factories
from tests.support.databases import ALL_DATABASES

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)


@pytest.fixture
def staff(client):
    """The test client, logged in as a superuser."""
    client.force_login(factories.staff_user(superuser=True))
    return client


def list_count(staff, url: str) -> int:
    """Return how many rows the admin list at ``url`` counts ("3 orders", "1 product")."""
    page = staff.get(url).content.decode()
    match = re.search(r'<span class="small quiet">(\d+) result', page)
    match = match or re.search(r"(\d+) (?:orders?|products?)\b", page)
    assert match, page
    return int(match.group(1))


def test_the_index_puts_the_shop_first_under_a_summary_of_the_day_linking_to_what_it_counts(staff):
    mug = factories.product(price=1200)
    shirt = factories.product(sku="shirt", name="Formation shirt", price=2550, stock=4)
    for product in (mug, shirt):
        order_process(order_id=factories.order(product=product).pk)
    order_process(order_id=factories.order(payment_method=PaymentMethod.DECLINED).pk)
    factories.order()  # pending
    yesterday = factories.order()
    order_process(order_id=yesterday.pk)
    Order.objects.filter(pk=yesterday.pk).update(created_at=timezone.now() - timedelta(days=1))

    page = staff.get("/admin/").content.decode()
    figures = {
        name: element_text(page, f"#summary-{name}")
        for name in ("placed", "takings", "failed", "pending", "unsettled", "to-ship", "low-stock")
    }
    assert figures == {
        "placed": "4",
        "takings": "2 (€37.50)",
        "failed": "1",
        "pending": "1",
        "unsettled": "0",
        "to-ship": "3",
        "low-stock": "1",
    }
    # Each figure's link lists what it counts.
    expected = {"placed": 4, "takings": 2, "failed": 1, "pending": 1, "unsettled": 0, "to-ship": 3, "low-stock": 1}
    for name, count in expected.items():
        assert list_count(staff, element(page, f"#summary-{name}").attrs["href"]) == count, name
    # The apps: the shop's first, then the rest by name.
    apps = re.findall(r'<caption>\s*<a href="/admin/(\w+)/"', page)
    assert apps[:2] == ["orders", "mailer"], apps
    assert apps[2:] == sorted(apps[2:]) and "auth" in apps[2:], apps


def test_staff_without_the_view_permission_on_orders_see_no_summary(client):
    client.force_login(factories.staff_user())
    page = client.get("/admin/").content.decode()
    assert 'id="shop-summary"' not in page


def test_the_order_list_shows_why_a_payment_failed_and_finds_orders_by_product_name(staff):
    mug = factories.product()
    shirt = factories.product(sku="shirt", name="Formation shirt", price=2550)
    failed = order_process(order_id=factories.order(product=shirt, payment_method=PaymentMethod.DECLINED).pk)
    order_process(order_id=factories.order(product=mug).pk)
    page = staff.get("/admin/orders/order/?status__exact=failed").content.decode()
    assert element_text(page, ".column-failure_reason") == "Failure reason"
    assert failed.failure_reason and failed.failure_reason in element_text(page, ".field-failure_reason")
    found = staff.get("/admin/orders/order/?q=shirt").content.decode()
    assert re.findall(r"/admin/orders/order/([0-9a-f-]{36})/change/", found) == [str(failed.pk)]


def test_an_order_page_shows_no_heading_over_nothing(staff):
    failed = order_process(order_id=factories.order(payment_method=PaymentMethod.DECLINED).pk)
    paid = order_process(order_id=factories.order().pk)
    assert failed.status == OrderStatus.FAILED and paid.status == OrderStatus.PAID
    failed_page = staff.get(f"/admin/orders/order/{failed.pk}/change/").content.decode()
    paid_page = staff.get(f"/admin/orders/order/{paid.pk}/change/").content.decode()
    assert 'id="charge-group"' not in failed_page
    assert paid.charge.gateway_charge_id in element_text(paid_page, "#charge-group")
    assert "Status history" in element_text(failed_page, "#status_changes-group")


def test_the_queue_dashboard_says_when_no_scheduler_runs(staff):
    page = staff.get("/admin/django_rq/dashboard/").content.decode()
    assert element_text(page, "#rq-scheduler-state").startswith("No scheduler is running")
    assert "cron" not in element_text(page, "#content").lower()
