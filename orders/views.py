"""Shop pages: product list, checkout, order status. Views parse input and call services."""

import uuid
from html import unescape

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import strip_tags
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from orders.checkout import (
    CheckoutConflict,
    CheckoutUnknown,
    checkout_complete,
    checkout_current,
    checkout_order,
    checkout_start,
)
from orders.forms import CheckoutForm, LineFormSet, StartForm
from orders.models import Order, Product
from orders.selectors import OrderProgress, order_progress, orders_with_lines, products_on_sale
from orders.services import LineRequest, OrderRefused


def product_list(request: HttpRequest) -> HttpResponse:
    """Render the active products, each with a *Buy* button that opens a new checkout."""
    return render(request, "orders/product_list.html", _catalogue())


def _catalogue() -> dict:
    return {"products": products_on_sale()}


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


@require_http_methods(["POST"])
def checkout_start_view(request: HttpRequest) -> HttpResponse:
    """POST ``product`` (a SKU): open a new checkout in the session with it, then 303 to /checkout/.

    The catalogue's *Buy* buttons post here: buying again always starts a new checkout, while
    every GET of /checkout/ (Back, reload, a second tab) shows the session's current one.
    An unknown or withdrawn product is a 400 naming the field.
    """
    form = StartForm(request.POST)
    if not form.is_valid():
        errors = [("Product", name, message) for name, messages in form.errors.items() for message in messages]
        return render(request, "orders/product_list.html", {**_catalogue(), "errors": errors}, status=400)
    checkout_start(session=request.session, sku=form.cleaned_data["product"].sku)
    return _see_other("checkout")


@require_http_methods(["GET", "HEAD", "POST"])
@never_cache  # Back and reload must ask for the checkout's current state, never show a stored form
def checkout(request: HttpRequest) -> HttpResponse:
    """GET: the session's checkout (opened here if there is none). POST: place its order.

    GET of a completed checkout shows the order it became (link ``id="order-link"``), never a
    form that could make a second one. A valid POST redirects (303) to the order's page, also
    when it repeats a completed checkout with the same contents; with other contents it is a
    409 linking to the order (orders.checkout.checkout_complete). A token that this session did
    not open (expired session, forged, another session's, completed or not) is a 400 that keeps
    the shopper's input under the session's current token and links to no other session's order.
    An invalid POST re-renders the form with status 400 and each error next to the field it
    names. Nothing is created by any 4xx.
    """
    if request.method != "POST":
        current = checkout_current(session=request.session) or checkout_start(
            session=request.session, sku=request.GET.get("product")
        )
        order = checkout_order(token=current.token)
        if order is not None:
            return _placed(request, order, status=200)
        form = CheckoutForm(initial={"token": current.token})
        initial = [{"product": sku, "quantity": 1} for sku in current.skus] or [{"quantity": 1}]
        return _checkout_form(request, form, LineFormSet(prefix="lines", initial=initial), status=200)

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
            order, _ = checkout_complete(
                session=request.session,
                token=form.cleaned_data["token"],
                email=form.cleaned_data["email"],
                lines=lines,
                payment_method=form.cleaned_data["payment_method"],
            )
        except CheckoutConflict as conflict:
            return _placed(request, conflict.order, status=409, conflict=True)
        except CheckoutUnknown:
            return _checkout_expired(request)
        except OrderRefused as refusal:
            # Rules across lines (one currency per order; a product withdrawn meanwhile).
            refused.append(("Products", "lines", refusal.message))
        except Product.DoesNotExist:
            refused.append(("Products", "lines", "A product is no longer on sale."))
        else:
            return _see_other("order-detail", order_id=order.pk)
    return _checkout_form(request, form, formset, errors=_field_errors(form, formset) + refused, status=400)


