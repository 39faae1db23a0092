"""Expand: products get a picture from the static files and its text (Product.image, image_alt),
with database defaults, and the demo catalogue its own pictures (static/products/), for the demo
products an admin has not given a picture."""

from django.db import migrations, models

DEMO_PICTURES = {
    "procfile-mug": "A dark blue mug with 'web:' written on it, steaming.",
    "graceful-shutdown-tee": "A green T-shirt printed 'SIGTERM' with a tick.",
    "idempotency-key-ring": "A brown key ring with one gold key, the ring marked 'once'.",
    "backing-service-stickers": "Three stickers: a blue circle 'PG', a red square 'Redis', a green oval 'SMTP'.",
}


def add_demo_pictures(apps, schema_editor):
    Product = apps.get_model("orders", "Product")
    for sku, alt in DEMO_PICTURES.items():
        Product.objects.filter(sku=sku, image="").update(image=f"products/{sku}.svg", image_alt=alt)


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0010_order_number"),
    ]

    operations = [
        migrations.AddField(
            model_name="product",
            name="image",
            field=models.CharField(
                blank=True,
                db_default="",
                default="",
                help_text="A static file under products/, or empty.",
                max_length=200,
            ),
        ),
        migrations.AddField(
            model_name="product",
            name="image_alt",
            field=models.CharField(
                blank=True, db_default="", default="", help_text="What the picture shows, in words.", max_length=200
            ),
        ),
        migrations.RunPython(add_demo_pictures, migrations.RunPython.noop),
    ]
