"""A TCP forwarder whose link can be cut: the network between a worker and its
database (or coordinator) as the tests need it, without root or namespaces.

cut() makes it a blackhole, as a pulled cable is: bytes stop moving both ways,
no error reaches either end, new connections are accepted and then hear
nothing. restore() lets the held bytes through again, in order, as TCP would
after a short outage."""

from __future__ import annotations

import select
import socket
import threading


class Forwarder:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self._open = threading.Event()
        self._open.set()
        self._closed = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self._open.clear()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self._open.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        self._open.wait()
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        peers = {client: upstream, upstream: client}
        try:
            while not self._closed:
                self._open.wait()
                ready, _, _ = select.select(list(peers), [], [], 0.1)
                for sock in ready:
                    if not self._open.is_set():
                        break  # cut while waiting: hold what came in until restore()
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()
