"""Shop pages: catalogue, cart, checkout, order status. Views parse input and call services.

Errors are shown as the GOV.UK Design System does it: a summary at the top (focused on load
through ``autofocus``, no script) whose items link to the fields, and each message next to its
field. ``errors`` in a template context is a list of ``(anchor id or "", message)``.
"""

import uuid
from html import unescape

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import strip_tags
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from orders.cart import (
    CartLine,
    CartRefused,
    cart_add,
    cart_contents,
    cart_lines,
    cart_notices,
    cart_remove,
    cart_set_quantity,
    cart_total,
)
from orders.checkout import (
    CheckoutConflict,
    CheckoutUnknown,
    checkout_complete,
    checkout_current,
    checkout_for_cart,
    checkout_order,
)
from orders.forms import CartAddForm, CartLineForm, CartRemoveForm, CheckoutForm, LineFormSet, PayAgainForm
from orders.models import LOW_STOCK, MAX_LINE_QUANTITY, MAX_LINES, Order, OrderStatus, Product
from orders.operations import Rerun, order_pay_again
from orders.selectors import OrderProgress, order_progress, orders_with_lines, products_on_sale
from orders.services import LineRequest, OrderRefused

STALE_NOTICE = "This checkout page is out of date; your cart is unchanged — review it and place the order again."


def product_list(request: HttpRequest) -> HttpResponse:
    """Render the active products: each name links to its page, each has an *Add to cart* POST button."""
    return render(request, "orders/product_list.html", _catalogue())


def product_detail(request: HttpRequest, sku: str) -> HttpResponse:
    """Render one product on sale (its picture, name, description, price, stock, a quantity and
    *Add to cart*); 404 for an unknown or inactive ``sku``."""
    product = get_object_or_404(products_on_sale(), sku=sku)
    context = {"product": product, "low_stock": LOW_STOCK, "max_quantity": MAX_LINE_QUANTITY}
    return render(request, "orders/product_detail.html", context)


def _catalogue() -> dict:
    return {"products": products_on_sale(), "low_stock": LOW_STOCK}


def _form_errors(form) -> list[tuple[str, str]]:
    """Return ``(field id, message)`` of ``form``'s errors, fields in form order.

    A hidden field (a product's SKU) is nothing the shopper can go to: its message has no link.
    """
    return [
        ("" if form.fields[name].widget.is_hidden else form[name].auto_id, message)
        for name in form.fields
        if name in form.errors
        for message in form.errors[name]
    ]


def _catalogue_refused(request: HttpRequest, errors: list[tuple[str, str]]) -> HttpResponse:
    return render(request, "orders/product_list.html", {**_catalogue(), "errors": errors}, status=400)


def _add(request: HttpRequest) -> HttpResponse | None:
    """Add the POSTed product to the cart; return the catalogue's 400 page when refused, else None."""
    form = CartAddForm(request.POST)
    if not form.is_valid():
        # The product's entry when that field was valid (only the quantity was not); the raw value is
        # never queried: it may hold what PostgreSQL refuses (a NUL byte).
        product = form.cleaned_data.get("product")
        anchor = f"product-{product.sku}" if product is not None else ""
        return _catalogue_refused(request, [(anchor, message) for _, message in _form_errors(form)])
    product = form.cleaned_data["product"]
    try:
        now = cart_add(session=request.session, product=product, quantity=form.cleaned_data["quantity"])
    except CartRefused as refusal:
        return _catalogue_refused(request, [(f"product-{product.sku}", refusal.message)])
    quantity = form.cleaned_data["quantity"]
    added = f"{quantity} × {product.name}" if quantity > 1 else product.name
    messages.success(
        request, f"Added {added} to your cart (you have {now})." if now > quantity else f"Added {added} to your cart."
    )
    return None


@require_http_methods(["POST"])
def cart_add_view(request: HttpRequest) -> HttpResponse:
    """POST ``product`` (a SKU) and optional ``quantity`` (1–99): add to the cart, 303 to /cart/.

    A refused addition (unknown product, sold out, too many) is a 400 catalogue page saying why.
    """
    return _add(request) or _see_other("cart")


@require_http_methods(["POST"])
def checkout_start_view(request: HttpRequest) -> HttpResponse:
    """POST ``product`` (a SKU): *Buy now*, i.e. add one to the cart and 303 to /checkout/.

    Kept for links and forms made before the cart; refusals as cart_add_view.
    """
    return _add(request) or _see_other("checkout")


