"""Shop pages: product list, checkout, order status. Views parse input and call services."""

import uuid

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from orders.forms import CheckoutForm, LineFormSet
from orders.models import Order, OrderStatus, Product
from orders.services import LineRequest, order_create


def product_list(request: HttpRequest) -> HttpResponse:
    """Render the active products."""
    return render(request, "orders/product_list.html", {"products": Product.objects.filter(is_active=True)})


def _field_errors(form: CheckoutForm, formset) -> list[tuple[str, str, str]]:
    """Return ``(label, field name as posted, message)`` triples.

    E.g. ``("Line 1 quantity", "lines-0-quantity", "Ensure this value is greater than or equal to 1.")``.
    """
    labels = {"email": "Email", "payment_method": "Payment", "token": "Form token (reload the page)"}
    errors = [(labels.get(name, name), name, message) for name, messages in form.errors.items() for message in messages]
    for index, (form_errors, line_form) in enumerate(zip(formset.errors, formset.forms, strict=False), start=1):
        for name, messages in form_errors.items():
            errors.extend((f"Line {index} {name}", line_form.add_prefix(name), message) for message in messages)
    errors.extend(("Products", "lines", message) for message in formset.non_form_errors())
    return errors


@require_http_methods(["GET", "HEAD", "POST"])
def checkout(request: HttpRequest) -> HttpResponse:
    """GET: a checkout form with a fresh one-time token. POST: create the order or answer 400.

    A valid POST redirects (303) to the order's page; posting the same token again redirects
    to the same order. An invalid POST re-renders the form with status 400 and each error
    next to the field it names.
    """
    if request.method == "POST":
        refused: list[tuple[str, str, str]] = []
        form = CheckoutForm(request.POST)
        formset = LineFormSet(request.POST, prefix="lines")
        if form.is_valid() and formset.is_valid():
            lines = [
                LineRequest(product_id=line["product"].pk, quantity=line["quantity"])
                for line in formset.cleaned_data
                if line
            ]
            try:
                order, _ = order_create(
                    email=form.cleaned_data["email"],
                    lines=lines,
                    idempotency_key=form.cleaned_data["token"],
                    payment_method=form.cleaned_data["payment_method"],
                )
            except (ValueError, Product.DoesNotExist) as exc:
                # Rules across lines (one currency per order; a product withdrawn meanwhile).
                refused.append(("Products", "lines", str(exc).capitalize() + "."))
            else:
                return _see_other(order)
        status = 400
        errors = _field_errors(form, formset) + refused
    else:
        form = CheckoutForm(initial={"token": uuid.uuid4()})
        initial = [{"product": request.GET.get("product"), "quantity": 1}]
        formset = LineFormSet(prefix="lines", initial=initial)
        status = 200
        errors = []
    return render(request, "orders/checkout.html", {"form": form, "formset": formset, "errors": errors}, status=status)


def _see_other(order: Order) -> HttpResponse:
    response = redirect("order-detail", order_id=order.pk)
    response.status_code = 303
    return response


def order_detail(request: HttpRequest, order_id: uuid.UUID) -> HttpResponse:
    """Render an order's status, lines and total; the page refreshes itself while pending."""
    order = get_object_or_404(Order.objects.prefetch_related("lines__product"), pk=order_id)
    return render(request, "orders/order_detail.html", {"order": order, "pending": order.status == OrderStatus.PENDING})
