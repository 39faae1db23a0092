"""An SMTP sink for development: accept every message, keep it in a Maildir, print one line.

Run by the embedded runner as ``python -m embedded.smtpsink --port N --maildir DIR``; listens
on 127.0.0.1 only. aiosmtpd does the SMTP (https://aiosmtpd.aio-libs.org/); stdlib
``mailbox.Maildir`` does the storage. Stops on SIGTERM or SIGINT.
"""

import argparse
import mailbox
import signal
import sys
import threading
from email import message_from_bytes
from email.policy import default as default_policy

from aiosmtpd.controller import Controller


class MaildirHandler:
    """aiosmtpd handler: store each message in ``maildir`` and print a summary line."""

    def __init__(self, maildir: str):
        self.box = mailbox.Maildir(maildir, create=True)
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        message = message_from_bytes(envelope.content, policy=default_policy)
        with self.lock:
            self.box.add(envelope.content)
        print(
            f"smtp-sink: {message.get('Message-ID', '<no id>')} from {envelope.mail_from} "
            f"to {', '.join(envelope.rcpt_tos)}: {message.get('Subject', '')}",
            flush=True,
        )
        return "250 Message accepted for delivery"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True)
    args = parser.parse_args(argv)
    controller = Controller(MaildirHandler(args.maildir), hostname="127.0.0.1", port=args.port)
    controller.start()
    print(f"smtp-sink: listening on 127.0.0.1:{args.port}, keeping mail in {args.maildir}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
