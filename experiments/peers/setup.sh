#!/usr/bin/env bash
# Virtual environments for the peer libraries that eqgeo's benchmarks compare against.
#
#     experiments/peers/setup.sh [mace|nequip|docking|all]      (default: all)
#
# Each peer gets its own environment, because the peers pin e3nn versions that differ from each
# other (mace-torch 0.3.16 pins e3nn==0.4.4; nequip 0.19.1 needs e3nn>=0.6,<0.7), and the docking
# baseline's tools are never eqgeo dependencies:
#
#     .venvs/mace     torch==2.13.0, mace-torch==0.3.16 (pulls e3nn==0.4.4)
#     .venvs/nequip   torch==2.13.0, nequip==0.19.1, e3nn==0.6.0
#     .venvs/docking  vina==1.2.7 (AutoDock Vina's Python bindings), meeko==0.8.0 with scipy and gemmi
#                     (ligand preparation), openbabel-wheel (receptor PDBQT), posebusters==0.6.5
#                     (pose validity checks); no torch (experiments/docking/vina_astex.py)
#
# under the repository root (.venvs/ is git-ignored). For the torch peers, torch is installed first, by
# itself, so that the peer's requirement "torch>=..." is already met and pip does not fetch another build;
# it is pinned again in the second step so the resolver cannot move it. Packages come by name from the
# package index pip is configured with; no index URL is named here.
#
# Idempotent: an environment whose interpreter already imports the peer's package at the pinned
# version is left as it is; a partial one (interrupted earlier) is completed. At the end the
# versions in each environment are printed.
#
# The interpreter used to create the environments is $PYTHON (default: python3), Python >= 3.10.

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENVS="$REPO/.venvs"
PYTHON="${PYTHON:-python3}"
TORCH_PIN="torch==2.13.0"

usage() {
    echo "usage: experiments/peers/setup.sh [mace|nequip|docking|all]" >&2
    exit 2
}

# peer -> python module, pip requirements installed after torch, the version check
module_of() { case "$1" in mace) echo mace ;; nequip) echo nequip ;; docking) echo vina ;; esac; }
reqs_of() {
    case "$1" in
        mace) echo "mace-torch==0.3.16 e3nn==0.4.4" ;;
        nequip) echo "nequip==0.19.1 e3nn==0.6.0" ;;
        docking) echo "vina==1.2.7 meeko==0.8.0 scipy gemmi openbabel-wheel posebusters==0.6.5" ;;
    esac
}
dist_of() { case "$1" in mace) echo mace-torch ;; nequip) echo nequip ;; docking) echo vina ;; esac; }
want_of() { case "$1" in mace) echo 0.3.16 ;; nequip) echo 0.19.1 ;; docking) echo 1.2.7 ;; esac; }
torch_pin_of() { case "$1" in docking) echo "" ;; *) echo "$TORCH_PIN" ;; esac; }  # no torch for docking
shown_of() {  # the packages whose versions are printed
    case "$1" in docking) echo "vina meeko posebusters rdkit openbabel-wheel gemmi" ;; *) echo "torch e3nn $(dist_of "$1")" ;; esac
}

versions() {  # print the installed versions of the packages that matter (named after the interpreter), one line
    "$1" - $2 <<'EOF'
import sys
from importlib import metadata
names = sys.argv[1:]
out = []
for name in names:
    try:
        out.append(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        out.append(f"{name} (missing)")
print(", ".join(out) + f"; Python {sys.version.split()[0]}")
EOF
}

is_ready() {  # the env's python imports the module and has the pinned version
    local py="$1" peer="$2"
    [ -x "$py" ] || return 1
    "$py" - "$(module_of "$peer")" "$(dist_of "$peer")" "$(want_of "$peer")" "$(torch_pin_of "$peer")" >/dev/null 2>&1 <<'EOF'
import importlib, sys
from importlib import metadata
module, dist, want, torch_pin = sys.argv[1:]
importlib.import_module(module)
assert metadata.version(dist) == want
if torch_pin:
    assert metadata.version("torch").split("+")[0] == torch_pin.split("==")[1]
EOF
}

setup_peer() {
    local peer="$1" dir="$VENVS/$1" py="$VENVS/$1/bin/python" start
    start=$(date +%s)
    if is_ready "$py" "$peer"; then
        echo "[$peer] $dir exists and imports $(module_of "$peer"): skipped"
    else
        if [ ! -x "$py" ]; then
            echo "[$peer] creating $dir with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
            mkdir -p "$VENVS"
            "$PYTHON" -m venv "$dir"
        else
            echo "[$peer] $dir exists but is incomplete: installing into it"
        fi
        "$py" -m pip install --quiet --upgrade pip
        local pin
        pin=$(torch_pin_of "$peer")
        if [ -n "$pin" ]; then
            echo "[$peer] pip install $pin"
            "$py" -m pip install --quiet "$pin"
        fi
        echo "[$peer] pip install $(reqs_of "$peer") $pin"
        # shellcheck disable=SC2046,SC2086
        "$py" -m pip install --quiet $(reqs_of "$peer") $pin
        if ! is_ready "$py" "$peer"; then
            echo "[$peer] ERROR: $py does not import $(module_of "$peer") $(want_of "$peer") after installing" >&2
            "$py" -c "import $(module_of "$peer")" || true
            exit 1
        fi
        echo "[$peer] done in $(( $(date +%s) - start )) s"
    fi
    echo "[$peer] $py: $(versions "$py" "$(shown_of "$peer")")"
}

target="${1:-all}"
[ $# -le 1 ] || usage
case "$target" in
    mace | nequip | docking) setup_peer "$target" ;;
    all) setup_peer mace; setup_peer nequip; setup_peer docking ;;
    -h | --help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage ;;
esac
