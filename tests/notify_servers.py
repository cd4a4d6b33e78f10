"""Real local receivers for notification tests: an SMTP server (aiosmtpd) and an HTTP one."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller
from services import free_port


class _Inbox:
    """What a receiver got, with a condition to wait for the n-th arrival."""

    def __init__(self) -> None:
        self.items: list = []
        self._arrived = threading.Condition()

    def add(self, item) -> None:
        with self._arrived:
            self.items.append(item)
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.items) >= count, timeout_s)
            return list(self.items)

    def clear(self) -> None:
        with self._arrived:
            self.items.clear()


class SmtpReceiver(_Inbox):
    """An aiosmtpd SMTP server on 127.0.0.1 keeping each message's envelope and text."""

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.add({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                  "subject": str(message["Subject"]).strip(), "body": message.get_content()})
        return "250 Message accepted for delivery"

    def __enter__(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()


class WebhookReceiver(_Inbox):
    """An HTTP server on 127.0.0.1 keeping every JSON body POSTed to it.

    `gate` (set by default) holds each request until it is set: a receiver that hangs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                inbox.gate.wait(30)
                inbox.add({"path": self.path, "type": self.headers["Content-Type"],
                           "json": json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> WebhookReceiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
