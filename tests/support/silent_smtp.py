"""A real SMTP server on 127.0.0.1 that can go silent without closing the connection: it accepts
the TCP connection and then never sends its greeting (``silent_at="greeting"``), or takes the
whole message and never answers the end of DATA (``silent_at="data"``), as a vanished host or an
expired NAT entry looks to the client. While ``silent`` (an Event, set by default) is set, every
connection is held open and unanswered until the client gives up; once it is cleared the server
answers normally and records each message's Message-ID."""

import threading

from tests.support.raw_smtp import RawSMTP, RawSMTPHandler


class _Handler(RawSMTPHandler):
    banner = "silent.localhost"

    def _hold(self, server: "SilentSMTP") -> bool:
        """Say nothing until the client closes (read returns b"") or the server stops; False."""
        server.held.set()
        self.connection.settimeout(0.2)
        while not server.stopping.is_set():
            try:
                if not self.connection.recv(4096):
                    break
            except TimeoutError:
                continue
        return False

    def greeting(self, server: "SilentSMTP") -> bool:
        self.silent = server.silent.is_set()  # decided once per connection, as a host vanishes between two
        return self._hold(server) if self.silent and server.silent_at == "greeting" else True

    def data_received(self, server: "SilentSMTP") -> bool:
        # Never "250" while silent: the client cannot know the outcome.
        return self._hold(server) if self.silent and server.silent_at == "data" else True


class SilentSMTP(RawSMTP):
    """Start with ``start()``, stop with ``stop()``; clear ``silent`` to make it answer again.
    ``held`` is set once a connection has been held unanswered."""

    handler = _Handler

    def __init__(self, *, silent_at: str):
        if silent_at not in ("greeting", "data"):
            raise ValueError(f"silent_at must be 'greeting' or 'data', not {silent_at!r}")
        super().__init__()
        self.silent_at = silent_at
        self.silent, self.held, self.stopping = threading.Event(), threading.Event(), threading.Event()
        self.silent.set()

    def stop(self) -> None:
        self.stopping.set()
        super().stop()
