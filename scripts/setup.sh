#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for remoteexec: system packages for
# the lab (sshd hosts in network namespaces) and Tarantool, then a virtualenv
# in .venv with the package and its test/bench/docs extras (graphviz draws the docs diagrams). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=0
for bin in /usr/sbin/sshd /usr/bin/ssh /usr/sbin/ip /usr/sbin/nft /usr/bin/tarantool /usr/bin/python3 /usr/bin/dot; do
    [ -x "$bin" ] || need_apt=1
done
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt=1
if [ "$need_apt" = 1 ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends \
        openssh-server openssh-client iproute2 nftables tarantool \
        python3 python3-venv procps graphviz >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test,bench,docs]'
echo "setup done: $(.venv/bin/python --version), $(tarantool --version | head -1)"
