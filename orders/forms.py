"""Shop forms: the checkout (email, payment, the cart's lines as sent back), the cart's changes.

Every message is written for the shopper and names the field in their words; BoundField adds
``aria-invalid`` to a field with errors and ShopperForm links the field to its error text with
``aria-describedby`` (the templates render the error as ``<… id="<field id>-error">``).
"""

from django import forms

from mailer.validators import validate_deliverable_address
from orders.models import MAX_LINE_QUANTITY, MAX_LINES, PaymentMethod, Product


class ShopperForm(forms.Form):
    """A form showing one message per field (the first: EmailField's own and the deliverability
    validator both refuse "not-an-email"), each field pointing at it with ``aria-describedby``."""

    def full_clean(self):
        super().full_clean()
        for name, errors in self.errors.items():
            if name in self.fields:
                self._errors[name] = self.error_class(errors[:1], renderer=self.renderer)
                self.fields[name].widget.attrs["aria-describedby"] = f"{self[name].auto_id}-error"


class CheckoutForm(ShopperForm):
    """Email, payment method and the one-time ``token`` that is the order's idempotency key.

    An invalid or missing ``token`` is not the shopper's mistake: the view answers it with the
    "out of date" notice, never as a field error.
    """

    # A text field, not type=email: Chromium maps an email field's domain through IDNA 2003 before
    # posting (zoe@straße.de arrives as zoe@strasse.de, another domain), so the server would never
    # see what was typed. inputmode and autocomplete keep the phone's email keyboard and autofill.
    email = forms.EmailField(
        label="Email",
        max_length=254,
        widget=forms.TextInput(
            attrs={"inputmode": "email", "autocomplete": "email", "autocapitalize": "none", "spellcheck": "false"}
        ),
        validators=[validate_deliverable_address],
        error_messages={
            "required": "Enter your email address, so we can send your confirmation.",
            "invalid": "Enter an email address like name@example.com.",
            "max_length": "Enter an email address of at most 254 characters.",
        },
    )
    payment_method = forms.ChoiceField(
        label="Payment",
        choices=PaymentMethod.choices,
        initial=PaymentMethod.VISA,
        error_messages={"required": "Choose how to pay.", "invalid_choice": "Choose how to pay from the list."},
    )
    token = forms.UUIDField(widget=forms.HiddenInput)

    def shopper_errors(self) -> dict:
        """Return the errors of the shopper's fields (``token`` left out)."""
        return {name: errors for name, errors in self.errors.items() if name != "token"}


class LineForm(forms.Form):
    """One line of the cart as the checkout page sends it back (hidden fields): a SKU and a quantity."""

    product = forms.ModelChoiceField(
        queryset=Product.objects.filter(is_active=True), to_field_name="sku", widget=forms.HiddenInput
    )
    quantity = forms.IntegerField(min_value=1, max_value=MAX_LINE_QUANTITY, widget=forms.HiddenInput)


class BaseLineFormSet(forms.BaseFormSet):
    def clean(self):
        if any(self.errors):
            return
        skus = [form.cleaned_data["product"].sku for form in self.forms if form.cleaned_data]
        if len(skus) != len(set(skus)):
            raise forms.ValidationError("Each product may appear on one line only.")


# absolute_max bounds the forms built from a client's ``lines-TOTAL_FORMS``: Django's default is
# max_num + 1000 (https://docs.djangoproject.com/en/5.2/topics/forms/formsets/#absolute-max), so
# ``TOTAL_FORMS=1000000`` made 1020 forms, each rendered with every product, in a 400 page.
LineFormSet = forms.formset_factory(
    LineForm,
    formset=BaseLineFormSet,
    extra=0,
    min_num=1,
    validate_min=True,
    max_num=MAX_LINES,
    validate_max=True,
    absolute_max=MAX_LINES,
)


class ProductField(forms.ModelChoiceField):
    """An active product by SKU, refused in the shopper's words."""

    def __init__(self, **kwargs):
        super().__init__(
            queryset=Product.objects.filter(is_active=True),
            to_field_name="sku",
            widget=forms.HiddenInput,
            error_messages={
                "required": "Choose a product from the catalogue.",
                "invalid_choice": "That product is not on sale any more.",
            },
            **kwargs,
        )


class CartAddForm(ShopperForm):
    """The catalogue's *Add to cart*: an active product and how many (1 when not sent)."""

    product = ProductField()
    quantity = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_LINE_QUANTITY,
        error_messages={
            "invalid": f"Enter a quantity from 1 to {MAX_LINE_QUANTITY}.",
            "min_value": f"Enter a quantity from 1 to {MAX_LINE_QUANTITY}.",
            "max_value": f"Enter a quantity from 1 to {MAX_LINE_QUANTITY}.",
        },
    )

    def clean_quantity(self) -> int:
        return self.cleaned_data["quantity"] or 1


class CartLineForm(ShopperForm):
    """One cart line's *Update* (a quantity from 0 to 99; 0 removes it) or *Remove*."""

    product = ProductField()
    quantity = forms.IntegerField(
        min_value=0,
        max_value=MAX_LINE_QUANTITY,
        error_messages={
            "required": f"Enter a quantity from 0 to {MAX_LINE_QUANTITY} (0 removes the product).",
            "invalid": f"Enter a whole number from 0 to {MAX_LINE_QUANTITY} (0 removes the product).",
            "min_value": f"Enter a whole number from 0 to {MAX_LINE_QUANTITY} (0 removes the product).",
            "max_value": f"You can order at most {MAX_LINE_QUANTITY} of one product.",
        },
    )


class CartRemoveForm(ShopperForm):
    """One cart line's *Remove*: the product to take out."""

    product = ProductField()


class PayAgainForm(ShopperForm):
    """The failed order page's *Pay again*: a payment method, preselected as one that is not the
    ``declined`` one (the method of the attempt that failed)."""

    payment_method = forms.ChoiceField(
        label="Pay with",
        choices=PaymentMethod.choices,
        widget=forms.RadioSelect,
        error_messages={"required": "Choose how to pay.", "invalid_choice": "Choose how to pay from the list."},
    )

    def __init__(self, *args, declined: str = "", **kwargs):
        super().__init__(*args, auto_id="pay-again-%s", **kwargs)
        others = [value for value in PaymentMethod.values if value != declined]
        self.fields["payment_method"].initial = others[0] if others else declined
