"""The SMTP dialogue of the tests' misbehaving servers (trickle.TrickleSMTP, silent_smtp.SilentSMTP):
a real server on 127.0.0.1, written on a bare socket because each misbehaves at one step of the
exchange where a well-behaved server (aiosmtpd) cannot be made to. Each records the Message-ID of
every message it accepts."""

import contextlib
import socketserver
import threading
from email import message_from_bytes
from email.policy import default as default_policy

from embedded.servers import free_port


class RawSMTPHandler(socketserver.StreamRequestHandler):
    """One SMTP session; a server's handler overrides the hooks ``greeting``, ``ehlo`` and
    ``data_received`` to misbehave at that step."""

    banner = "raw.localhost"

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # the client dropped the connection (its timeout)
            self.talk(self.server.owner)

    def send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def greeting(self, server: "RawSMTP") -> bool:
        """Before the greeting; False ends the session without one."""
        return True

    def ehlo(self, server: "RawSMTP") -> None:
        self.send("250 OK")

    def data_received(self, server: "RawSMTP") -> bool:
        """After the message's final dot; False ends the session without an answer."""
        return True

    def talk(self, server: "RawSMTP") -> None:
        if not self.greeting(server):
            return
        self.send(f"220 {self.banner} ESMTP")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.ehlo(server)
            elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                self.send("250 OK")
            elif verb == b"DATA":
                self.send("354 go ahead")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                if not self.data_received(server):
                    return
                with server.lock:
                    server.message_ids.append(str(message_from_bytes(data, policy=default_policy)["Message-ID"]))
                self.send("250 accepted")
            elif verb == b"QUIT":
                self.send("221 bye")
                return
            else:
                self.send("502 not implemented")


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True  # as servers bind (a restarted server gets its port back)
    daemon_threads = True


class RawSMTP:
    """Start with ``start()``, stop with ``stop()``; ``received()`` lists the accepted Message-IDs.
    A subclass names its ``handler`` (a RawSMTPHandler)."""

    handler: type[RawSMTPHandler] = RawSMTPHandler

    def __init__(self, *, port: int | None = None):
        self.lock = threading.Lock()
        self.message_ids: list[str] = []
        self.port = port or free_port()
        self.server = _Server(("127.0.0.1", self.port), self.handler)
        self.server.owner = self

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def received(self) -> list[str]:
        with self.lock:
            return list(self.message_ids)

    def start(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