@require_http_methods(["GET", "HEAD"])
@never_cache  # a cart page restored by Back must not offer quantities the cart no longer has
def cart(request: HttpRequest) -> HttpResponse:
    """The cart: one row per line with its quantity form, *Update* and *Remove*, the running total."""
    return _cart_page(request)


def _cart_problem(lines: list[CartLine]) -> str:
    """Return what the shopper must change before an order can take the cart, or "" when it can:
    more than MAX_LINES products (one kept from before that limit counted products off sale), or
    products in two currencies (staff changed a product's currency after it was added)."""
    if len(lines) > MAX_LINES:
        extra = len(lines) - MAX_LINES
        return (
            f"Your cart holds {len(lines)} different products and an order takes at most {MAX_LINES}: "
            f"remove {extra} of them to check out."
        )
    currency = lines[0].product.currency if lines else None
    others = [line.product for line in lines if line.product.currency != currency]
    if others:
        return (
            f"{others[0].name} is now priced in {others[0].currency}, the rest of your cart in {currency}: "
            "an order is paid in one currency, so remove it to check out."
        )
    return ""


def _cart_page(request: HttpRequest, *, errors=(), failed: CartLineForm | None = None, status: int = 200):
    """The cart page (``status``) with ``errors`` [(anchor, message)]. A ``failed`` quantity form
    keeps its error, but its box shows the quantity the cart holds, so that the box, the line's
    total and the cart's total always agree; the message names what was typed."""
    lines = cart_lines(session=request.session)
    notices = cart_notices(session=request.session, lines=lines)
    problem = _cart_problem(lines)
    if not errors and problem:
        errors = [("", problem)]
    total, currency = cart_total(lines=lines)
    if len({line.product.currency for line in lines}) > 1:
        total = currency = None  # no sum of amounts in two currencies
    rows = []
    for line in lines:
        sku = line.product.sku
        if failed is not None and failed.data.get("product") == sku:
            typed = failed.data.get("quantity", "")
            form = _kept_quantity(failed, typed, line.quantity)
            errors = [(anchor, _typed(message, typed, line.quantity)) for anchor, message in errors]
        else:
            form = CartLineForm(initial={"product": sku, "quantity": line.quantity}, auto_id=f"cart-%s-{sku}")
        rows.append({"line": line, "form": form})
    context = {"rows": rows, "total": total, "currency": currency, "errors": errors, "notices": notices}
    return render(request, "orders/cart.html", context, status=status)


def _kept_quantity(failed: CartLineForm, typed: str, quantity: int) -> CartLineForm:
    """Return ``failed`` (validated, with its errors) showing ``quantity`` in its box instead of
    ``typed``, its error naming what was typed (_typed)."""
    failed.data = failed.data.copy()
    failed.data["quantity"] = str(quantity)
    if "quantity" in failed.errors:
        failed.errors["quantity"] = failed.error_class(
            [_typed(message, typed, quantity) for message in failed.errors["quantity"]], renderer=failed.renderer
        )
    return failed


def _typed(message: str, typed: str, quantity: int) -> str:
    """Return ``message`` followed by what the shopper typed (cut to 12 characters) and the
    ``quantity`` the cart still holds: "… You typed “3”; your cart still has 1." """
    shown = typed if len(typed) <= 12 else typed[:12] + "…"
    return f"{message} You typed “{shown}”; your cart still has {quantity}."


@require_http_methods(["POST"])
def cart_update(request: HttpRequest) -> HttpResponse:
    """POST ``product`` and ``quantity`` (0–99; 0 removes the line): 303 to /cart/, or a 400 cart page."""
    sku = request.POST.get("product", "")[:40]
    form = CartLineForm(request.POST, auto_id=f"cart-%s-{sku}")
    if not form.is_valid():
        return _cart_page(request, errors=_form_errors(form), failed=form, status=400)
    try:
        cart_set_quantity(
            session=request.session, product=form.cleaned_data["product"], quantity=form.cleaned_data["quantity"]
        )
    except CartRefused as refusal:
        if form.cleaned_data["product"].sku not in dict(cart_contents(session=request.session)):
            # Removed meanwhile (another tab): there is no field to point at.
            return _cart_page(request, errors=[("", refusal.message)], status=400)
        form.add_error("quantity", refusal.message)
        return _cart_page(request, errors=_form_errors(form), failed=form, status=400)
    return _see_other("cart")


