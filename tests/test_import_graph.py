"""The import graph: the runner ships alone (importing it must not load the hub or the hub's
libraries), protocol/ is the small ground floor both sides stand on, and inside the project
imports go one way, from the web shell down to the wire."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

from protocol.version import SOURCE_VERSION

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocol", "agent", "hub")
AGENT_MODULES = sorted(f"agent.{p.stem}" for p in (ROOT / "agent").glob("*.py")
                       if p.stem != "__init__")
PROTOCOL_MODULES = sorted(f"protocol.{p.stem}" for p in (ROOT / "protocol").glob("*.py")
                          if p.stem != "__init__")
# protocol.logs is the one module of protocol/ that needs more than msgspec: the logging set-up
# hub and runner share needs structlog, a dependency of both sides (pyproject.toml and the
# runner build's RUNNER_PACKAGES), and protocol/ is the only floor both stand on. The wire
# (frames, codec, limits, session rules) stays on stdlib and msgspec alone.
SHARED_LOGGING = "protocol.logs"
WIRE_MODULES = [m for m in PROTOCOL_MODULES if m != SHARED_LOGGING]
# typing_extensions comes with msgspec itself.
# Besides protocol and msgspec: what the interpreter itself loads at start-up (Debian's
# python3 has a sitecustomize; setuptools' _distutils_hack comes with virtual environments).
WIRE_ALLOWED = {"protocol", "msgspec", "typing_extensions", "_distutils_hack", "__main__",
                "sitecustomize", "usercustomize"}

# The layers, lowest first: a module may import from its own layer and the ones below it,
# never from one above. The hub's web shell (HTTP and websocket faces, the commands) is listed;
# every other hub module (store, life cycle, dispatcher, reports, links, utilities) is its core,
# which the shell drives and which knows nothing of HTTP handlers, middleware or routes.
LAYERS = ("protocol", "agent", "hub core", "hub web")
HUB_WEB_MODULES = {"hub.app", "hub.routes", "hub.serving", "hub.gateway", "hub.cli",
                   "hub.quickstart"}
HUB_WEB_PACKAGES = ("hub.api", "hub.web")


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
    assert "protocol.codec" in WIRE_MODULES and SHARED_LOGGING not in WIRE_MODULES
    loaded = loaded_after_import(WIRE_MODULES)
    third_party = {m.split(".")[0] for m in loaded} - set(sys.stdlib_module_names)
    assert third_party <= WIRE_ALLOWED, third_party


def test_shared_logging_adds_only_structlog():
    """protocol.logs brings structlog and what structlog itself loads; nothing else."""
    loaded = loaded_after_import([SHARED_LOGGING]) - loaded_after_import(["structlog"])
    third_party = {m.split(".")[0] for m in loaded} - set(sys.stdlib_module_names)
    assert third_party <= WIRE_ALLOWED, third_party


def layer_of(module: str) -> int:
    package = module.split(".")[0]
    if package != "hub":
        return LAYERS.index(package)
    if module in HUB_WEB_MODULES or module.startswith(tuple(p + "." for p in HUB_WEB_PACKAGES)):
        return LAYERS.index("hub web")
    return LAYERS.index("hub core")


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `module` imports, anywhere in it (in functions too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for alias in node.names:
                # `from hub import gateway` imports the module hub.gateway.
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def test_imports_go_one_way():
    """No module imports from a layer above its own: the wire knows neither side, the runner
    not the hub, the hub's core not its web shell (handlers, middleware, routes, gateway)."""
    modules = project_modules()
    assert "hub.api.middleware" in modules and "hub.gateway" in modules
    upward = []
    for module, path in modules.items():
        for imported in sorted(imports_of(module, path, set(modules))):
            if layer_of(imported) > layer_of(module):
                upward.append(f"{module} ({LAYERS[layer_of(module)]}) imports {imported} "
                              f"({LAYERS[layer_of(imported)]})")
    assert upward == []


def test_layers_as_the_test_reads_them():
    assert [layer_of(m) for m in ("protocol.frames", "agent.worker", "hub.store.sqlite",
                                  "hub.core.dispatcher", "hub.ratelimit", "hub.api.common",
                                  "hub.api.middleware", "hub.gateway", "hub.cli")] == [
        0, 1, 2, 2, 2, 3, 3, 3, 3]
    assert imports_of("hub.routes", ROOT / "hub" / "routes.py", set(project_modules())) >= {
        "hub.gateway", "hub.api.runners"}


def test_package_version_written_once():
    """pyproject.toml repeats protocol/version.py's SOURCE_VERSION (the build backend is not
    available to read it from there everywhere); the two must agree."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == SOURCE_VERSION
