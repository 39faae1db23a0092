"""Which release a process runs (project.env.release_version): a platform's variable, else the
commit of the git checkout read from its .git files (a branch, a packed ref, a worktree), else
"unknown"; and the PostgreSQL sessions carry it in their application_name."""

import os
import socket
import subprocess

import pytest
from django.conf import settings
from django.db import connection

from project.env import RELEASE_VARIABLES, release_version


@pytest.fixture(autouse=True)
def no_release_variables(monkeypatch):
    """None of RELEASE_VARIABLES is set, whatever the environment running the tests says."""
    for name in RELEASE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"RELEASE_VERSION": "v42", "SOURCE_VERSION": "0a1b2c3", "HEROKU_SLUG_COMMIT": "9f8e7d6"}, "v42"),
        ({"SOURCE_VERSION": "0a1b2c3", "HEROKU_SLUG_COMMIT": "9f8e7d6"}, "0a1b2c3"),
        ({"HEROKU_SLUG_COMMIT": "9f8e7d6"}, "9f8e7d6"),
        ({"RELEASE_VERSION": "", "HEROKU_SLUG_COMMIT": "9f8e7d6"}, "9f8e7d6"),  # empty is unset
    ],
)
def test_the_first_release_variable_set_names_the_release(monkeypatch, tmp_path, variables, expected):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert release_version(tmp_path) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("registry.example.com/formation:1.4.0+build.7", "registry.example.com-formation-1.4.0+bui"),
        ("release 12 (hotfix) é", "release-12--hotfix---"),
        (" v_1.2\n", "v_1.2"),  # blanks around are dropped
    ],
)
def test_unsafe_characters_become_dashes_and_the_release_is_cut_at_40(monkeypatch, tmp_path, value, expected):
    monkeypatch.setenv("RELEASE_VERSION", value)
    assert release_version(tmp_path) == expected
    assert len(expected) <= 40


def git(*args: str, cwd) -> str:
    """Run git ``args`` in ``cwd`` with a throwaway identity and no user or system configuration; return its output."""
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=30, check=True)
    return result.stdout.strip()


def commit(checkout, message: str) -> str:
    """Commit a change in ``checkout``; return the new commit's 12 first hex digits."""
    (checkout / "CHANGES").write_text(message)
    git("add", "CHANGES", cwd=checkout)
    git("commit", "-q", "-m", message, cwd=checkout)
    return git("rev-parse", "HEAD", cwd=checkout)[:12]


@pytest.fixture
def checkout(tmp_path):
    """A git repository in tmp_path/checkout, branch main, with one commit."""
    path = tmp_path / "checkout"
    path.mkdir()
    git("init", "-q", "-b", "main", cwd=path)
    commit(path, "first")
    return path


def test_a_checkouts_commit_names_the_release(checkout):
    assert release_version(checkout) == git("rev-parse", "HEAD", cwd=checkout)[:12]


def test_a_packed_branch_is_read_from_packed_refs(checkout):
    head = commit(checkout, "second")
    git("pack-refs", "--all", cwd=checkout)
    assert not (checkout / ".git" / "refs" / "heads" / "main").exists()
    assert release_version(checkout) == head


def test_a_detached_head_names_its_commit(checkout):
    first = git("rev-parse", "HEAD", cwd=checkout)[:12]
    commit(checkout, "second")
    git("checkout", "-q", "--detach", "HEAD~1", cwd=checkout)
    assert release_version(checkout) == first


def test_a_worktree_names_its_own_commit_loose_or_packed(checkout, tmp_path):
    worktree = tmp_path / "worktree"
    git("worktree", "add", "-q", "-b", "feature", str(worktree), cwd=checkout)
    head = commit(worktree, "on the feature branch")
    assert (worktree / ".git").is_file()  # "gitdir: …/checkout/.git/worktrees/worktree"
    assert head != release_version(checkout)
    assert release_version(worktree) == head
    git("pack-refs", "--all", cwd=worktree)  # the branch's ref now lives in the main repository's packed-refs
    assert release_version(worktree) == head


def test_unknown_without_a_variable_or_a_checkout(tmp_path):
    assert release_version(tmp_path) == "unknown"


@pytest.mark.django_db
def test_a_database_session_is_named_after_the_process_type_release_pid_and_host():
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('application_name')")
        name = cursor.fetchone()[0]
    expected = f"formation/{settings.PROCESS_TYPE}/{settings.RELEASE}/{os.getpid()}@{socket.gethostname()}"
    assert name == expected[:63]
