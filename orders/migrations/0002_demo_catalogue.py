"""Put a demo catalogue in a new install, so the shop has something to sell without manual steps.

Products are matched by SKU: rerunning the release phase never duplicates them, and a product
an admin has changed is left as it is.
"""

from django.db import migrations

DEMO_PRODUCTS = [
    ("procfile-mug", "Procfile mug", "Holds one process type of coffee.", 1200),
    ("graceful-shutdown-tee", "Graceful shutdown T-shirt", "Finishes what it started.", 2500),
    ("idempotency-key-ring", "Idempotency key ring", "Turn it twice, it opens once.", 800),
    ("backing-service-stickers", "Backing service stickers", "PostgreSQL, Redis and SMTP, attachable resources.", 400),
]


def add_demo_products(apps, schema_editor):
    Product = apps.get_model("orders", "Product")
    for sku, name, description, price in DEMO_PRODUCTS:
        Product.objects.get_or_create(
            sku=sku, defaults={"name": name, "description": description, "price": price, "currency": "EUR"}
        )


class Migration(migrations.Migration):
    dependencies = [("orders", "0001_initial")]

    operations = [migrations.RunPython(add_demo_products, migrations.RunPython.noop)]
