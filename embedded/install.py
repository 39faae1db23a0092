"""Install the pinned requirements into the virtual environment, saying how far it has got.

Usage: ``.venv/bin/python -m embedded.install requirements-dev.txt`` (the Makefile's install step,
on first use and whenever a requirements file changes). It runs pip and turns its output into one
``formation:`` line per package (``[12/86] gunicorn==27.0.1``), then the install's duration; on a
failure pip's own output is printed. Standard library only: it runs before anything is installed.
"""

import re
import subprocess
import sys
import time
from pathlib import Path

# pip's line for each requirement it looks at: from an index, from a local file (a wheelhouse or
# a file index), or already installed.
SEEN = re.compile(r"^(?:Collecting|Requirement already satisfied:) ([A-Za-z0-9._\[\]-]+(?:==[^\s;]+)?)")
PROCESSING = re.compile(r"^Processing \S*?([^/\s]+)\.(?:whl|tar\.gz|zip)\b")


def pinned(path: Path) -> int:
    """Return how many requirements ``path`` pins, counting the files it includes (``-r FILE``)."""
    count = 0
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            count += pinned(path.parent / line[3:].strip())
        elif line and not line.startswith("-"):
            count += 1
    return count


def main(argv: list[str]) -> int:
    requirements = Path(argv[0])
    total = pinned(requirements)
    began = time.monotonic()
    print(
        f"formation: installing {total} pinned packages into {Path(sys.prefix).name}/ (first use, or a "
        "requirements file changed): about a minute with a warm pip cache, a few minutes on a fresh machine",
        flush=True,
    )
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    pip = subprocess.Popen(
        [*command, "-r", str(requirements)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen, output = 0, []
    for line in pip.stdout:
        output.append(line)
        if match := SEEN.match(line) or PROCESSING.match(line):
            seen += 1
            print(f"formation: [{seen:>{len(str(total))}}/{total}] {match.group(1)}", flush=True)
        elif line.startswith("Installing collected packages"):
            print("formation: unpacking the new packages into the environment (the longest step)", flush=True)
    if pip.wait() != 0:
        sys.stdout.write("".join(output))
        print(f"formation: pip failed with exit code {pip.returncode}", flush=True)
        return pip.returncode
    print(f"formation: requirements installed in {time.monotonic() - began:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
