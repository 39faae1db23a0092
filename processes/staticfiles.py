"""Static files served by WhiteNoise: whether the hashed-name manifest that pages need is there."""

from django.contrib.staticfiles.storage import ManifestFilesMixin
from django.core.files.storage import storages


def manifest_problem() -> str | None:
    """Return why pages cannot link their static files, in one line, or None when they can.

    With a manifest storage (DEBUG off, project/settings.py) every ``{% static %}`` looks its name
    up in STATIC_ROOT's manifest and raises ValueError when it is missing: web would answer 500 to
    every page. Other storages (DEBUG on) need no manifest.
    """
    storage = storages["staticfiles"]
    if not isinstance(storage, ManifestFilesMixin) or storage.exists(storage.manifest_name):
        return None
    return (
        f"static files are not collected: no {storage.manifest_name} in STATIC_ROOT={storage.location}; "
        "run `python manage.py collectstatic --noinput` (the image's build step and `make run` do)"
    )
