"""Run the buffering proxy that stands in front of web (deploy/nginx/web.conf.template) on this machine.

The file is the one docker compose and the Kubernetes web pod give the official nginx image: its
``${NAME}`` placeholders are filled the way that image's /etc/nginx/templates step does (envsubst),
and nginx runs with it as an ordinary process, its pid, temporary and log files in one folder of
its own, in the foreground. Debian's nginx is used, fetched without root when the machine has none
(embedded.servers.nginx_binary).
"""

import os
import re
import signal
import subprocess
from pathlib import Path
from typing import IO

from embedded.harness import ROOT, spawn
from embedded.polling import wait_until
from embedded.servers import free_port, nginx_binary, port_open, service_user

TEMPLATE = ROOT / "deploy" / "nginx" / "web.conf.template"
# Where Debian's nginx package is unpacked when the machine has none (ignored by git).
INSTALL_ROOT = ROOT / ".formation"
# What the official image's nginx.conf around conf.d/*.conf holds that matters here, with every
# path moved into the proxy's own folder (the compiled-in ones are under /var and /run).
MAIN_CONF = """\
worker_processes 1;
error_log {folder}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/conf.d/default.conf;
}}
"""
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def proxy_config_render(template: str, variables: dict[str, str]) -> str:
    """Return ``template`` with each ``${NAME}`` replaced by ``variables[NAME]``, as envsubst does
    in the official nginx image (docker-entrypoint.d/20-envsubst-on-templates.sh).

    Raise KeyError naming a placeholder that ``variables`` lacks: the image would leave it empty
    (envsubst) and nginx would refuse the file, or worse accept it.
    """

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in variables:
            raise KeyError(f"{TEMPLATE.name} needs {name}")
        return variables[name]

    return _PLACEHOLDER.sub(value, template)


class WebProxy:
    """nginx with deploy/nginx/web.conf.template in front of web on 127.0.0.1:``web_port``.

    ``folder`` (a Path) receives the rendered configuration, the pid, temporary and log files.
    ``port`` is the proxy's port (int). Run as the system user SERVICE_USER when this process is
    root, as the image runs its workers unprivileged. ``stop()`` sends SIGQUIT, nginx's graceful
    stop (https://nginx.org/en/docs/control.html); ``close()`` kills what is left.
    """

    def __init__(self, folder: Path, web_port: int, *, trusted_proxy_cidr: str = "127.0.0.1/32"):
        self.folder = folder
        self.port = free_port()
        binary, library_env = nginx_binary(INSTALL_ROOT)
        (folder / "conf.d").mkdir(parents=True, exist_ok=True)
        rendered = proxy_config_render(
            TEMPLATE.read_text(),
            {
                "WEB_UPSTREAM": f"127.0.0.1:{web_port}",
                "PROXY_PORT": f"127.0.0.1:{self.port}",
                "TRUSTED_PROXY_CIDR": trusted_proxy_cidr,
            },
        )
        (folder / "conf.d" / "default.conf").write_text(rendered)
        (folder / "nginx.conf").write_text(MAIN_CONF.format(folder=folder))
        options = {}
        if os.geteuid() == 0:
            options = service_user(own=[folder, *(p for p in folder.rglob("*"))], reach=[Path(binary)])
        argv = [binary, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", str(folder / "error.log")]
        argv += ["-g", f"daemon off; pid {folder}/nginx.pid;"]
        self.popen: subprocess.Popen
        self.log: IO
        self.popen, self.log = spawn(argv, {**os.environ, **library_env}, log_prefix="formation-nginx-", **options)
        wait_until(self._up, deadline=15, message=f"nginx on port {self.port}")

    def _up(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(f"nginx exited {self.popen.returncode}:\n{self.errors()}")
        return port_open(self.port)

    def errors(self) -> str:
        """Return nginx's error log and its output (str)."""
        text = Path(self.log.name).read_text(errors="replace")
        error_log = self.folder / "error.log"
        return text + (error_log.read_text(errors="replace") if error_log.exists() else "")

    def stop(self, deadline: float = 30) -> int:
        """Stop gracefully (SIGQUIT: in-flight requests finish); return nginx's exit code.
        Raise subprocess.TimeoutExpired after ``deadline`` seconds."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGQUIT)
        return self.popen.wait(timeout=deadline)

    def close(self) -> None:
        """Kill nginx's process group if it still runs, and remove its output file."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
        self.log.close()
        os.unlink(self.log.name)
