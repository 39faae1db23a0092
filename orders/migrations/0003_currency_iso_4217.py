"""Currencies restricted to the shop's ISO 4217 codes; amounts described as minor units of their currency.

The AlterFields change choices and help texts only (no SQL on PostgreSQL). The product table
gets a CHECK constraint; before it is added, a product in another currency stops the release
with a message naming the products to fix in the admin, instead of PostgreSQL's "check constraint
… is violated by some row". The demo catalogue (EUR) passes.
"""

from django.db import migrations, models

SUPPORTED = ("EUR", "USD", "GBP", "CHF", "JPY", "KWD")  # orders.money.SUPPORTED_CURRENCIES when written


def refuse_unsupported_currencies(apps, schema_editor):
    Product = apps.get_model("orders", "Product")
    bad = list(Product.objects.exclude(currency__in=SUPPORTED).order_by("sku").values_list("sku", "currency")[:20])
    if bad:
        listed = ", ".join(f"{sku} ({currency!r})" for sku, currency in bad)
        raise RuntimeError(
            f"products priced in a currency the shop does not support: {listed}; "
            f"set each one's currency to one of {', '.join(SUPPORTED)} and release again"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0002_demo_catalogue"),
    ]

    operations = [
        migrations.AlterField(
            model_name="charge",
            name="amount",
            field=models.PositiveBigIntegerField(help_text="Minor units of the currency (ISO 4217 exponent)."),
        ),
        migrations.AlterField(
            model_name="charge",
            name="currency",
            field=models.CharField(
                choices=[
                    ("EUR", "EUR — Euro"),
                    ("USD", "USD — US Dollar"),
                    ("GBP", "GBP — British Pound"),
                    ("CHF", "CHF — Swiss Franc"),
                    ("JPY", "JPY — Japanese Yen"),
                    ("KWD", "KWD — Kuwaiti Dinar"),
                ],
                max_length=3,
            ),
        ),
        migrations.AlterField(
            model_name="order",
            name="currency",
            field=models.CharField(
                choices=[
                    ("EUR", "EUR — Euro"),
                    ("USD", "USD — US Dollar"),
                    ("GBP", "GBP — British Pound"),
                    ("CHF", "CHF — Swiss Franc"),
                    ("JPY", "JPY — Japanese Yen"),
                    ("KWD", "KWD — Kuwaiti Dinar"),
                ],
                default="EUR",
                max_length=3,
            ),
        ),
        migrations.AlterField(
            model_name="order",
            name="total",
            field=models.PositiveBigIntegerField(help_text="Minor units of the currency (ISO 4217 exponent)."),
        ),
        migrations.AlterField(
            model_name="orderline",
            name="unit_price",
            field=models.PositiveIntegerField(help_text="Minor units of the currency (ISO 4217 exponent)."),
        ),
        migrations.AlterField(
            model_name="product",
            name="currency",
            field=models.CharField(
                choices=[
                    ("EUR", "EUR — Euro"),
                    ("USD", "USD — US Dollar"),
                    ("GBP", "GBP — British Pound"),
                    ("CHF", "CHF — Swiss Franc"),
                    ("JPY", "JPY — Japanese Yen"),
                    ("KWD", "KWD — Kuwaiti Dinar"),
                ],
                default="EUR",
                max_length=3,
            ),
        ),
        migrations.AlterField(
            model_name="product",
            name="price",
            field=models.PositiveIntegerField(help_text="Minor units of the currency (ISO 4217 exponent)."),
        ),
        migrations.AlterField(
            model_name="sandboxcharge",
            name="amount",
            field=models.PositiveBigIntegerField(help_text="Minor units of the currency (ISO 4217 exponent)."),
        ),
        migrations.RunPython(refuse_unsupported_currencies, migrations.RunPython.noop, elidable=True),
        migrations.AddConstraint(
            model_name="product",
            constraint=models.CheckConstraint(
                condition=models.Q(("currency__in", SUPPORTED)), name="product_currency_supported"
            ),
        ),
    ]
