"""The runner ships alone: importing it must not load the hub or the hub's libraries."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGENT_MODULES = sorted(f"agent.{p.stem}" for p in (ROOT / "agent").glob("*.py")
                       if p.stem != "__init__")
PROTOCOL_MODULES = sorted(f"protocol.{p.stem}" for p in (ROOT / "protocol").glob("*.py")
                          if p.stem != "__init__")


def loaded_after_import(modules: list[str]) -> set[str]:
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print('\\n'.join(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    return set(result.stdout.split())


def test_agent_does_not_load_hub_aiohttp_or_aiosqlite():
    assert "agent.cli" in AGENT_MODULES and "agent.connection" in AGENT_MODULES
    loaded = loaded_after_import(AGENT_MODULES)
    forbidden = {m for m in loaded if m.split(".")[0] in {"hub", "aiohttp", "aiosqlite"}}
    assert forbidden == set()


def test_protocol_loads_only_stdlib_and_msgspec():
    loaded = loaded_after_import(PROTOCOL_MODULES)
    third_party = {m.split(".")[0] for m in loaded} - set(sys.stdlib_module_names)
    # typing_extensions comes with msgspec itself.
    allowed = {"protocol", "msgspec", "typing_extensions", "_distutils_hack", "__main__"}
    assert third_party <= allowed, third_party
