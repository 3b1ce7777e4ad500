"""A scripted HTTP server on 127.0.0.1 for the clients that read answers below httpx
(squash/distribution/heads.py, bodies.py): each request is answered with the bytes a
script gives, whole or a byte at a time."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

# what one accepted connection does with each request it reads: the bytes to answer
# (None: close the connection without answering)
Script = Callable[[int, bytes], bytes | None]


class Server:
    """Accepts connections on 127.0.0.1; answers each request as `script` says, written
    one byte at a time when `trickle`, and closes the connection after each answer when
    `cut`."""

    def __init__(self, script: Script, trickle: bool = False, cut: bool = False) -> None:
        self.script = script
        self.trickle = trickle
        self.cut = cut
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self.requests: list[bytes] = []
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                request, _, data = data.partition(b"\r\n\r\n")
                self.requests.append(request)
                answer = self.script(len(self.requests), request)
                if answer is None:
                    return
                if self.trickle:
                    for i in range(len(answer)):
                        conn.sendall(answer[i : i + 1])
                        time.sleep(0.0005)
                else:
                    conn.sendall(answer)
                if self.cut:
                    return

    def close(self) -> None:
        self.sock.close()