@require_http_methods(["POST"])
def cart_remove_view(request: HttpRequest) -> HttpResponse:
    """POST ``product``: remove its line, 303 to /cart/ (removing a line that is gone does nothing)."""
    form = CartRemoveForm(request.POST)
    if form.is_valid():
        cart_remove(session=request.session, product=form.cleaned_data["product"])
    return _see_other("cart")


@require_http_methods(["GET", "HEAD", "POST"])
@never_cache  # Back and reload must ask for the checkout's current state, never show a stored form
def checkout(request: HttpRequest) -> HttpResponse:
    """GET: the checkout of the cart as it is now. POST: place its order.

    GET shows email and payment fields and the cart's lines read-only, under a checkout token
    bound to those lines (orders.checkout.checkout_for_cart); with an empty cart after an order,
    it shows that order (link ``id="order-link"``), never a form that could make a second one.
    A valid POST redirects (303) to the order's page and empties the cart, also when it repeats a
    completed checkout with the same contents; with other contents it is a 409 linking to the
    order (orders.checkout.checkout_complete). A token that this session did not open, or whose
    cart changed since the page was shown, is a 400 with a plain "out of date" notice that keeps
    the shopper's email and payment under the current cart's checkout. Invalid fields re-render
    the form with status 400, a linked error summary and each error next to its field; a refusal
    (sold out, withdrawn product) is a 400 saying so. A cart of more than MAX_LINES products (kept
    from before products off sale counted) cannot be ordered: GET redirects (303) to the cart page
    and a POST is a 400 cart page, both saying how many lines to remove. Nothing is created by any 4xx.
    """
    if request.method != "POST":
        lines = cart_lines(session=request.session)
        if not lines:
            current = checkout_current(session=request.session)
            order = checkout_order(token=current.token) if current is not None else None
            if order is not None:
                return _placed(request, order, status=200)
            return render(request, "orders/checkout.html", {"lines": []})
        if _cart_problem(lines):
            return _see_other("cart")  # which says what to change
        current = checkout_for_cart(session=request.session)
        form = CheckoutForm(initial={"token": current.token})
        notices = cart_notices(session=request.session, lines=lines)
        return _checkout_form(request, form, _formset_of(lines), lines, status=200, notices=notices)

    form = CheckoutForm(request.POST)
    formset = LineFormSet(request.POST, prefix="lines")
    form_valid, lines_valid = form.is_valid(), formset.is_valid()
    if "token" in form.errors or not lines_valid:
        return _checkout_expired(request, form)
    posted = [line for line in formset.cleaned_data if line]
    shown = [CartLine(product=line["product"], quantity=line["quantity"]) for line in posted]
    if not form_valid:
        return _checkout_form(request, form, formset, shown, errors=_form_errors(form), status=400)
    try:
        order, _ = checkout_complete(
            session=request.session,
            token=form.cleaned_data["token"],
            email=form.cleaned_data["email"],
            lines=[LineRequest(product_id=line["product"].pk, quantity=line["quantity"]) for line in posted],
            payment_method=form.cleaned_data["payment_method"],
        )
    except CheckoutConflict as conflict:
        return _placed(request, conflict.order, status=409, conflict=True)
    except CheckoutUnknown:
        return _checkout_expired(request, form)
    except OrderRefused as refusal:
        # Rules across lines: stock, one currency per order, a product withdrawn meanwhile.
        refused = [("checkout-lines", refusal.message)]
    except Product.DoesNotExist:
        refused = [("checkout-lines", "A product in your cart is no longer on sale.")]
    else:
        return _see_other("order-detail", order_id=order.pk)
    return _checkout_form(request, form, formset, shown, errors=refused, status=400)


def _formset_of(lines: list[CartLine]):
    initial = [{"product": line.product.sku, "quantity": line.quantity} for line in lines]
    return LineFormSet(prefix="lines", initial=initial)


