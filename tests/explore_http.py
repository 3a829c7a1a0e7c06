"""The explorer over HTTP in tests: one request with chosen headers, the session token, a guarded write."""

import http.client
import json


def call(server, path, body=None, *, headers=None, host=None, method=None):
    """``(status, parsed JSON body)`` of one request; ``host`` replaces the Host header."""
    port = server.server_address[1]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        connection.putrequest(method or ("GET" if data is None else "POST"), path, skip_host=True)
        connection.putheader("Host", host or f"127.0.0.1:{port}")
        for key, value in (headers or {}).items():
            connection.putheader(key, value)
        if data is not None:
            connection.putheader("Content-Length", str(len(data)))
        connection.endheaders(data)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def token(server) -> str:
    status, session = call(server, "/api/session")
    assert status == 200 and session["labels"] is True
    return session["token"]


def write_headers(server, **extra) -> dict:
    return {"Content-Type": "application/json", "X-Tagscale-Token": token(server), **extra}


def post(server, track_id, tag, verdict):
    status, body = call(
        server, "/api/labels", {"track_id": track_id, "tag": tag, "verdict": verdict}, headers=write_headers(server)
    )
    assert status == 201, body
    return body


def record_requests(httpd) -> None:
    """Swap an explorer server's handler for one that keeps ``(method, path, status)`` of every request
    in ``httpd.seen`` (the server itself keeps no such record). Call before ``httpd.start()``."""
    from infra.explore.server import Handler

    class RecordingHandler(Handler):
        def log_request(self, code="-", size="-"):
            self.server.seen.append((self.command, self.path, int(code) if str(code).isdigit() else code))
            super().log_request(code, size)

    httpd.RequestHandlerClass, httpd.seen = RecordingHandler, []
