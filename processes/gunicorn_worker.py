"""The gunicorn worker class of the ``web`` process type (``worker_class`` in gunicorn.conf.py).

Procfile: ``web: exec gunicorn --config gunicorn.conf.py --bind 0.0.0.0:$PORT project.wsgi``. On
SIGTERM each worker also serves the connections already waiting in its listen backlog, refuses new
ones, and exits once they and the requests in flight are answered; SIGINT and SIGQUIT stay
gunicorn's quick shutdown. Documented in docs/processes.md#graceful-shutdown.
"""

import contextlib
import errno
import select
import signal

from gunicorn.workers.sync import SyncWorker

from core.lifecycle import STOPPING

# Seconds a connection taken from the backlog at SIGTERM may stay silent (a browser's speculative
# preconnect sends nothing) before it is closed unserved.
DRAIN_IDLE_SECONDS = 2.0


class DrainingSyncWorker(SyncWorker):
    """SyncWorker that, on SIGTERM, serves the connections waiting in its listen backlog before exiting.

    Stock gunicorn stops accepting and exits once its request in flight is done; the listening
    socket is closed when the last process holding it exits, and Linux then resets every connection
    still waiting in its listen backlog: connections the kernel had accepted before the stop, whose
    clients have sent their requests, get a reset instead of a response (a failed request in a
    rolling restart). SIGINT and SIGQUIT are left as gunicorn's quick shutdown: workers exit at once,
    requests in flight and the backlog are dropped (https://docs.gunicorn.org/en/stable/signals.html).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # (listener, client socket, client address) taken from the backlog at SIGTERM, in arrival order.
        self.drained: list = []
        self.stopping = False

    def init_signals(self):
        super().init_signals()
        # gunicorn marks SIGTERM SA_RESTART (siginterrupt False), so its handler would wait until a
        # request blocked in a system call (reading a slow client, a query) returns, and the backlog
        # would keep filling meanwhile. Installed again without that flag, the handler runs at once;
        # the interrupted call is then resumed by Python itself (PEP 475), so the request goes on.
        signal.signal(signal.SIGTERM, self.handle_exit)

    def handle_exit(self, sig, frame):
        """Take the backlog, close the listeners, then stop after the request in flight (SIGTERM)."""
        # Once only: under honcho the worker gets SIGTERM twice (its process group's and the
        # arbiter's), and the second may land inside this handler while it drains.
        if self.stopping:
            return
        self.stopping = True
        STOPPING.set()
        self.drain_listeners()
        super().handle_exit(sig, frame)

    def drain_listeners(self) -> None:
        """Accept every connection waiting on each listener, then close the listener.

        Accepting until EAGAIN empties the backlog; closing this worker's copy of the listening socket
        (the arbiter closed its own already) makes the kernel refuse new connections at once. One that
        arrives between the last accept and the close is reset: it came after the stop. Runs inside
        the SIGTERM handler, possibly in the middle of a request: the listeners are non-blocking
        (gunicorn's run() sets them so), so this never waits.
        """
        for listener in self.sockets:
            # A request served later still asks its listener for the local address (sync worker's
            # handle_request): keep answering that from a copy taken before the close.
            address = listener.getsockname()
            while True:
                try:
                    client, addr = listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if exc.errno == errno.ECONNABORTED:
                        continue  # that client gave up while queued; take the next
                    break
                client.setblocking(True)
                self.drained.append((listener, client, addr))
            listener.getsockname = lambda address=address: address
            with contextlib.suppress(OSError):
                listener.close()
        # Wait on gunicorn's wake-up pipe only: the signal writes to it, so the loop's select returns.
        self.wait_fds = [self.PIPE[0]]
        if self.drained:
            self.log.info("stopping: serving %d connection(s) taken from the listen backlog", len(self.drained))

    def accept(self, listener):
        if self.stopping:
            raise BlockingIOError(errno.EAGAIN, "stopping: the listener is closed")
        try:
            super().accept(listener)
        except (OSError, AttributeError) as exc:
            if not self.stopping:
                raise
            # SIGTERM closed the listener between the check above and the accept (gunicorn's
            # socket wrapper has no socket left then): the loop's next alive check ends it.
            raise BlockingIOError(errno.EAGAIN, "stopping: the listener is closed") from exc

    def run(self):
        super().run()
        self.serve_drained()

    def serve_drained(self) -> None:
        """Serve the connections taken at SIGTERM, each as soon as its request has arrived."""
        waiting = {client: (listener, addr) for listener, client, addr in self.drained}
        self.drained = []
        while waiting:
            self.notify()
            ready, _, _ = select.select(list(waiting), [], [], DRAIN_IDLE_SECONDS)
            if not ready:
                break
            for client in ready:
                listener, addr = waiting.pop(client)
                self.handle(listener, client, addr)
        for client in waiting:
            with contextlib.suppress(OSError):
                client.close()
        if waiting:
            self.log.info("stopping: closed %d silent connection(s) after %gs", len(waiting), DRAIN_IDLE_SECONDS)
