"""Prometheus text expositions: parse them, scrape an endpoint, read one sample."""

import urllib.error
import urllib.request


def metric_samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Parse a Prometheus text exposition into ``{(sample name, frozenset of label pairs): value}``."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(url: str, token: str | None = None, **headers: str) -> tuple[int, dict, dict[tuple[str, frozenset], float]]:
    """GET the metrics at ``url`` (with ``Authorization: Bearer token`` when given); return the status,
    the headers and, for a 200, the samples (metric_samples), else an empty dict."""
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, dict(response.headers), metric_samples(response.read().decode())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), {}


def sample(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    """Return the value of sample ``name`` with exactly ``labels`` in ``samples``, 0 when absent."""
    return samples.get((name, frozenset(labels.items())), 0.0)
