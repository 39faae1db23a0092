"""A real SMTP server on 127.0.0.1 that can go silent without closing the connection: it accepts
the TCP connection and then never sends its greeting (``silent_at="greeting"``), or takes the
whole message and never answers the end of DATA (``silent_at="data"``), as a vanished host or an
expired NAT entry looks to the client. While ``silent`` (an Event, set by default) is set, every
connection is held open and unanswered until the client gives up; once it is cleared the server
answers normally and records each message's Message-ID."""

import contextlib
import socketserver
import threading
from email import message_from_bytes
from email.policy import default as default_policy

from embedded.servers import free_port


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        with contextlib.suppress(OSError):  # the client dropped the connection (its timeout)
            self._talk(self.server.owner)

    def _send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def _hold(self, server: "SilentSMTP") -> None:
        """Say nothing until the client closes (read returns b"") or the server stops."""
        server.held.set()
        self.connection.settimeout(0.2)
        while not server.stopping.is_set():
            try:
                if not self.connection.recv(4096):
                    return
            except TimeoutError:
                continue

    def _talk(self, server: "SilentSMTP") -> None:
        silent = server.silent.is_set()  # decided once per connection, as a host vanishes between two
        if silent and server.silent_at == "greeting":
            return self._hold(server)
        self._send("220 silent.localhost ESMTP")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                self._send("250 OK")
            elif verb == b"DATA":
                self._send("354 go ahead")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                if silent and server.silent_at == "data":
                    return self._hold(server)  # never "250": the client cannot know the outcome
                with server.lock:
                    server.message_ids.append(str(message_from_bytes(data, policy=default_policy)["Message-ID"]))
                self._send("250 accepted")
            elif verb == b"QUIT":
                self._send("221 bye")
                return
            else:
                self._send("502 not implemented")


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class SilentSMTP:
    """Start with ``start()``, stop with ``stop()``; clear ``silent`` to make it answer again.
    ``held`` is set once a connection has been held unanswered."""

    def __init__(self, *, silent_at: str):
        if silent_at not in ("greeting", "data"):
            raise ValueError(f"silent_at must be 'greeting' or 'data', not {silent_at!r}")
        self.silent_at = silent_at
        self.silent, self.held, self.stopping = threading.Event(), threading.Event(), threading.Event()
        self.silent.set()
        self.lock = threading.Lock()
        self.message_ids: list[str] = []
        self.port = free_port()
        self.server = _Server(("127.0.0.1", self.port), _Handler)
        self.server.owner = self

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def received(self) -> list[str]:
        with self.lock:
            return list(self.message_ids)

    def start(self) -> "SilentSMTP":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
