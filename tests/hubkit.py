"""Test helpers: a real hub on a loopback port, a REST client, and in-process runners.

Everything here is real: the hub is the production aiohttp app with a SQLite file in the test's
tmp_path; runners are the production RunnerConnection over real websockets.
"""

import asyncio
import base64
import json
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nacl.public
from aiohttp import web

from agent.connection import Outbox, RunnerConnection
from agent.keys import SecretOpener
from agent.worker import TaskWorker
from hub.app import create_app
from hub.config import HubConfig, load_config
from hub.context import HUB, Hub
from hub.security import hash_password
from hub.serving import HubSite, make_runner

ADMIN_LOGIN = "admin"
ADMIN_PASSWORD = "admin-password-1"
FINAL = {"success", "error", "stopped"}
REGISTRATION_TOKEN = "test-registration-token"
# One key pair for every in-process runner (registered with its public half).
RUNNER_PRIVATE_KEY = nacl.public.PrivateKey.generate()
RUNNER_PUBLIC_KEY = base64.b64encode(bytes(RUNNER_PRIVATE_KEY.public_key)).decode()
ACCESS_KEY_ENCRYPTION = "dGVzdC1vbmx5LWtleS10ZXN0LW9ubHkta2V5LTMyYis="  # 32 bytes, tests only


