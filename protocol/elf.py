"""What an executable is built for, from its ELF header: enough to refuse a runner build for
another machine before it replaces a working one (hub: `runner-binary add`; runner: update)."""

import platform

# Architecture names in URLs and folders (Go's, as Semaphore's release files use) -> ELF
# e_machine, and the names platform.machine() gives for each.
ARCHES: dict[str, int] = {"amd64": 62, "arm64": 183, "386": 3, "arm": 40}
MACHINES: dict[str, str] = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64",
                            "arm64": "arm64", "i386": "386", "i686": "386", "armv7l": "arm",
                            "armv6l": "arm"}


class NotAnExecutable(ValueError):
    """The file is not a Linux ELF executable for the architecture asked for."""


def this_arch() -> str:
    """This machine's architecture name, e.g. amd64."""
    machine = platform.machine().lower()
    return MACHINES.get(machine, machine)


def elf_arch(head: bytes) -> str:
    """The architecture name an ELF file's first 20 bytes say, or NotAnExecutable."""
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise NotAnExecutable("not an ELF executable (wrong magic bytes)")
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    for name, number in ARCHES.items():
        if number == machine:
            return name
    return f"e_machine {machine}"


def check_elf(path: str, arch: str) -> None:
    """Raise NotAnExecutable unless `path` is an ELF executable for `arch`."""
    try:
        with open(path, "rb") as file:
            head = file.read(20)
    except OSError as exc:
        raise NotAnExecutable(f"cannot read {path}: {exc.strerror}") from None
    found = elf_arch(head)
    if found != arch:
        raise NotAnExecutable(f"built for {found}, not {arch}")
