"""Static files as production serves them: web started as the Procfile starts it (DEBUG off) links
content-hashed names that WhiteNoise serves with a long max-age, and refuses to start without them."""

import re
import urllib.request

import pytest

from embedded.shopper import Browser, element
from tests import factories
from tests.support.databases import ALL_DATABASES

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]

# WhiteNoise's max-age for a file whose name carries its hash (WHITENOISE_MAX_AGE applies to the others).
ONE_YEAR = 365 * 24 * 3600


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def max_age(cache_control: str) -> int:
    match = re.search(r"max-age=(\d+)", cache_control)
    assert match, f"no max-age in {cache_control!r}"
    return int(match.group(1))


def test_pages_link_hashed_static_files_that_web_serves_with_a_long_max_age(formation):
    factories.product()
    web = formation.start("web")
    base = f"http://127.0.0.1:{web.env['PORT']}"
    status, _, page = Browser(base).request("/")
    assert status == 200
    stylesheet = element(page, "#shop-css").attrs["href"]
    assert re.fullmatch(r"/static/css/shop\.[0-9a-f]{12}\.css", stylesheet), stylesheet

    status, headers, body = fetch(base + stylesheet)
    assert status == 200
    assert headers["Content-Type"].startswith("text/css")
    assert max_age(headers["Cache-Control"]) >= ONE_YEAR
    assert b".price" in body
    # WhiteNoise answers before the view, but after CSPMiddleware: static files carry the policy too.
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    # The unhashed name is served too: templates/500.html links it, as it may not look up the manifest.
    status, headers, _ = fetch(base + "/static/css/shop.css")
    assert (status, headers["Content-Type"].split(";")[0]) == (200, "text/css")

    # /favicon.ico, asked for unprompted by browsers, leads to the hashed favicon.
    status, headers, _ = Browser(base).request("/favicon.ico")
    assert status == 302
    assert re.fullmatch(r"/static/favicon\.[0-9a-f]{12}\.svg", headers["Location"]), headers["Location"]
    status, headers, _ = fetch(base + headers["Location"])
    assert (status, headers["Content-Type"]) == (200, "image/svg+xml")


def test_web_without_collected_static_files_refuses_to_start_with_one_line(formation, tmp_path):
    web = formation.start("web", wait=False, STATIC_ROOT=str(tmp_path))
    assert web.wait(deadline=30) == 1
    errors = [line for line in web.output().splitlines() if line.startswith("configuration error:")]
    assert len(errors) == 1, web.output()
    assert "static files are not collected" in errors[0] and "collectstatic" in errors[0]


def test_head_of_a_page_and_of_a_static_file_leaves_no_warning_in_webs_log(formation):
    factories.product()
    web = formation.start("web")
    base = f"http://127.0.0.1:{web.env['PORT']}"
    stylesheet = element(Browser(base).request("/")[2], "#shop-css").attrs["href"]
    for path in ("/", stylesheet):
        request = urllib.request.Request(base + path, method="HEAD")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert int(response.headers["Content-Length"]) > 0
    output = web.output()
    assert "HEAD / HTTP/1.1" in output  # the access log has the requests
    assert "body bytes on a no-body response" not in output
