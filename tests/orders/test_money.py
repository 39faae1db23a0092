"""Money is shown as it is charged: ISO 4217 minor-unit exponents, locale formatting, everywhere."""

import logging
from decimal import Decimal

import pytest
from babel.numbers import get_currency_name
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.template import Context, Template

from embedded.shopper import cart_fill, element_text
from orders.models import Charge, Product
from orders.money import CURRENCY_NAMES, SUPPORTED_CURRENCIES, format_money, minor_unit_exponent, to_major, to_minor
from tests import factories
from tests.support.databases import ALL_DATABASES
from tests.support.queues import run_burst_worker

NBSP = "\u00a0"  # CLDR's currencySpacing puts a no-break space between a letter code and a digit

# ISO 4217's published minor units (the "Minor unit" column of list one), written down here so a
# change in babel's CLDR data that disagrees with the standard fails a test instead of a charge.
ISO_4217_EXPONENTS = {"EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "JPY": 0, "KWD": 3}


def test_the_supported_currencies_are_the_iso_4217_codes_written_down_here():
    assert set(SUPPORTED_CURRENCIES) == set(ISO_4217_EXPONENTS)


@pytest.mark.parametrize(("code", "exponent"), ISO_4217_EXPONENTS.items())
def test_minor_unit_exponent_is_iso_4217s(code, exponent):
    assert minor_unit_exponent(code) == exponent


@pytest.mark.parametrize(
    ("major", "code", "minor"),
    [
        ("9.50", "EUR", 950),
        ("0.01", "EUR", 1),
        ("12", "EUR", 1200),
        ("500", "JPY", 500),
        ("1", "JPY", 1),
        ("1.250", "KWD", 1250),
        ("1.25", "KWD", 1250),
        ("0.001", "KWD", 1),
        ("9.5", "USD", 950),
    ],
)
def test_to_minor_and_back_round_trip(major, code, minor):
    assert to_minor(Decimal(major), code) == minor
    assert isinstance(to_minor(Decimal(major), code), int)
    assert to_major(minor, code) == Decimal(major)
    assert to_minor(to_major(minor, code), code) == minor


@pytest.mark.parametrize(
    ("major", "code", "message"),
    [
        ("9.50", "JPY", "JPY has no minor unit"),
        ("0.5", "JPY", "JPY has no minor unit"),
        ("1.2345", "KWD", "KWD has at most 3 decimal places"),
        ("9.505", "EUR", "EUR has at most 2 decimal places"),
        ("9.5000000000000000000000000001", "EUR", "EUR has at most 2 decimal places"),  # beyond Decimal's 28 digits
        ("1E-999999999", "EUR", "EUR has at most 2 decimal places"),
        ("1E+1000000", "EUR", "too large"),  # refused before it becomes a million-digit integer
        ("92233720368547758.08", "EUR", "too large"),  # one cent above PostgreSQL's bigint
        ("0", "EUR", "must be positive"),
        ("0.00", "EUR", "must be positive"),
        ("-1", "EUR", "must be positive"),
        ("NaN", "EUR", "must be a finite number"),
        ("Infinity", "EUR", "must be a finite number"),
        ("1", "XYZ", "unsupported currency 'XYZ'"),
        ("1", "eur", "unsupported currency 'eur'"),
    ],
)
def test_to_minor_refuses_what_cannot_be_charged(major, code, message):
    with pytest.raises(ValueError, match=message):
        to_minor(Decimal(major), code)


def test_the_largest_amount_a_bigint_holds_round_trips():
    assert to_minor(Decimal("92233720368547758.07"), "EUR") == 2**63 - 1
    assert to_major(2**63 - 1, "EUR") == Decimal("92233720368547758.07")


def test_to_minor_refuses_a_float():
    with pytest.raises(TypeError, match="Decimal"):
        to_minor(9.5, "EUR")


@pytest.mark.parametrize(
    ("minor", "code", "shown"),
    [
        (1200, "EUR", "€12.00"),
        (1, "EUR", "€0.01"),
        (123456789, "USD", "$1,234,567.89"),
        (550, "GBP", "£5.50"),
        (550, "CHF", f"CHF{NBSP}5.50"),
        (500, "JPY", "¥500"),
        (1000, "JPY", "¥1,000"),
        (1250, "KWD", f"KWD{NBSP}1.250"),
        (1, "KWD", f"KWD{NBSP}0.001"),
    ],
)
def test_format_money_shows_the_currencys_own_decimals(minor, code, shown):
    assert format_money(minor, code) == shown


def test_format_money_follows_language_code(settings):
    settings.LANGUAGE_CODE = "de-de"
    assert format_money(1200, "EUR") == f"12,00{NBSP}€"
    assert format_money(1250, "KWD") == f"1,250{NBSP}KWD"


@pytest.mark.parametrize("function", [minor_unit_exponent, lambda code: format_money(100, code)])
@pytest.mark.parametrize("code", ["XYZ", "", "eur", "EURO"])
def test_an_unsupported_currency_is_refused_naming_the_supported_ones(function, code):
    with pytest.raises(ValueError, match=rf"unsupported currency {code!r}.*EUR, USD, GBP, CHF, JPY, KWD"):
        function(code)


def test_the_money_filter_delegates_to_format_money():
    rendered = Template('{% load money %}{{ minor|money:"JPY" }}|{{ minor|money:currency }}').render(
        Context({"minor": 500, "currency": "KWD"})
    )
    assert rendered == f"¥500|KWD{NBSP}0.500"


@pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)
def test_an_unsupported_currency_is_refused_by_the_database():
    with pytest.raises(IntegrityError, match="product_currency_supported"), transaction.atomic():
        Product.objects.create(sku="doubloon-mug", name="Doubloon mug", price=100, currency="XYZ")
    assert not Product.objects.filter(sku="doubloon-mug").exists()


@pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)
def test_a_yen_product_is_shown_as_charged_in_catalogue_checkout_order_page_email_and_log(client, smtp, caplog):
    """The issue's case: a product priced 500 in JPY is charged ¥500 and must be shown as ¥500."""
    product = factories.product(sku="yen-mug", name="Yen mug", price=500, currency="JPY")

    assert element_text(client.get("/").content.decode(), "#price-yen-mug") == "¥500"
    cart_fill(client, [("yen-mug", 2)])
    cart = client.get("/cart/").content.decode()
    assert (element_text(cart, "#unit-price-yen-mug"), element_text(cart, "#cart-total")) == ("¥500", "¥1,000")
    assert element_text(client.get("/checkout/").content.decode(), "#checkout-total") == "¥1,000"

    with caplog.at_level(logging.INFO, logger="orders.services"):
        order = factories.order(product=product, quantity=2)
    assert f"order {order.pk} created: 1 line(s), total ¥1,000" in caplog.messages
    run_burst_worker()
    charge = Charge.objects.get(order=order)
    assert (charge.amount, charge.currency) == (1000, "JPY")  # what the gateway was asked to take

    page = client.get(f"/orders/{order.pk}/").content.decode()
    assert element_text(page, "#order-status") == "paid"
    assert element_text(page, "#line-amount-1") == "¥1,000"
    assert element_text(page, "#order-total") == "¥1,000"

    call_command("mailer", "--once", verbosity=0)
    assert len(smtp.messages) == 1
    body = smtp.messages[0].get_content().splitlines()
    assert "  2 x Yen mug: ¥1,000" in body
    assert "Total: ¥1,000" in body


@pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)
def test_a_euro_product_keeps_its_cents_in_the_catalogue(client, product):
    assert element_text(client.get("/").content.decode(), "#price-procfile-mug") == "€12.00"


def test_the_currency_names_written_in_the_module_are_cldrs():
    """orders.money keeps babel off the start-up path, so its names are written out: they must be babel's."""
    assert {code: get_currency_name(code, locale="en") for code in SUPPORTED_CURRENCIES} == CURRENCY_NAMES