def _checkout_expired(request: HttpRequest, posted: CheckoutForm) -> HttpResponse:
    """400 for a token that is not this session's open checkout of its cart: keep the shopper's
    email and payment, show the cart as it is under its current checkout."""
    current = checkout_current(session=request.session)
    order = checkout_order(token=current.token) if current is not None else None
    lines = cart_lines(session=request.session)
    if order is not None and not lines:
        # This session's checkout is completed already: buying again starts from the catalogue.
        return _placed(request, order, status=400, stale=True)
    if _cart_problem(lines):
        return _cart_page(request, status=400)
    current = checkout_for_cart(session=request.session)
    kept = {name: posted.data.get(name, "") for name in ("email", "payment_method")}
    form = CheckoutForm(initial={**kept, "token": current.token})
    return _checkout_form(request, form, _formset_of(lines), lines, notice=STALE_NOTICE, status=400)


def _checkout_form(
    request, form, formset, lines, *, status: int, errors=(), notice: str = "", notices=()
) -> HttpResponse:
    total, currency = cart_total(lines=lines)
    context = {
        "notices": notices,
        "form": form,
        "formset": formset,
        "lines": lines,
        "total": total,
        "currency": currency,
        "errors": errors,
        "notice": notice,
    }
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

    An order in progress is followed for ORDER_PAGE_WAIT_SECONDS after it was placed or last paid
    again (failed -> pending in its history); after that the page stops updating and says so,
    whether it polls or refreshes.
    """
    if progress.done:
        return 0.0, False
    restarted = (
        order.status_changes.filter(from_status=OrderStatus.FAILED, to_status=OrderStatus.PENDING)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    since = max(order.created_at, restarted) if restarted else order.created_at
    remaining = settings.ORDER_PAGE_WAIT_SECONDS - (timezone.now() - since).total_seconds()
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
    return _order_page(request, order)


def _order_page(request: HttpRequest, order: Order, *, errors=(), status: int = 200, form=None) -> HttpResponse:
    progress = order_progress(order=order)
    remaining, slow = _order_wait(order, progress)
    if form is None and order.status != OrderStatus.PAID:
        # Pending too, hidden: the page's script shows it if the payment is declined meanwhile.
        form = PayAgainForm(declined=order.payment_method)
    context = {
        "pay_again": form,
        "errors": errors,
        "order": order,
        "progress": progress,
        "follow": remaining > 0,
        "follow_seconds": int(remaining),
        "slow": slow,
        "confirmation": progress.confirmation,
    }
    return render(request, "orders/order_detail.html", context, status=status)


@require_http_methods(["POST"])
def order_pay_again_view(request: HttpRequest, order_id: uuid.UUID) -> HttpResponse:
    """POST ``payment_method``: pay the failed order again (orders.operations.order_pay_again), 303
    to its page, which follows the new attempt. A second press finds it pending and does nothing
    more. 400 (the order page, its error summary naming the field) for a missing or unknown
    method; 409 when the stock its decline gave back is gone; 404 for an unknown order."""
    order = get_object_or_404(orders_with_lines(), pk=order_id)
    form = PayAgainForm(request.POST, declined=order.payment_method)
    if not form.is_valid():
        return _order_page(request, order, errors=_form_errors(form), status=400, form=form)
    try:
        outcome = order_pay_again(order_id=order.pk, payment_method=form.cleaned_data["payment_method"])
    except OrderRefused as refusal:
        return _order_page(request, order, errors=[("pay-again", refusal.message)], status=409, form=form)
    if outcome is Rerun.RESTARTED:
        messages.success(request, "Paying again: this page follows the new payment.")
    return _see_other("order-detail", order_id=order.pk)


@never_cache  # Cache-Control: no-store, so no proxy or browser cache answers a poll
def order_status(request: HttpRequest, order_id: uuid.UUID) -> JsonResponse:
    """Return an order's progress as JSON for its page's script.

    Body: ``{"status": "pending"|"paid"|"failed", "step": "received"|"paid"|"confirmation_sent"|"failed",
    "label": sentence for the shopper, "done": bool, "confirmation_sent": bool, "steps": [{"key",
    "title", "state"}…], "confirmation": {"state", "text"}}`` (orders.selectors.OrderProgress; the
    confirmation's text is the page's sentence about the email, as plain text). An unknown id is a
    JSON 404, ``{"error": "not found"}``: the caller is a script, not a reader of Django's 404 page.
    """
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        return JsonResponse({"error": "not found"}, status=404)
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
