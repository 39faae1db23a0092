"""The README is a short front door and every reference it and docs/ make resolves.

Links between pages, their #anchors (GitHub's rule: the heading in lower case, punctuation
dropped, spaces as hyphens), the ``docs/<page>.md#<anchor>`` references written in code and deploy
files, and the test files that docs/testing.md names.
"""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MOST_LINES = 200


def anchors(page: Path) -> set[str]:
    found, seen, in_code = set(), {}, False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1).replace("`", ""))
            slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
            found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return found


def broken(target: str, page: Path) -> str | None:
    path, _, fragment = target.partition("#")
    destination = (page.parent / path).resolve() if path else page
    if not destination.exists():
        return f"{page.relative_to(ROOT)}: no file {target}"
    if fragment and destination.suffix == ".md" and fragment not in anchors(destination):
        return f"{page.relative_to(ROOT)}: no heading for #{fragment} in {destination.relative_to(ROOT)}"
    return None


def test_the_readme_is_a_short_front_door_with_a_map_of_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MOST_LINES
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)\)", readme))
    assert linked == {f"docs/{page.name}" for page in PAGES[1:]}, "every docs/ page is in the README's map"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_link_of_a_page_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"^[a-z]+:", t)]
    assert [problem for target in targets if (problem := broken(target, page))] == []


def test_every_docs_reference_in_code_and_deploy_files_resolves():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    problems = []
    for name in tracked.split():
        path = ROOT / name
        if path.suffix == ".md" or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for reference in re.findall(r"docs/[\w-]+\.md(?:#[\w-]+)?", text):
            if problem := broken(reference.removeprefix("docs/"), ROOT / "docs" / "index"):
                problems.append(f"{name}: {problem}")
    assert problems == []


def test_every_test_file_that_the_testing_page_names_exists():
    named = set(re.findall(r"tests/[\w/]+\.py", (ROOT / "docs" / "testing.md").read_text()))
    assert named, "docs/testing.md names the tests of each module"
    assert sorted(name for name in named if not (ROOT / name).is_file()) == []
