"""Product pictures: static files under products/, served under hashed names; each with its text;
the demo catalogue ships its own; the product page shows picture, stock and a quantity to add."""

import importlib
import re

import pytest
from django.apps import apps as django_apps
from django.test import Client

from embedded.shopper import element, hidden
from orders.models import Product
from tests import factories
from tests.support.databases import ALL_DATABASES

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)

DEMO = importlib.import_module("orders.migrations.0011_product_image").DEMO_PICTURES


def test_the_demo_catalogue_gets_its_pictures_unless_staff_gave_one():
    for sku in DEMO:
        factories.product(sku=sku, name=sku.replace("-", " ").capitalize())
    Product.objects.filter(sku="procfile-mug").update(image="products/backing-service-stickers.svg", image_alt="Mine")
    importlib.import_module("orders.migrations.0011_product_image").add_demo_pictures(django_apps, None)
    pictures = dict(Product.objects.values_list("sku", "image"))
    assert pictures["procfile-mug"] == "products/backing-service-stickers.svg"  # staff's choice is kept
    for sku in set(DEMO) - {"procfile-mug"}:
        assert pictures[sku] == f"products/{sku}.svg"
        assert Product.objects.get(sku=sku).image_alt == DEMO[sku]


def test_each_picture_is_served_under_its_hashed_name_with_its_text_and_size(client: Client):
    for sku, alt in DEMO.items():
        factories.product(sku=sku, name=sku)
        Product.objects.filter(sku=sku).update(image=f"products/{sku}.svg", image_alt=alt)
    for path in ("/", *(f"/products/{sku}/" for sku in DEMO)):
        page = client.get(path).content.decode()
        images = re.findall(r"<img [^>]*>", page)
        assert images, path
        for tag in images:
            src = re.search(r'src="([^"]+)"', tag)[1]
            assert re.fullmatch(r"/static/products/[a-z-]+\.[0-9a-f]{12}\.svg", src), src
            assert re.search(r'alt="[^"]{10,}"', tag) and 'width="480"' in tag and 'height="360"' in tag, tag
            served = client.get(src)
            assert served.status_code == 200 and served["Content-Type"] == "image/svg+xml"
            assert "max-age=315360000" in served["Cache-Control"]


def test_the_product_page_shows_the_stock_and_adds_the_quantity_chosen():
    browser = Client(enforce_csrf_checks=True)
    factories.product(stock=40)
    page = browser.get("/products/procfile-mug/").content.decode()
    assert element(page, "#stock-procfile-mug").text == "In stock"
    assert element(page, "[for=quantity-procfile-mug]").text == "Quantity"
    assert element(page, "#quantity-procfile-mug").attrs["value"] == "1"
    token = hidden("csrfmiddlewaretoken", page)
    added = browser.post("/cart/add/", {"product": "procfile-mug", "quantity": "3", "csrfmiddlewaretoken": token})
    assert added.status_code == 303
    assert element(browser.get("/cart/").content.decode(), "#cart-quantity-procfile-mug").attrs["value"] == "3"
    Product.objects.filter(sku="procfile-mug").update(stock=2)
    assert element(browser.get("/products/procfile-mug/").content.decode(), "#stock-procfile-mug").text == "Only 2 left"


def test_staff_pick_a_picture_from_the_static_files_and_must_say_what_it_shows(client):
    client.force_login(factories.staff_user(superuser=True))
    product = factories.product()
    url = f"/admin/orders/product/{product.pk}/change/"
    page = client.get(url).content.decode()
    options = re.findall(r'<option value="(products/[^"]+)"', page)
    assert options == sorted(f"products/{sku}.svg" for sku in DEMO)
    form = {
        "sku": product.sku,
        "name": product.name,
        "description": "",
        "price": "12.00",
        "currency": "EUR",
        "stock": "10",
        "is_active": "on",
        "image": "products/procfile-mug.svg",
        "image_alt": "  ",
    }
    refused = client.post(url, form)
    assert refused.status_code == 200
    assert "Say in words what the picture shows" in refused.content.decode()
    assert client.post(url, {**form, "image_alt": "A blue mug"}).status_code == 302
    assert Product.objects.filter(pk=product.pk, image="products/procfile-mug.svg", image_alt="A blue mug").exists()
    assert client.post(url, {**form, "image": "../settings.py", "image_alt": "x"}).status_code == 200  # not a choice
