from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lakehouse.probe import main


class Answers(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(int(self.path.strip("/")))
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_healthy_only_when_every_url_answers_2xx(server, capsys):
    assert main([f"{server}/200", f"{server}/204"]) == 0
    assert main([f"{server}/200", f"{server}/503"]) == 1
    assert capsys.readouterr().err == f"not healthy: {server}/503\n"


def test_an_unreachable_or_malformed_url_is_unhealthy_and_no_url_is_a_usage_error(capsys):
    assert main(["http://127.0.0.1:9/healthz"]) == 1
    assert main(["not a url"]) == 1
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err
