"""A real SMTP server (aiosmtpd) on 127.0.0.1 that records every message it accepts."""

import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy

from aiosmtpd.controller import Controller

from embedded.servers import free_port


@dataclass
class RecordingSMTP:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it accepts."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content, policy=default_policy))
        return "250 OK"

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def message_ids(self) -> list[str]:
        with self.lock:
            return [str(message["Message-ID"]) for message in self.messages]


def start_smtp() -> tuple[RecordingSMTP, Controller]:
    """Start a RecordingSMTP on a free port; return it and its controller (call ``.stop()``)."""
    recorder = RecordingSMTP(port=free_port())
    controller = Controller(recorder, hostname=recorder.host, port=recorder.port)
    controller.start()
    return recorder, controller
