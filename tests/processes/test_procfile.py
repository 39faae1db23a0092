"""The process type a command runs as: the Procfile's type whose line runs it, unless PROCESS_TYPE names one."""

import pytest

from processes.procfile import formation_types, process_type


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([".venv/bin/gunicorn", "--config", "gunicorn.conf.py", "project.wsgi"], "web"),
        (["manage.py", "rqworker", "maintenance", "default"], "worker"),
        (["manage.py", "rqscheduler", "--interval", "5"], "scheduler"),
        (["/usr/local/bin/python", "manage.py", "mailer"], "mailer"),
        (["manage.py", "migrate", "--noinput"], "release"),
        (["manage.py", "shell"], "shell"),  # a one-off: named after its command
    ],
)
def test_the_process_type_is_the_procfile_type_running_the_command(monkeypatch, argv, expected):
    monkeypatch.delenv("PROCESS_TYPE", raising=False)
    assert process_type(argv) == expected


def test_process_type_overrides_what_the_command_says(monkeypatch):
    monkeypatch.setenv("PROCESS_TYPE", "worker-priority")
    assert process_type(["manage.py", "rqworker"]) == "worker-priority"


def test_every_long_running_process_type_of_the_procfile_has_a_liveness_probe():
    from processes.management.commands.probe import Command

    parser = Command().create_parser("manage.py", "probe")
    [choices] = [action.choices for action in parser._actions if action.dest == "type"]
    assert sorted(choices) == sorted(formation_types())
