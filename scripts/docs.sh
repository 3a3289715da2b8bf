#!/usr/bin/env bash
# Build the documentation site into docs/_build/html (a warning fails the
# build) and run every example in it (the doctest builder). Installs what is
# missing: the docs dependencies into .venv, graphviz's `dot` through apt.
#
#   scripts/docs.sh            html, then doctest
#   scripts/docs.sh html       the site only
#   scripts/docs.sh doctest    the examples only (lab examples need root,
#                              Tarantool ones a tarantool binary; they skip
#                              without them, except under CI=true)
set -euo pipefail
cd "$(dirname "$0")/.."

# What the site needs, until pyproject.toml has a `docs` extra (then that is used).
# pytest: the integration-tests guide runs its example suite.
DOCS_DEPS=("sphinx>=8,<10" "furo>=2024.8" "myst-parser>=4" "pytest>=7")

if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
if ! .venv/bin/python -c 'import sphinx, furo, myst_parser, pytest, remoteexec' 2>/dev/null; then
    if grep -qE '^docs *=' pyproject.toml; then
        .venv/bin/python -m pip install -q -e '.[docs]'
    else
        .venv/bin/python -m pip install -q -e . "${DOCS_DEPS[@]}"
    fi
fi
if ! command -v dot >/dev/null; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends graphviz >/dev/null
fi

what="${1:-all}"
case "$what" in
    html|doctest|all) ;;
    *) echo "usage: scripts/docs.sh [html|doctest]" >&2; exit 2 ;;
esac
if [ "$what" != doctest ]; then
    .venv/bin/sphinx-build -W --keep-going -b html docs docs/_build/html
fi
if [ "$what" != html ]; then
    .venv/bin/sphinx-build -W --keep-going -b doctest docs docs/_build/doctest
fi
