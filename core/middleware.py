"""Middleware that keeps failures in their proper HTTP class (4xx for the client, 503 for us),
serves the probes and the metrics whatever the Host header, and counts every request."""

import logging
import sys
import time

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseNotAllowed, JsonResponse
from django.template import loader
from django.template.loader import render_to_string
from django.views import defaults

from core import context, health, metrics
from core.postgresql.refusals import database_refusal, write_refusal

logger = logging.getLogger(__name__)

# What Django raises when PostgreSQL is unreachable or the connection was ended under the request.
DATABASE_ERRORS = (OperationalError, InterfaceError)


class RequestMetricsMiddleware:
    """Count each request by view and status and time it (core.metrics.request_observe).

    First in MIDDLEWARE, so that its time covers every other middleware and it sees the final
    status of every answer, the probes' and the 500s that Django makes of exceptions included.
    Its cost is two clock reads and two in-memory (or memory-mapped) updates: no query, no lock
    but prometheus-client's own.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        start = time.perf_counter()
        response = self.get_response(request)
        metrics.request_observe(request, response.status_code, time.perf_counter() - start)
        return response


class HeadWithoutBodyMiddleware:
    """Answer HEAD with GET's status and headers and no body (RFC 9110 section 9.3.2).

    Django renders a HEAD like a GET and leaves dropping the body to the server. gunicorn drops it,
    but logs a WARNING for each such request ("WSGI app sent body bytes on a no-body response"),
    so every HEAD (a monitor, a link checker, ``curl -I``) put a warning in web's log. The
    Content-Length that CommonMiddleware set for GET stays, as RFC 9110 allows. Streaming responses
    (WhiteNoise's static files) are left alone: WhiteNoise answers HEAD without a body itself.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.method == "HEAD" and not response.streaming:
            length = len(response.content)
            response.content = b""
            if "Content-Length" not in response:
                response["Content-Length"] = str(length)
        return response


class ProbeMiddleware:
    """Serve ``GET``/``HEAD`` ``/health``, ``/ready`` and ``/metrics`` before any other middleware
    looks at the Host.

    A kubelet HTTP probe connects to the pod IP and sends ``Host: <pod IP>:<port>`` unless the
    probe declares a Host header (Kubernetes, "Configure Liveness, Readiness and Startup
    Probes", HTTP probes); Docker and load balancers' health checks do the same with their own
    addresses. With ``ALLOWED_HOSTS`` set to the shop's real domain, Django's host validation
    (``request.get_host()``, called by CommonMiddleware, CSRF and SecurityMiddleware's redirect)
    answers 400 DisallowedHost to every probe, and the pod is restarted forever. These two
    answers reveal nothing (a status and the names of the backing services), build no URL and
    redirect nowhere, so the Host header cannot change them; that is why they, and only they,
    skip host validation. ``/metrics`` is scraped by pod IP the same way; it answers only the
    bearer of METRICS_TOKEN (core.metrics.metrics_view), and builds no URL either. Every other
    path, and any other method on these three, goes through the full middleware stack and
    Django's host validation as before.

    It must come first in MIDDLEWARE, after RequestMetricsMiddleware only. Responses carry
    ``Cache-Control: no-cache`` (the views' ``never_cache``) and none of the other middleware's
    headers (no cookies, no HSTS: a probe over plain HTTP inside the cluster needs none).
    """

    VIEWS = {"/health": health.liveness, "/ready": health.readiness, "/metrics": metrics.metrics_view}

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = self.VIEWS.get(request.path_info)
        if view is not None and request.method in ("GET", "HEAD"):
            return view(request)
        return self.get_response(request)


class RequestIdMiddleware:
    """Give each request an id: the client's ``X-Request-ID`` when valid, else a new one.

    The id (core.context.request_id_from_header: 20–200 characters of letters, digits, ``+``,
    ``/``, ``=``, ``-``, Heroku's router's rule; otherwise a new uuid4 hex) is bound in the log
    context while the request is handled, so every line logged for it carries it; it goes on
    ``request.request_id``, into what the request causes (an order stores it, its job and its email
    carry it: orders.services.order_create) and back to the client in the response's
    ``X-Request-ID`` header. A load balancer or proxy in front that sets the header shares its id
    with these logs.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = context.request_id_from_header(request.headers.get("X-Request-ID"))
        with context.bind(request_id=request.request_id):
            response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response


class RejectNonUtf8FormsMiddleware:
    """Answer 400 to a form POST that Django would refuse to read, before the CSRF check reads it.

    Django reads an ``application/x-www-form-urlencoded`` body only in UTF-8: it raises
    BadRequest when the request's ``encoding`` (the ``charset`` parameter, kept only when
    ``codecs.lookup`` knows the name) is set and, lower-cased, is not exactly ``"utf-8"``
    (django/http/request.py, ``HttpRequest._load_post_and_files`` and
    ``_set_content_type_params``). So ``utf8``, ``utf_8`` and ``UTF8`` are refused like
    ``latin1``, while an absent, empty or unknown charset is read as UTF-8. Unlike the other
    refusals of a body (too many fields, too large, a broken multipart body), which Django marks
    as read (django/core/handlers/exception.py, ``response_for_exception``), this BadRequest
    leaves the body unread: when the CSRF middleware is the first to read it, Django's 400 and
    500 views (``requires_csrf_token``) read it again, raise again, and the request ends as an
    unhandled error (a 500). This middleware applies Django's own predicate first and answers
    400 with a one-line plain-text reason.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Django's predicate, word for word (django/http/request.py, _load_post_and_files).
        if (
            request.method == "POST"
            and request.content_type == "application/x-www-form-urlencoded"
            and request.encoding is not None
            and request.encoding.lower() != "utf-8"
        ):
            return HttpResponseBadRequest("Form posts must be UTF-8 encoded.", content_type="text/plain")
        return self.get_response(request)


