"""The console's pages as a test sees them, and a TCP proxy that can cut every
connection (a network failure in the middle of a stream)."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import httpx

from tests.server.helpers import finished_run, new_conversation


def sign_in(page: Any, url: str, key: str, path: str = "/ui/") -> None:
    """Open the console and give the key in its form, as a person does."""
    page.goto(url + path)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Open the console").click()
    page.locator("#session:not([hidden])").wait_for()


def run_turn(client: httpx.Client, agent: str, message: str) -> dict[str, Any]:
    """A turn over the API, to its end: the finished run."""
    conversation = new_conversation(client, agent)
    response = client.post(
        f"/v1/conversations/{conversation}/messages", json={"message": message, "stream": False}
    )
    assert response.status_code == 202, response.text
    return finished_run(client, response.json()["id"])


def open_run_from_list(page: Any, run_id: str) -> None:
    page.locator(f'a[data-run-link="{run_id}"]').click()
    page.locator(f'h1:has-text("{run_id}")').wait_for()


class CuttingProxy:
    """Forwards TCP connections from a loopback port to `upstream`; `cut()` closes every
    connection open at that moment (new ones are accepted as before)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        self.accepted = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.open += [client, server]
                self.accepted += 1
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> int:
        """Reset every open connection; returns how many there were."""
        with self.lock:
            cut, self.open = self.open, []
        for sock in cut:
            # The end of a connection in the middle of a response: the browser sees a
            # chunked body that never ended, a network error.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        return len(cut) // 2

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        self.cut()
