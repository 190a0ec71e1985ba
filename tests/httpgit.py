"""A real git server over HTTP for tests: `git http-backend` (git's own smart-HTTP CGI program)
behind a small threaded http.server on a loopback port, with optional basic auth."""

import base64
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.gitkit import git


class GitHttpServer:
    """Serves the bare repositories under `root` at http://127.0.0.1:<port>/<name>.git."""

    def __init__(self, root: Path, login: str = "", password: str = "",
                 accounts: dict[str, tuple[str, Path]] | None = None):
        self.root = root
        self.credentials = (login, password) if login else None
        # login -> (password, root): each account sees its own repositories at the same URLs
        # (as per-user access rules or per-user home folders on a real server).
        self.accounts = accounts or {}
        self.requests: list[str] = []  # "METHOD path" of every request, in order
        self.authorizations: list[str] = []  # the Authorization headers received
        self.delay = 0.0  # seconds each request waits before it is answered (a slow server)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.handle(self)

            def do_POST(self) -> None:
                server.handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}.git"

    def publish(self, work: Path, name: str) -> Path:
        """A bare copy of the work repository `work`, served as <name>.git; pushes from
        `work` to it with `git push served`."""
        bare = self.root / f"{name}.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
        git(work, "remote", "add", "served", str(bare))
        return bare

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        path, _, query = request.path.partition("?")
        if self.delay:
            time.sleep(self.delay)
        self.requests.append(f"{request.command} {path}")
        header = request.headers.get("Authorization", "")
        if header:
            self.authorizations.append(header)
        user = ""
        root = self.root
        if self.accounts:
            login, _, password = base64.b64decode(
                header.removeprefix("Basic ") or "").decode(errors="replace").partition(":")
            account = self.accounts.get(login)
            if account is None or account[0] != password:
                request.send_response(401)
                request.send_header("WWW-Authenticate", 'Basic realm="git"')
                request.send_header("Content-Length", "0")
                request.end_headers()
                return
            user, root = login, account[1]
        elif self.credentials is not None:
            expected = "Basic " + base64.b64encode(
                ":".join(self.credentials).encode()).decode()
            if header != expected:
                request.send_response(401)
                request.send_header("WWW-Authenticate", 'Basic realm="git"')
                request.send_header("Content-Length", "0")
                request.end_headers()
                return
            user = self.credentials[0]
        body = _read_body(request)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "GIT_PROJECT_ROOT": str(root), "GIT_HTTP_EXPORT_ALL": "1",
               "REQUEST_METHOD": request.command, "PATH_INFO": path, "QUERY_STRING": query,
               "CONTENT_TYPE": request.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "REMOTE_USER": user,
               "REMOTE_ADDR": "127.0.0.1",
               "HTTP_CONTENT_ENCODING": request.headers.get("Content-Encoding", "")}
        if request.headers.get("Git-Protocol"):
            env["HTTP_GIT_PROTOCOL"] = request.headers["Git-Protocol"]
        done = subprocess.run(["git", "http-backend"], input=body, env=env,
                              capture_output=True)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        request.send_response(status)
        for name, value in headers:
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)


def _read_body(request: BaseHTTPRequestHandler) -> bytes:
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(request.rfile.readline().strip().split(b";")[0], 16)
            if size == 0:
                request.rfile.readline()
                return b"".join(chunks)
            chunks.append(request.rfile.read(size))
            request.rfile.readline()
    length = int(request.headers.get("Content-Length") or 0)
    return request.rfile.read(length) if length else b""
