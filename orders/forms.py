"""Checkout forms: the order header and a formset of product lines (prefix ``lines``)."""

from django import forms

from mailer.validators import validate_deliverable_address
from orders.models import MAX_LINE_QUANTITY, PaymentMethod, Product
from orders.money import format_money

MAX_LINES = 20


class CheckoutForm(forms.Form):
    """Email, payment method and the one-time ``token`` that is the order's idempotency key."""

    email = forms.EmailField(max_length=254, validators=[validate_deliverable_address])
    payment_method = forms.ChoiceField(choices=PaymentMethod.choices, initial=PaymentMethod.VISA)
    token = forms.UUIDField(widget=forms.HiddenInput)


class ProductChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Product) -> str:
        return f"{obj.name} — {format_money(obj.price, obj.currency)}"


class LineForm(forms.Form):
    """One line: a product (by SKU) and a quantity from 1 to 99. A blank extra line is skipped."""

    product = ProductChoiceField(
        queryset=Product.objects.filter(is_active=True), to_field_name="sku", empty_label="— choose a product —"
    )
    quantity = forms.IntegerField(min_value=1, max_value=MAX_LINE_QUANTITY)


class BaseLineFormSet(forms.BaseFormSet):
    def clean(self):
        if any(self.errors):
            return
        skus = [form.cleaned_data["product"].sku for form in self.forms if form.cleaned_data]
        if len(skus) != len(set(skus)):
            raise forms.ValidationError("Each product may appear on one line only; change its quantity instead.")


# absolute_max bounds the forms built from a client's ``lines-TOTAL_FORMS``: Django's default is
# max_num + 1000 (https://docs.djangoproject.com/en/5.2/topics/forms/formsets/#absolute-max), so
# ``TOTAL_FORMS=1000000`` made 1020 forms, each rendered with every product, in a 400 page.
LineFormSet = forms.formset_factory(
    LineForm,
    formset=BaseLineFormSet,
    extra=2,
    min_num=1,
    validate_min=True,
    max_num=MAX_LINES,
    validate_max=True,
    absolute_max=MAX_LINES,
)


class StartForm(forms.Form):
    """The catalogue's *Buy* button: the SKU of an active product to open a new checkout with."""

    product = forms.ModelChoiceField(queryset=Product.objects.filter(is_active=True), to_field_name="sku")
