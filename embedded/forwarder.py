"""A TCP forwarder run as a process of its own (stdlib only, so it also runs inside a network
namespace through ``ip netns exec``): ``python embedded/forwarder.py LISTEN_HOST LISTEN_PORT
TARGET_HOST TARGET_PORT``. Each accepted connection is pumped both ways by two threads until
either side closes; the process runs until killed (embedded.silent_link stops it by PID)."""

import contextlib
import socket
import sys
import threading


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)


def main(listen_host: str, listen_port: str, target_host: str, target_port: str) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((listen_host, int(listen_port)))
    listener.listen(64)
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection((target_host, int(target_port)), timeout=5)
        except OSError:
            client.close()
            continue
        upstream.settimeout(None)
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


if __name__ == "__main__":
    main(*sys.argv[1:5])
