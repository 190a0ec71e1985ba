"""A task's code: a git repository, fetched into a cache kept per runner and repository, then
checked out, at exactly the task's commit, into the task's own folder.

Why it is built this way:

- The cache (`<state folder>/repositories`, 0700, the runner's) is a bare repository per URL,
  updated with `git fetch` by the runner under a lock per repository. git runs there with the
  runner's rights and only the runner's configuration: HOME is a private empty folder (no
  `~/.gitconfig`, `~/.netrc` or credential store of the runner's user), no credential helper
  but ours, and nothing of the repository's content ever configures git.
- Each task gets its own checkout: a shallow fetch of its one commit from the cache into a
  new repository in its folder (objects copied, no hardlinks, no alternates), then handed to
  the task's user. A task can change its checkout, never the cache the next task's code
  comes from. The commit is resolved under the lock, so a fetch by another task at the same
  time changes nothing of it; a commit named by hash only if a branch or tag of this task's
  own fetch holds it (the cache keeps objects other logins fetched: one URL may show each
  login other refs, or another repository).
- Transports: https, http, ssh and git for the cache (GIT_ALLOW_PROTOCOL), so that a URL
  like `ext::sh -c ...` cannot run a command; `--` before every URL.
- A local repository (`file://` or a relative path) is not cached: fetched with the runner's
  rights, it could read any repository on this host, another project's cache included. It
  is cloned by the task's user, as before. An absolute path is used in place (executor).
- One runner process per state folder (its spool and task folders already assume it), so the
  lock is an asyncio.Lock; no file lock.
- Credentials: an https login/password reaches git through a credential helper reading the
  fetch's environment (a runner process: task users cannot read it), never argv, URL or a file;
  a password written into the URL goes the same way (the URL given to git is without it);
  an ssh key is loaded into a private ssh-agent of the runner's (agent.sshagent) for the
  fetch, never written to disk. Host keys: accept-new, in the cache's known_hosts.
"""

import asyncio
import hashlib
import os
import re
import shlex
import shutil
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex
from urllib.parse import unquote, urlsplit, urlunsplit

from agent.isolation import TaskIdentity, prepare_private_folder
from agent.sshagent import SshAgent, SshKeyError
from agent.taskenv import DEFAULT_PATH, INHERITED
from protocol.frames import RepositorySpec, SshKeySecret, TaskSecrets

REMOTE_PROTOCOLS = "https:http:ssh:git"
# Refs the cache keeps: every branch and tag; and, for a task that names no branch, what the
# remote's HEAD points at (its default branch; not fetched otherwise: a remote whose HEAD
# names a deleted branch still serves its other branches).
FETCH_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
DEFAULT_HEAD = "refs/semaphore/head"
# In a key's folder: where its agent's socket is, when not in that folder (a long path).
SOCKET_FOLDER_RECORD = "socket-folder"
COMMIT = re.compile(r"[0-9a-f]{4,64}\Z")
# The runner's git: its own config only; auto gc never detached (it would outlive the lock).
RUNNER_GIT = ("git", "-c", "credential.helper=", "-c", "gc.autoDetach=false",
              "-c", "maintenance.autoDetach=false", "-c", "core.hooksPath=/dev/null")
# The credential helper for a login/password key: reads the fetch's own environment.
CREDENTIAL_HELPER = ("credential.helper=!f() { test \"$1\" = get || exit 0; "
                     "printf 'username=%s\\npassword=%s\\n' \"$SEMAPHORE_GIT_LOGIN\" "
                     "\"$SEMAPHORE_GIT_PASSWORD\"; }; f")

# (argv, cwd, env, as_runner) -> (exit code, "exit" | "stop" | "timeout"): the executor's
# process runner, which streams output into the task and honours a stop.
RunProcess = Callable[[list[str], Path, dict[str, str], bool],
                      Awaitable[tuple[int | None, str]]]
Say = Callable[[str], Awaitable[None]]


class CheckoutFailed(Exception):
    """The task's code could not be had; `status` is error or stopped."""

    def __init__(self, message: str, status: str = "error", exit_code: int | None = None):
        super().__init__(message)
        self.status = status
        self.exit_code = exit_code


def is_local(url: str) -> bool:
    """Whether git reads this URL from this host's file system (as git's own rule: a
    `file://` URL, or a path with no `host:` before its first slash)."""
    if url.startswith("file://"):
        return True
    if "://" in url:
        return False
    colon, slash = url.find(":"), url.find("/")
    return colon < 0 or 0 <= slash < colon