class Api:
    """A logged-in REST client with Semaphore's paths."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession):
        self.base_url = base_url
        self.session = session

    async def request(self, method: str, path: str, body: Any = None,
                      raw: bytes | None = None, **kwargs) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        headers.update(kwargs.pop("headers", {}))
        async with self.session.request(method, self.base_url + path, data=data,
                                        headers=headers, **kwargs) as response:
            text = await response.text()
            if response.content_type == "application/json" and text:
                return response.status, json.loads(text)
            return response.status, text

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        got, data = await self.request(method, path, body)
        assert got == status, f"{method} {path} -> {got} {data!r} (expected {status})"
        return data

    async def login(self, login: str = ADMIN_LOGIN, password: str = ADMIN_PASSWORD) -> None:
        await self.ok("POST", "/api/auth/login", {"auth": login, "password": password}, 204)

    # Building blocks for tasks.

    async def project(self, name: str = "P") -> int:
        return (await self.ok("POST", "/api/projects", {"name": name}, 201))["id"]

    async def template(self, project_id: int, script_dir: Path | str | None, playbook: str,
                       app: str = "bash", runner_tag: str = "", env: dict | None = None,
                       arguments: list[str] | None = None, git_branch: str = "",
                       allow_override: bool = False) -> int:
        body: dict[str, Any] = {"name": f"t-{playbook}", "app": app, "playbook": playbook,
                                "runner_tag": runner_tag,
                                "arguments": json.dumps(arguments or []),
                                "allow_override_args_in_task": allow_override}
        if script_dir is not None:
            repo = await self.ok("POST", f"/api/project/{project_id}/repositories",
                                 {"name": "r", "git_url": str(script_dir),
                                  "git_branch": git_branch}, 201)
            body["repository_id"] = repo["id"]
        if env is not None:
            environment = await self.ok("POST", f"/api/project/{project_id}/environment",
                                        {"name": "e", "env": json.dumps(env)}, 201)
            body["environment_id"] = environment["id"]
        return (await self.ok("POST", f"/api/project/{project_id}/templates", body, 201))["id"]

    async def run(self, project_id: int, template_id: int, **extra) -> int:
        task = await self.ok("POST", f"/api/project/{project_id}/tasks",
                             {"template_id": template_id, **extra}, 201)
        return task["id"]

    async def task(self, project_id: int, task_id: int) -> dict:
        return await self.ok("GET", f"/api/project/{project_id}/tasks/{task_id}")

    async def wait_status(self, project_id: int, task_id: int, statuses=FINAL,
                          timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            task = await self.task(project_id, task_id)
            if task["status"] in statuses:
                return task
            assert time.monotonic() < deadline, f"task {task_id} stuck in {task['status']}"
            await asyncio.sleep(0.02)

    async def raw_output(self, project_id: int, task_id: int) -> str:
        return await self.ok("GET", f"/api/project/{project_id}/tasks/{task_id}/raw_output")


@dataclass
class RunningHub:
    config: HubConfig
    app: web.Application
    runner: web.AppRunner
    base_url: str
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)
    runners: list["InProcessRunner"] = field(default_factory=list)
    # What the test's own REST clients trust when the hub serves TLS (None: defaults).
    client_ssl: ssl.SSLContext | None = None

    @property
    def hub(self) -> Hub:
        return self.app[HUB]

    @property
    def ws_url(self) -> str:
        scheme = "wss://" if self.base_url.startswith("https://") else "ws://"
        return scheme + self.base_url.split("://", 1)[1] + "/api/internal/runners/ws"

    async def api(self, login: bool = True) -> Api:
        connector = aiohttp.TCPConnector(ssl=self.client_ssl) if self.client_ssl else None
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                        connector=connector)
        self.sessions.append(session)
        api = Api(self.base_url, session)
        if login:
            await api.login()
        return api

    async def register(self, name: str = "r", tags: list[str] | None = None,
                       max_parallel_tasks: int = 0) -> str:
        api = await self.api(login=False)
        answer = await api.ok("POST", "/api/internal/runners", {
            "registration_token": REGISTRATION_TOKEN, "name": name, "tags": tags or [],
            "max_parallel_tasks": max_parallel_tasks, "public_key": RUNNER_PUBLIC_KEY})
        return answer["token"]

    async def start_runner(self, tmp_path: Path, name: str = "r", tags: list[str] | None = None,
                           max_parallel_tasks: int = 0, token: str | None = None,
                           kill_grace: float = 2.0,
                           ssl_context: ssl.SSLContext | None = None) -> "InProcessRunner":
        token = token or await self.register(name, tags, max_parallel_tasks)
        runner = InProcessRunner(self.ws_url, token, tmp_path / f"runner-{name}", name,
                                 tags or [], max_parallel_tasks, kill_grace,
                                 ssl_context=ssl_context)
        await runner.start()
        self.runners.append(runner)
        return runner

    async def close(self) -> None:
        for runner in self.runners:
            await runner.stop()
        for session in self.sessions:
            await session.close()
        await self.runner.cleanup()


class InProcessRunner:
    """The production runner connection and worker, run inside the test's event loop."""

    def __init__(self, url: str, token: str, work: Path, name: str, tags: list[str],
                 max_parallel_tasks: int, kill_grace: float,
                 ssl_context: ssl.SSLContext | None = None):
        outbox = Outbox()
        self.worker = TaskWorker(work, max_parallel_tasks, emit=outbox.emit,
                                 kill_grace=kill_grace,
                                 opener=SecretOpener(RUNNER_PRIVATE_KEY))
        self.connection = RunnerConnection(url, token, self.worker, outbox, name=name, tags=tags,
                                           disk_path="/", ssl_context=ssl_context)
        self._until = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self, timeout: float = 10.0) -> None:
        self._task = asyncio.create_task(self.connection.run(self._until))
        waiter = asyncio.create_task(self.connection.connected.wait())
        done, _ = await asyncio.wait({waiter, self._task}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            waiter.cancel()
            self._task.result()  # raises what ended it
        assert waiter in done, "runner did not connect"

    async def stop(self) -> None:
        self.worker.stop_all("test over")
        self._until.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


async def start_hub(tmp_path: Path, ssl_context: ssl.SSLContext | None = None,
                    client_ssl: ssl.SSLContext | None = None, **overrides: Any) -> RunningHub:
    """A hub on 127.0.0.1 with a free port, an admin user and a SQLite file in tmp_path.

    With ssl_context it serves HTTPS/WSS (base_url https://); client_ssl is what the test's
    REST clients then trust.
    """
    values = {"interface": "127.0.0.1", "port": 1, "sqlite": {"host": str(tmp_path / "hub.sqlite")},
              "tmp_path": str(tmp_path / "hub-tmp"),
              "runner_registration_token": REGISTRATION_TOKEN,
              "access_key_encryption": ACCESS_KEY_ENCRYPTION, **overrides}
    config_file = tmp_path / "hub-config.json"
    config_file.write_text(json.dumps(values))
    config = load_config(config_file, environ={})
    app = create_app(config)
    # Served as `semaphore server` serves it: every connection guarded (hub.serving).
    runner = make_runner(app, config, shutdown_timeout=5)
    await runner.setup()
    site = HubSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site.port
    scheme = "https" if ssl_context is not None else "http"
    hub = RunningHub(config, app, runner, f"{scheme}://127.0.0.1:{port}", client_ssl=client_ssl)
    store = hub.hub.store
    if await store.find_user_by_login(ADMIN_LOGIN) is None:
        await store.create_user(ADMIN_LOGIN, "Admin", "admin@example.com",
                                hash_password(ADMIN_PASSWORD), admin=True)
    return hub


def write_script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(body)
    return path
