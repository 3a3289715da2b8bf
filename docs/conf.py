"""Sphinx configuration of the remoteexec documentation site.

Built by ``scripts/docs.sh`` (html with ``-W --keep-going``, then the doctest
builder, which runs every example in the pages).
"""

from __future__ import annotations

import doctest
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, os.path.dirname(HERE))

import remoteexec  # noqa: E402

project = "remoteexec"
author = "the remoteexec authors"
copyright = "2026, the remoteexec authors"
release = remoteexec.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.graphviz",
    "sphinx.ext.viewcode",
    "remoteexec_docs",
]

# "--" in option names and commands must stay two hyphens.
smartquotes = False

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# benchmarks.md is written by bench/run_all.py and included by more/benchmarks.md.
exclude_patterns = ["_build", "benchmarks.md", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist", "fieldlist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = "remoteexec %s" % release
html_static_path: list[str] = []

graphviz_output_format = "svg"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": True}
autoclass_content = "both"

# -- examples: every Python block runs under the doctest builder -------------
# Local examples (``on=None``, ``master.local()``) need nothing; lab examples
# need root (network namespaces with sshd) and Tarantool ones a tarantool
# binary. They skip without them, except in CI (``CI`` set and not 0/false/no),
# where a skip would hide drift, so they run and fail loudly instead.
doctest_global_setup = r'''
import os, shutil, socket, sys, time
import remoteexec as rx

DOCS_DIR = %r

IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
from remoteexec.lab import Lab
NO_LAB = not Lab.available()[0] and not IN_CI
NO_TARANTOOL = shutil.which("tarantool") is None and not IN_CI
#: The interpreter lab hosts run (Debian's; lab hosts share this machine's /usr).
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

def free_port():
    """A TCP port free on this machine right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
''' % (HERE,)
# Error messages are compared too (troubleshooting quotes the real ones);
# ``...`` stands for the parts that vary (addresses, pids, paths).
doctest_default_flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
