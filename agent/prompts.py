"""A program run on a pseudo-terminal whose password prompts the runner answers.

ansible-playbook asks for the ssh password (`--ask-pass`) and the become password
(`--ask-become-pass`) with getpass, which reads the controlling terminal. The runner gives it
one: a pty whose slave end is the program's stdin, stdout, stderr and controlling terminal
(util-linux `setsid --ctty`, which starts a new session, makes the pty its terminal and execs
the program: the pid stays the program's and its process group, so stopping it works as for a
pipe). The runner reads the master end, streams what it reads as stdout, and writes each known
password once, when its prompt shows. The password is typed, never in argv or environment, and
getpass turns the echo off, so it does not come back in the output.
"""

import asyncio
import os
import pty
import shutil
import termios

READ_CHUNK = 65536
# Enough of the recent output to find a prompt split over two reads.
RECENT = 512


class PromptAnswerer:
    """Which password to type, and when: each prompt answered once, the first time it shows
    after the previous answer."""

    def __init__(self, answers: dict[str, str]):
        self._pending = dict(answers)
        self._recent = ""

    def feed(self, text: str) -> list[str]:
        replies = []
        self._recent = (self._recent + text)[-RECENT:]
        while self._pending:
            found = [(self._recent.find(prompt), prompt) for prompt in self._pending
                     if prompt in self._recent]
            if not found:
                break
            at, prompt = min(found)
            replies.append(self._pending.pop(prompt))
            self._recent = self._recent[at + len(prompt):]
        return replies


class PromptTerminal:
    """The pty of one process. `argv()` and `stdio()` start it; `reader` is what it prints;
    `close()` (idempotent) lets go of the master end."""

    def __init__(self, answers: dict[str, str]):
        self._answerer = PromptAnswerer(answers)
        self._master, self._slave = pty.openpty()
        # No \n -> \r\n on output: the task's log stays as a pipe would give it.
        attrs = termios.tcgetattr(self._slave)
        attrs[1] &= ~termios.ONLCR
        termios.tcsetattr(self._slave, termios.TCSANOW, attrs)
        os.set_blocking(self._master, False)
        self.reader = asyncio.StreamReader()
        self._watching = False

    @staticmethod
    def argv(argv: list[str]) -> list[str]:
        setsid = shutil.which("setsid") or "/usr/bin/setsid"
        return [setsid, "--ctty", *argv]

    @property
    def slave(self) -> int:
        """The program's stdin, stdout and stderr. It is started without a new session of
        its own: `setsid` makes it (it would fork, were it a process group leader)."""
        return self._slave

    def started(self) -> None:
        """The process has the slave end: ours is closed (so reading the master ends once the
        program and its children are gone), and reading begins."""
        if self._slave >= 0:
            os.close(self._slave)
            self._slave = -1
        asyncio.get_running_loop().add_reader(self._master, self._readable)
        self._watching = True

    def _readable(self) -> None:
        try:
            data = os.read(self._master, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: no process holds the slave end any more
            data = b""
        if not data:
            self.close()
            return
        self.reader.feed_data(data)
        for reply in self._answerer.feed(data.decode(errors="replace")):
            try:
                os.write(self._master, reply.encode() + b"\n")
            except OSError:
                pass  # the program is gone; nothing to answer

    def close(self) -> None:
        if self._watching:
            asyncio.get_running_loop().remove_reader(self._master)
            self._watching = False
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1
        if not self.reader.at_eof():
            self.reader.feed_eof()
