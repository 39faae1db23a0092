"""A real SMTP server on 127.0.0.1 whose EHLO reply can trickle: one line every ``line_seconds``
for ``trickle_seconds``, so no single socket read waits long but the exchange takes long."""

import contextlib
import socketserver
import threading
import time
from email import message_from_bytes
from email.policy import default as default_policy

from embedded.servers import free_port


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        server: TrickleSMTP = self.server.owner
        with contextlib.suppress(OSError):  # the client dropped the connection (its deadline)
            self._talk(server)

    def _send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def _talk(self, server: "TrickleSMTP") -> None:
        self._send("220 trickle.localhost ESMTP")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                if server.trickle.is_set():
                    end = time.monotonic() + server.trickle_seconds
                    count = 0
                    while time.monotonic() < end:
                        self._send(f"250-SLOW{count}")
                        count += 1
                        time.sleep(server.line_seconds)
                self._send("250 trickle.localhost")
            elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                self._send("250 OK")
            elif verb == b"DATA":
                self._send("354 go ahead")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                with server.lock:
                    server.message_ids.append(str(message_from_bytes(data, policy=default_policy)["Message-ID"]))
                self._send("250 accepted")
            elif verb == b"QUIT":
                self._send("221 bye")
                return
            else:
                self._send("502 not implemented")


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True  # as servers bind (a restarted server gets its port back)
    daemon_threads = True


class TrickleSMTP:
    """Start with ``start()``, stop with ``stop()``; ``trickle`` (an Event, set by default) slows EHLO."""

    def __init__(self, *, line_seconds: float = 1.5, trickle_seconds: float = 20.0, port: int | None = None):
        self.line_seconds, self.trickle_seconds = line_seconds, trickle_seconds
        self.trickle = threading.Event()
        self.trickle.set()
        self.lock = threading.Lock()
        self.message_ids: list[str] = []
        self.port = port or free_port()
        self.server = _Server(("127.0.0.1", self.port), _Handler)
        self.server.owner = self

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def received(self) -> list[str]:
        with self.lock:
            return list(self.message_ids)

    def start(self) -> "TrickleSMTP":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
