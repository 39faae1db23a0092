"""The install step's progress (embedded/install.py): the pinned packages counted, a step per package pip looks at."""

import pytest

from embedded.install import PROCESSING, SEEN, pinned


def test_the_pinned_packages_are_counted_across_included_files(tmp_path):
    (tmp_path / "base.txt").write_text("# runtime\nDjango==5.2.19\n\npsycopg[binary]==3.3.9  # with its wheel\n")
    (tmp_path / "dev.txt").write_text("-r base.txt\n# tools\nruff==0.17.6\n")
    assert pinned(tmp_path / "dev.txt") == 3


@pytest.mark.parametrize(
    ("line", "package"),
    [
        ("Collecting Django==5.2.19 (from -r requirements.txt (line 4))", "Django==5.2.19"),
        ("Collecting psycopg[binary]==3.3.9 (from -r requirements.txt (line 10))", "psycopg[binary]==3.3.9"),
        ("Requirement already satisfied: redis==8.1.0 in ./.venv/lib/python3.11/site-packages", "redis==8.1.0"),
        ("Processing /opt/files/redis-8.1.0-py3-none-any.whl (from -r requirements.txt)", "redis-8.1.0-py3-none-any"),
    ],
)
def test_each_package_pip_looks_at_is_one_step(line, package):
    match = SEEN.match(line) or PROCESSING.match(line)
    assert match and match.group(1) == package


def test_other_pip_lines_are_no_step():
    assert not any(pattern.match("Installing collected packages: honcho, redis") for pattern in (SEEN, PROCESSING))