def _checkout_expired(request: HttpRequest) -> HttpResponse:
    """400 for a token that is not this session's checkout: keep the input, use the session's token."""
    current = checkout_current(session=request.session)
    order = checkout_order(token=current.token) if current is not None else None
    if order is not None:
        # This session's checkout is completed already: buying again starts from the catalogue.
        return _placed(request, order, status=400, stale=True)
    if current is None:
        current = checkout_start(session=request.session)
    data = request.POST.copy()
    data["token"] = str(current.token)
    notice = "This checkout form had expired. Nothing was ordered: check your order and place it again."
    form, formset = CheckoutForm(data), LineFormSet(data, prefix="lines")
    return _checkout_form(request, form, formset, notice=notice, status=400)


def _checkout_form(request, form, formset, *, status: int, errors=(), notice: str = "") -> HttpResponse:
    context = {"form": form, "formset": formset, "errors": errors, "notice": notice}
    return render(request, "orders/checkout.html", context, status=status)


def _placed(request: HttpRequest, order: Order, *, status: int, conflict: bool = False, stale: bool = False):
    """The page of a completed checkout: the order was placed already, here is its link."""
    context = {"order": order, "conflict": conflict, "stale": stale}
    return render(request, "orders/checkout_placed.html", context, status=status)


def _see_other(to: str, **kwargs) -> HttpResponse:
    response = redirect(to, **kwargs)
    response.status_code = 303
    return response


def _order_wait(order: Order, progress: OrderProgress) -> tuple[float, bool]:
    """Return ``(seconds the page may still update itself, whether it is taking longer than usual)``.

    An order in progress is followed for ORDER_PAGE_WAIT_SECONDS after it was placed; after that
    the page stops updating and says so, whether it polls or refreshes.
    """
    if progress.done:
        return 0.0, False
    remaining = settings.ORDER_PAGE_WAIT_SECONDS - (timezone.now() - order.created_at).total_seconds()
    return max(remaining, 0.0), remaining <= 0


@never_cache  # the status changes while the shopper looks at it: Back and reload must ask again
def order_detail(request: HttpRequest, order_id: uuid.UUID) -> HttpResponse:
    """Render an order's lines, total and progress (received, paid, confirmation sent, or failed
    with the reason in the shopper's words); 404 for an unknown id.

    While the order is in progress (pending, or its email not sent yet) static/orders/order-status.js
    polls order_status and updates the page in place, and without JavaScript a ``<noscript>``
    refresh reloads it; both only for ORDER_PAGE_WAIT_SECONDS after the order was placed, then the
    page says that it takes longer than usual.
    """
    order = get_object_or_404(orders_with_lines(), pk=order_id)
    progress = order_progress(order=order)
    remaining, slow = _order_wait(order, progress)
    context = {
        "order": order,
        "progress": progress,
        "follow": remaining > 0,
        "follow_seconds": int(remaining),
        "slow": slow,
        "confirmation": progress.confirmation,
    }
    return render(request, "orders/order_detail.html", context)


@never_cache  # Cache-Control: no-store, so no proxy or browser cache answers a poll
def order_status(request: HttpRequest, order_id: uuid.UUID) -> JsonResponse:
    """Return an order's progress as JSON for its page's script; 404 for an unknown id.

    Body: ``{"status": "pending"|"paid"|"failed", "step": "received"|"paid"|"confirmation_sent"|"failed",
    "label": sentence for the shopper, "done": bool, "confirmation_sent": bool, "steps": [{"key",
    "title", "state"}…], "confirmation": {"state", "text"}}`` (orders.selectors.OrderProgress; the
    confirmation's text is the page's sentence about the email, as plain text).
    """
    order = get_object_or_404(Order, pk=order_id)
    progress = order_progress(order=order)
    sentence = render_to_string(
        "orders/order_confirmation_sentence.html", {"order": order, "confirmation": progress.confirmation}
    )
    text = " ".join(unescape(strip_tags(sentence)).split())
    body = {
        **progress.as_json(),
        "steps": progress.steps(),
        "confirmation": {"state": progress.confirmation.state, "text": text},
    }
    return JsonResponse(body)
