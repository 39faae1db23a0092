"""A real SMTP server on 127.0.0.1 whose EHLO reply can trickle: one line every ``line_seconds``
for ``trickle_seconds``, so no single socket read waits long but the exchange takes long."""

import threading
import time

from tests.support.raw_smtp import RawSMTP, RawSMTPHandler


class _Handler(RawSMTPHandler):
    banner = "trickle.localhost"

    def ehlo(self, server: "TrickleSMTP") -> None:
        if server.trickle.is_set():
            end = time.monotonic() + server.trickle_seconds
            count = 0
            while time.monotonic() < end:
                self.send(f"250-SLOW{count}")
                count += 1
                time.sleep(server.line_seconds)
        self.send("250 trickle.localhost")


class TrickleSMTP(RawSMTP):
    """Start with ``start()``, stop with ``stop()``; ``trickle`` (an Event, set by default) slows EHLO."""

    handler = _Handler

    def __init__(self, *, line_seconds: float = 1.5, trickle_seconds: float = 20.0, port: int | None = None):
        super().__init__(port=port)
        self.line_seconds, self.trickle_seconds = line_seconds, trickle_seconds
        self.trickle = threading.Event()
        self.trickle.set()