class DatabaseUnavailableMiddleware:
    """Answer 503 with Retry-After when PostgreSQL is unreachable during a request, not a 500.

    The request's work is one transaction, so nothing is half-written; the client may retry.
    It sees exceptions raised by views; ``server_error`` (handler500) answers the same for those
    raised by other middleware. Either way the request logs one line (database_unavailable).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_database_unavailable(exception):
            return None
        return database_unavailable(request, exception)


def is_database_unavailable(exception: BaseException) -> bool:
    """True when ``exception`` means PostgreSQL cannot serve the request now: unreachable
    (DATABASE_ERRORS) or refusing writes (read-only or disk full, core.postgresql.refusals
    .write_refusal; Django raises InternalError for a read-only refusal, which is no 500 either)."""
    return isinstance(exception, DATABASE_ERRORS) or write_refusal(exception) is not None


def database_unavailable(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The 503 answer, with ``Retry-After: 5`` (seconds), for a request that met PostgreSQL
    unreachable or refusing writes (is_database_unavailable); logs one WARNING line, no traceback.

    A JSON endpoint (wants_json) gets ``{"error": "database unavailable", "cause": …}``, the cause
    being core.postgresql.refusals.database_refusal's description ("read-only",
    "disk full", "too many clients", "unreachable", …) or else "unavailable"; every other request
    the page templates/503.html, rendered without context or database. The response is marked as
    logged (``_has_been_logged``, the mark Django's own django.utils.log.log_response sets and
    checks), so neither Django's "Service Unavailable" line after a view nor its line with the
    traceback after an exception raised outside a view (django.core.handlers.exception
    .response_for_exception) repeats this one.
    """
    refusal = database_refusal(exception)
    # A lost connection or a statement timeout is no refusal: "unavailable" says only that.
    cause = refusal.description if refusal is not None else "unavailable"
    logger.warning(
        "database unavailable (%s) for %s %s: %s",
        cause,
        request.method,
        request.path,
        " ".join(str(exception).split()),
    )
    if wants_json(request):
        response = JsonResponse({"error": "database unavailable", "cause": cause}, status=503)
    else:
        response = HttpResponse(loader.get_template("503.html").render(), status=503)
    response["Retry-After"] = "5"
    response._has_been_logged = True
    return response


def wants_json(request: HttpRequest) -> bool:
    """True for a request to a JSON endpoint (a path ending in ``.json``, e.g. the order page's
    status.json), or one whose Accept header takes JSON but not HTML (an API client)."""
    if request.path_info.endswith(".json"):
        return True
    return request.accepts("application/json") and not request.accepts("text/html")


def server_error(request: HttpRequest) -> HttpResponse:
    """settings.ROOT_URLCONF's ``handler500``: Django's 500 page, or the 503 page when the error is
    PostgreSQL being unreachable outside a view, where DatabaseUnavailableMiddleware cannot see it
    (the session save after the view, the session or user load of another middleware).

    Django calls it inside the ``except`` block of the failed request (``sys.exc_info()`` is set;
    django.core.handlers.exception.handle_uncaught_exception). The 503 is marked as logged, so
    Django's ERROR line with the traceback does not follow database_unavailable's one line.
    """
    exception = sys.exc_info()[1]
    if exception is not None and is_database_unavailable(exception):
        return database_unavailable(request, exception)
    return defaults.server_error(request)


class MethodNotAllowedPageMiddleware:
    """Give a bodiless 405 (Django's ``require_http_methods``, e.g. ``GET /cart/add/``) a short page.

    Someone who opens a POST-only address (a bookmarked or shared form action) gets Django's
    empty 405 and a blank browser window; this renders templates/405.html into it, in the
    shopper's words with a link to the catalogue. The response object is kept, so its status and
    ``Allow`` header are unchanged. Responses that already carry a body are left alone.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if isinstance(response, HttpResponseNotAllowed) and not response.content:
            response.content = render_to_string("405.html", request=request)
            response["Content-Type"] = "text/html; charset=utf-8"
        return response
