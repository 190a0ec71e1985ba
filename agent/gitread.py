"""The commit a repository folder is at (hash and subject, as `git log -1 --format=%H%n%s`
prints them), read from its git files in Python instead of starting git for every task.

Why: a `git log` process per task was 18 % of a busy runner's time (bench/PROFILE.md). And
reading files runs nothing of the repository's: no config, no fsmonitor hook, no filter.

Handled: discovery upwards from the folder (a `.git` folder, a `.git` file naming the git
folder as in worktrees and submodules, a bare repository) within one file system, as git
searches; HEAD on a branch, detached, or through a chain of symbolic refs; loose and packed
refs; a worktree's own HEAD beside the refs it shares (`commondir`); the commit as a loose
object or a whole object in a pack (index version 2); the commit's `encoding` header.
Anything else (reftable refs, replace refs, SHA-256 repositories, a commit stored as a delta,
objects in an alternate store, a file of an unexpected shape) raises `AskGit`: the caller runs
git, as before. A repository without a commit (unborn branch) or no repository at all gives
None, as `git log` fails there.
"""

from __future__ import annotations

import codecs
import mmap
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

SHA1_HEX = re.compile(r"[0-9a-f]{40}\Z")
# Per-worktree refs live in the worktree's own git folder, every other ref in the common one.
PER_WORKTREE = ("refs/bisect/", "refs/worktree/", "refs/rewritten/")
MAX_SYMREF_DEPTH = 5  # as git's own limit on symbolic ref chains
PACK_COMMIT, PACK_OFS_DELTA, PACK_REF_DELTA = 1, 6, 7
GIT_SPACE = " \t\n\r"  # git's isspace(): what it trims from subject lines


class AskGit(Exception):
    """The repository holds something this reader does not read: let git answer."""


@dataclass(frozen=True)
class HeadCommit:
    hash: str
    subject: str


def head_commit(folder: Path) -> HeadCommit | None:
    """The commit HEAD names in the repository `folder` is in; None when there is no
    repository or no commit yet. AskGit when only git can tell."""
    found = discover(folder)
    if found is None:
        return None
    gitdir, common = found
    if (common / "reftable").exists():
        raise AskGit("reftable refs")
    commit = resolve_ref(gitdir, common, "HEAD")
    if commit is None:
        return None
    if _has_replace_refs(common):
        raise AskGit("replace refs")
    kind, data = read_object(common / "objects", commit)
    if kind != b"commit":
        raise AskGit(f"HEAD names a {kind.decode(errors='replace')}")
    return HeadCommit(commit, commit_subject(data))


def discover(folder: Path) -> tuple[Path, Path] | None:
    """(git folder, common git folder) of the repository `folder` is in, found as git finds
    it: `.git` here (a folder, or a file naming one), or this folder a bare repository;
    else the parent's, up to the root or another file system (git stops there too)."""
    current = Path(os.path.abspath(folder))
    device = current.stat().st_dev
    while True:
        dot_git = current / ".git"
        if dot_git.is_file():
            gitdir = _gitfile_target(dot_git)
            return gitdir, _common_dir(gitdir)
        if dot_git.is_dir() and _is_git_dir(dot_git):
            return dot_git, _common_dir(dot_git)
        if _is_git_dir(current):
            return current, _common_dir(current)
        if dot_git.exists() or dot_git.is_symlink():
            raise AskGit(f"{dot_git} is neither a git folder nor a git file")
        parent = current.parent
        if parent == current or parent.stat().st_dev != device:
            return None
        current = parent


def _gitfile_target(path: Path) -> Path:
    text = path.read_text(errors="strict").strip()
    if not text.startswith("gitdir: "):
        raise AskGit(f"{path}: not a gitdir file")
    target = Path(text[len("gitdir: "):])
    if not target.is_absolute():
        target = path.parent / target
    if not _is_git_dir(target):
        raise AskGit(f"{path} names {target}, not a git folder")
    return target


def _common_dir(gitdir: Path) -> Path:
    try:
        text = (gitdir / "commondir").read_text().strip()
    except FileNotFoundError:
        return gitdir
    common = Path(text)
    return common if common.is_absolute() else gitdir / common


def _is_git_dir(path: Path) -> bool:
    """As git's is_git_directory: a HEAD, and objects and refs (in the common folder)."""
    if not (path / "HEAD").is_file():
        return False
    common = _common_dir(path)
    return (common / "objects").is_dir() and (common / "refs").is_dir()


def resolve_ref(gitdir: Path, common: Path, name: str) -> str | None:
    """The commit hash the ref `name` leads to; None if it names a ref that does not exist
    (an unborn branch)."""
    for _ in range(MAX_SYMREF_DEPTH):
        own = not name.startswith("refs/") or name.startswith(PER_WORKTREE)
        try:
            value = ((gitdir if own else common) / name).read_text(errors="strict").strip()
        except (FileNotFoundError, IsADirectoryError):
            packed = _packed_ref(common, name) if name.startswith("refs/") else None
            if packed is None:
                return None
            value = packed
        if value.startswith("ref:"):
            name = value[len("ref:"):].strip()
            if not name.startswith("refs/") or ".." in name:
                raise AskGit(f"symbolic ref to {name!r}")
            continue
        if SHA1_HEX.match(value):
            return value
        raise AskGit(f"ref {name} holds {value[:80]!r}")
    raise AskGit("symbolic refs nested too deep")


