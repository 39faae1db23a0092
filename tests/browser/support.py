"""Helpers of the browser tests: an accessibility check with axe-core and screenshots.

axe-core comes with ``axe-playwright-python`` (PyPI), which injects its bundled ``axe.min.js``
into the page and runs ``axe.run()`` (https://github.com/dequelabs/axe-core/blob/develop/doc/API.md).
Screenshots go to ``test-artifacts/screenshots/`` at the repository root (git ignores it), so a
reviewer or CI can look at what the shopper and the operator saw.
"""

from pathlib import Path

from axe_playwright_python.sync_playwright import Axe

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
# axe-core's impact levels that fail a page (minor and moderate are reported, not failed).
FAILING_IMPACTS = ("serious", "critical")


def axe_violations(page) -> list[dict]:
    """Run axe-core on ``page`` (a Playwright sync Page) and return its violations of impact
    "serious" or "critical": dicts with axe's keys ``id``, ``impact``, ``help`` and ``nodes``."""
    response = Axe().run(page).response
    return [violation for violation in response["violations"] if violation["impact"] in FAILING_IMPACTS]


def assert_accessible(page) -> None:
    """Fail, naming each rule and the elements it flags, when axe-core finds a serious or critical
    violation on ``page``."""
    violations = axe_violations(page)
    assert not violations, "\n".join(
        f"{v['impact']}: {v['id']} ({v['help']}): {[node['target'] for node in v['nodes']]}" for v in violations
    )


def screenshot(page, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG of ``page`` as test-artifacts/screenshots/``name``.png and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