def split_password(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without the password written into it (some put a token there), and (login,
    password) when there was one: every local user can read a process's command line, so
    the password reaches git through the credential helper instead, as a key's would."""
    parts = urlsplit(url) if "://" in url else None
    if parts is None or not parts.password:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    login = userinfo.partition(":")[0]  # as written (percent-encoded) in the URL
    netloc = f"{login}@{host}" if login else host
    return urlunsplit(parts._replace(netloc=netloc)), (unquote(login),
                                                       unquote(parts.password))


def shown(url: str) -> str:
    """The URL as the runner's own messages show it: a password written into it (some put a
    token there) replaced by ********, as git's own messages hide it."""
    parts = urlsplit(url) if "://" in url else None
    if parts is None or parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:********@{host}"))


class RepositoryCache:
    """The runner's bare repositories, one per URL, and a lock per repository."""

    def __init__(self, root: Path):
        self.root = root
        self._locks: dict[str, asyncio.Lock] = {}
        self._ready = False

    def prepare(self) -> None:
        if self._ready:
            return
        prepare_private_folder(self.root)
        prepare_private_folder(self.root / "home")  # HOME of the runner's git: empty
        # What a runner that died mid-fetch left: a half-made cache, a key's folder.
        for leftover in self.root.glob(".*-*"):
            if leftover.name.startswith(".key-"):
                _remove_socket_folder(leftover / SOCKET_FOLDER_RECORD)
            if leftover.name.startswith((".new-", ".key-")):
                shutil.rmtree(leftover, ignore_errors=True)
        self._ready = True

    def folder(self, url: str) -> Path:
        return self.root / (hashlib.sha256(url.encode()).hexdigest()[:40] + ".git")

    def lock(self, url: str) -> asyncio.Lock:
        return self._locks.setdefault(url, asyncio.Lock())

    def environment(self) -> dict[str, str]:
        """The runner's git environment: what a program needs to reach the network as this
        host does, nothing of the runner's own user (HOME is the cache's empty one)."""
        env = {name: os.environ[name] for name in INHERITED if name in os.environ}
        env.update({k: v for k, v in os.environ.items() if k.startswith("LC_")})
        env.setdefault("PATH", DEFAULT_PATH)
        env.update(HOME=str(self.root / "home"), GIT_TERMINAL_PROMPT="0",
                   GIT_ALLOW_PROTOCOL=REMOTE_PROTOCOLS, GCM_INTERACTIVE="never")
        return env


@dataclass
class TaskCheckout:
    """One task's checkout of `spec` (at `commit` when the task names one) into
    `work_dir/repository`, owned by the task's user."""

    cache: RepositoryCache
    spec: RepositorySpec
    commit: str
    secrets: TaskSecrets
    identity: TaskIdentity
    work_dir: Path
    run: RunProcess
    say: Say
    task_env: dict[str, str]  # the environment of the task user's git commands
    on_process: Callable[[int], None] | None = None  # told each process group started

    @property
    def target(self) -> Path:
        return self.work_dir / "repository"

    async def checkout(self) -> Path:
        """The checkout's folder; CheckoutFailed saying why not."""
        if self.commit and not COMMIT.match(self.commit):
            raise CheckoutFailed(f"commit {self.commit!r} is not a commit hash")
        if is_local(self.spec.url):
            await self._clone_local()
        else:
            await self._from_cache()
        return self.target

    # A local repository: the task's user clones it, with its own rights.

    async def _clone_local(self) -> None:
        url, branch = self.spec.url, self.spec.branch
        await self.say(f"Cloning {shown(url)}" + (f" (branch {branch})" if branch else "")
                       + "\n")
        env = {**self.task_env, "GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": "file"}
        args = ["git", "clone"]
        args += ["--no-checkout"] if self.commit else ["--depth", "1"]
        if branch:
            args += ["--branch", branch]
        await self._step([*args, "--", url, str(self.target)], env, as_runner=False,
                         what="git clone")
        if self.commit:
            await self._step(["git", "-C", str(self.target), "-c", "advice.detachedHead=false",
                              "checkout", "-q", "--detach", self.commit, "--"], env,
                             as_runner=False, what="git checkout")

    # A remote repository: through the runner's cache.

    async def _from_cache(self) -> None:
        self.cache.prepare()
        url = self.spec.url
        cache = self.cache.folder(url)
        async with self.cache.lock(url):
            async with Credentials(self.secrets, self.cache, self.on_process) as credentials:
                if cache.is_dir():
                    await self.say(f"Fetching {shown(url)} into this runner's cache of it\n")
                    await self._fetch(cache, credentials)
                else:
                    await self.say(f"Cloning {shown(url)} into this runner's cache (the first "
                                   "task of this repository here)\n")
                    await self._create(cache, credentials)
            commit, branch = await self._resolve(cache)
            await self.say(f"Checking out {commit}" + (f" (branch {branch})" if branch
                                                      else "") + "\n")
            # Copied, not linked: the task's objects are its own (under the lock, so that
            # no prune or gc removes the commit meanwhile).
            await self._local(["git", "init", "-q", str(self.target)], self.work_dir, "git init")
            await self._local([*RUNNER_GIT, "-C", str(self.target), "fetch", "-q",
                               "--depth", "1", "--", f"file://{cache}", commit],
                              self.work_dir, "git fetch from the cache", protocols="file")
        checkout = ["-B", branch] if branch else ["--detach"]
        await self._local([*RUNNER_GIT, "-C", str(self.target), "-c",
                           "advice.detachedHead=false", "checkout", "-q", *checkout, commit,
                           "--"], self.work_dir, "git checkout")
        if self.identity.separate:
            await asyncio.to_thread(hand_over, self.target, self.identity)

    async def _create(self, cache: Path, credentials: "Credentials") -> None:
        """A new bare repository, filled by a first fetch, then put in place: a failed first
        fetch leaves nothing behind."""
        building = self.cache.root / f".new-{token_hex(8)}"
        try:
            await self._local(["git", "init", "-q", "--bare", str(building)], self.cache.root,
                              "git init")
            await self._fetch(building, credentials)
            building.rename(cache)
        finally:
            shutil.rmtree(building, ignore_errors=True)

    async def _fetch(self, cache: Path, credentials: "Credentials") -> None:
        url, in_url = split_password(self.spec.url)
        options, env = credentials.options, {**self.cache.environment(), **credentials.env}
        if in_url is not None:  # git would use the URL's over the key's: so do we
            options = ["-c", CREDENTIAL_HELPER]
            env.update(SEMAPHORE_GIT_LOGIN=in_url[0], SEMAPHORE_GIT_PASSWORD=in_url[1])
        args = [*RUNNER_GIT, *options, "-C", str(cache), "fetch", "--prune", "--force",
                "--no-write-fetch-head", "--", url, *FETCH_REFSPECS]
        if not self.spec.branch and not self.commit:
            args.append(f"+HEAD:{DEFAULT_HEAD}")
        await self._step(args, env, as_runner=True, what="git fetch")

    async def _resolve(self, cache: Path) -> tuple[str, str]:
        """The commit the task runs (and the branch to name in its checkout, if any)."""
        url = shown(self.spec.url)
        if self.commit:
            found, error = await self._rev_parse(cache, f"{self.commit}^{{commit}}")
            if found is None or not await self._in_branch_or_tag(cache, found):
                if error:
                    await self.say(error)
                raise CheckoutFailed(f"commit {self.commit} is not in {url} (none of its "
                                     "branches or tags holds it)")
            return found, ""
        branch = self.spec.branch
        if not branch:
            found, error = await self._rev_parse(cache, f"{DEFAULT_HEAD}^{{commit}}")
            if found is None:
                await self.say(error)
                raise CheckoutFailed(f"{url} has no default branch; name one")
            return found, ""
        found, _ = await self._rev_parse(cache, f"refs/heads/{branch}^{{commit}}")
        if found is not None:
            return found, branch
        found, error = await self._rev_parse(cache, f"refs/tags/{branch}^{{commit}}")
        if found is None:
            await self.say(error)
            raise CheckoutFailed(f"branch {branch!r} not found in {url}")
        return found, ""

    async def _in_branch_or_tag(self, cache: Path, commit: str) -> bool:
        """Whether a branch or tag this task's fetch just left in the cache holds the commit.
        The cache keeps objects another login fetched (the same URL may show each login
        other refs or another repository; a ref it no longer sees is pruned, its objects
        stay until gc): a task may run only what its own fetch could see."""
        code, out, _ = await capture(
            [*RUNNER_GIT, "-C", str(cache), "for-each-ref", "--count=1", "--format=%(refname)",
             "--contains", commit, "refs/heads/", "refs/tags/"], cache, self.cache.environment())
        return code == 0 and bool(out.strip())

    async def _rev_parse(self, cache: Path, rev: str) -> tuple[str | None, str]:
        """The commit `rev` names in the cache, or None and git's message."""
        code, out, err = await capture(
            [*RUNNER_GIT, "-C", str(cache), "rev-parse", "--verify", "--end-of-options", rev],
            cache, self.cache.environment())
        return (out.strip() if code == 0 else None), err

    async def _local(self, args: list[str], cwd: Path, what: str, protocols: str = "") -> None:
        """A quick local git command as the runner; its messages shown only if it fails.
        Without the host's /etc/gitconfig: these steps read the repository's content (a
        checkout), and a filter the host configures (git-lfs's, say) would run as the runner
        on the attacker's `.gitattributes`."""
        env = {**self.cache.environment(), "GIT_CONFIG_NOSYSTEM": "1"}
        if protocols:
            env["GIT_ALLOW_PROTOCOL"] = protocols
        code, out, err = await capture(args, cwd, env)
        if code != 0:
            await self.say(out + err)
            raise CheckoutFailed(f"{what} failed with exit code {code}", exit_code=code)

    async def _step(self, args: list[str], env: dict[str, str], as_runner: bool,
                    what: str) -> None:
        code, ended_by = await self.run(args, self.work_dir, env, as_runner)
        if ended_by == "stop":
            raise CheckoutFailed("", status="stopped")
        if ended_by == "timeout":
            raise CheckoutFailed(f"timed out during {what}: the task's time limit was reached")
        if code != 0:
            raise CheckoutFailed(f"{what} failed with exit code {code}", exit_code=code)


class Credentials:
    """What the fetch needs to log in: git options and environment; for an ssh key, a private
    ssh-agent of the runner's own holding it for the length of the fetch (the key is never
    on disk, and never in a process of the task's user). Everything goes when it ends."""

    def __init__(self, secrets: TaskSecrets, cache: RepositoryCache,
                 on_process: Callable[[int], None] | None = None):
        self.secrets = secrets
        self.cache = cache
        self.on_process = on_process
        self.options: list[str] = []
        self.env: dict[str, str] = {}
        self._folder: Path | None = None
        self._agent: SshAgent | None = None

    async def __aenter__(self) -> "Credentials":
        login = self.secrets.login_password
        if login is not None and (login.login or login.password):
            self.options = ["-c", CREDENTIAL_HELPER]
            self.env.update(SEMAPHORE_GIT_LOGIN=login.login,
                            SEMAPHORE_GIT_PASSWORD=login.password)
        known_hosts = shlex.quote(str(self.cache.root / "known_hosts"))
        # Only the repository's key: never the runner user's own keys, agent or ssh config
        # (naming an identity file keeps ssh from its defaults, ~/.ssh/id_*; this one never
        # exists).
        ssh = (f"ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=accept-new "
               f"-o UserKnownHostsFile={known_hosts} "
               f"-o IdentityFile={shlex.quote(str(self.cache.root / 'no-key'))}")
        key = self.secrets.ssh_key
        if key is not None and key.private_key:
            try:
                socket = await self._start_agent(key)
            except BaseException:
                await self.__aexit__()
                raise
            ssh += f" -o IdentityAgent={shlex.quote(str(socket))}"
            if key.login:
                ssh += f" -l {shlex.quote(key.login)}"
        else:
            ssh += " -o IdentityAgent=none"
        self.env["GIT_SSH_COMMAND"] = ssh
        self.env["GIT_SSH_VARIANT"] = "ssh"
        return self

    async def _start_agent(self, key: SshKeySecret) -> Path:
        self._folder = self.cache.root / f".key-{token_hex(8)}"
        self._folder.mkdir(mode=0o700)
        self._agent = SshAgent(self._folder, TaskIdentity.of_runner(), self.cache.root,
                               self.on_process)
        try:
            await self._agent.start()
            socket_folder = self._agent.socket.parent
            if not socket_folder.is_relative_to(self._folder):  # a short one in /tmp
                (self._folder / SOCKET_FOLDER_RECORD).write_text(str(socket_folder))
            await self._agent.add(key, "repository's ssh key")
        except SshKeyError as exc:
            raise CheckoutFailed(str(exc)) from None
        return self._agent.socket

    async def __aexit__(self, *exc: object) -> None:
        if self._agent is not None:
            await self._agent.close()
            self._agent = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def _remove_socket_folder(record: Path) -> None:
    """The /tmp folder of the agent of a runner that died mid-fetch (a deep state folder's
    socket path is too long for a socket), as its key folder recorded it: removed only if
    it still is a real folder of ours."""
    try:
        folder = Path(record.read_text().strip())
        info = folder.lstat()
    except (OSError, ValueError):
        return
    if (folder.name.startswith("semaphore-agent-") and stat.S_ISDIR(info.st_mode)
            and info.st_uid == os.geteuid()):
        shutil.rmtree(folder, ignore_errors=True)


def hand_over(folder: Path, identity: TaskIdentity) -> None:
    """Give the checkout to the task's user. Symbolic links are changed themselves, never
    followed: a link in the repository must not hand its target to the task."""
    os.chown(folder, identity.uid, identity.gid, follow_symlinks=False)
    for top, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            os.chown(os.path.join(top, name), identity.uid, identity.gid,
                     follow_symlinks=False)


async def capture(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """Run a quick local command as the runner: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return (proc.returncode if proc.returncode is not None else -1,
            out.decode(errors="replace"), err.decode(errors="replace"))