def _packed_ref(common: Path, name: str) -> str | None:
    try:
        lines = (common / "packed-refs").read_text(errors="strict").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        if not line or line[0] in "#^":
            continue
        value, _, ref = line.partition(" ")
        if ref == name:
            return value
    return None


def _has_replace_refs(common: Path) -> bool:
    replace = common / "refs" / "replace"
    if replace.is_dir() and any(replace.iterdir()):
        return True
    try:
        return " refs/replace/" in (common / "packed-refs").read_text(errors="replace")
    except FileNotFoundError:
        return False


def read_object(objects: Path, name: str) -> tuple[bytes, bytes]:
    """(type, content) of the object `name`: loose, or whole in a pack."""
    try:
        raw = zlib.decompress((objects / name[:2] / name[2:]).read_bytes())
    except FileNotFoundError:
        return _packed_object(objects / "pack", bytes.fromhex(name))
    except zlib.error as exc:
        raise AskGit(f"loose object {name}: {exc}") from None
    header, nul, content = raw.partition(b"\0")
    kind, _, size = header.partition(b" ")
    if not nul or not size.isdigit() or int(size) != len(content):
        raise AskGit(f"loose object {name}: bad header")
    return kind, content


def _packed_object(pack_dir: Path, name: bytes) -> tuple[bytes, bytes]:
    try:
        indexes = sorted(pack_dir.glob("pack-*.idx"))
    except OSError:
        indexes = []
    for index in indexes:
        offset = _index_offset(index, name)
        if offset is not None:
            return _pack_entry(index.with_suffix(".pack"), offset)
    raise AskGit(f"object {name.hex()} not in this repository's packs (alternates?)")


def _index_offset(index: Path, name: bytes) -> int | None:
    """The object's offset in the pack, from its version 2 index; None if not in it."""
    with open(index, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as idx:
        if idx[:8] != b"\xfftOc\x00\x00\x00\x02":
            raise AskGit(f"{index.name}: not a version 2 pack index")
        fanout = 8
        first = name[0]
        low = int.from_bytes(idx[fanout + 4 * (first - 1):fanout + 4 * first]) if first else 0
        high = int.from_bytes(idx[fanout + 4 * first:fanout + 4 * first + 4])
        count = int.from_bytes(idx[fanout + 4 * 255:fanout + 4 * 256])
        names = fanout + 4 * 256
        if len(idx) < names + count * 28 + 40:
            raise AskGit(f"{index.name}: truncated")
        while low < high:
            middle = (low + high) // 2
            found = idx[names + 20 * middle:names + 20 * middle + 20]
            if found == name:
                break
            if found < name:
                low = middle + 1
            else:
                high = middle
        else:
            return None
        offsets = names + count * 24  # after the names and their CRC32s
        offset = int.from_bytes(idx[offsets + 4 * middle:offsets + 4 * middle + 4])
        if offset & 0x80000000:  # a large offset: an index into the 8-byte table
            large = offsets + count * 4 + 8 * (offset & 0x7FFFFFFF)
            offset = int.from_bytes(idx[large:large + 8])
        return offset


def _pack_entry(pack: Path, offset: int) -> tuple[bytes, bytes]:
    with open(pack, "rb") as file:
        file.seek(offset)
        head = file.read(16)
        if not head:
            raise AskGit(f"{pack.name}: offset {offset} past its end")
        kind, size, used = head[0] >> 4 & 7, head[0] & 15, 1
        shift = 4
        while head[used - 1] & 0x80:
            if used >= len(head):
                raise AskGit(f"{pack.name}: bad entry header")
            size |= (head[used] & 0x7F) << shift
            shift += 7
            used += 1
        if kind in (PACK_OFS_DELTA, PACK_REF_DELTA):
            raise AskGit("the commit is stored as a delta")
        if kind != PACK_COMMIT:
            return {2: b"tree", 3: b"blob", 4: b"tag"}.get(kind, b"unknown"), b""
        inflate = zlib.decompressobj()
        content = inflate.decompress(head[used:], size)
        while len(content) < size and not inflate.eof:
            chunk = file.read(4096)
            if not chunk:
                break
            content += inflate.decompress(inflate.unconsumed_tail + chunk, size - len(content))
        if len(content) != size:
            raise AskGit(f"{pack.name}: short object at {offset}")
        return b"commit", content


def commit_subject(content: bytes) -> str:
    """`%s` of the commit, as the runner reported git's: the message's first paragraph, its
    lines right-trimmed and joined by a space, in UTF-8 (from the commit's `encoding`, as
    git re-encodes for its output), bad bytes replaced; then stripped."""
    headers, _, message = content.partition(b"\n\n")
    encoding = "utf-8"
    for line in headers.split(b"\n"):
        if line.startswith(b"encoding "):
            encoding = line[len(b"encoding "):].decode("ascii", errors="replace").strip()
    lines = message.split(b"\n")
    while lines and not lines[0].rstrip(GIT_SPACE.encode()):
        lines.pop(0)
    subject = []
    for line in lines:
        line = line.rstrip(GIT_SPACE.encode())
        if not line:
            break
        subject.append(line)
    raw = b" ".join(subject)
    try:
        text = raw.decode(codecs.lookup(encoding).name)
    except (LookupError, UnicodeDecodeError):
        # An encoding unknown, or bytes not in it: git prints the bytes as they are.
        text = raw.decode("utf-8", errors="replace")
    return text.strip()
