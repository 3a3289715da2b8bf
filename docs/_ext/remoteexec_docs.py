"""Sphinx extension for the remoteexec site: keeps the docs from drifting.

- ``cli-reference``: a directive that renders the ``remoteexec`` command line
  from its argparse parser, every subcommand with its usage and arguments.
- ``stack-file-reference``: a directive that renders the stack file's keys,
  one table per section, from the definitions in
  ``remoteexec.stack.schema`` (the ones the checker and the JSON Schema
  use); and a warning when the shipped ``stack.schema.json`` is not what
  those definitions render.
- API coverage: every name in the ``__all__`` of the stable public modules
  must be documented somewhere (by object identity, so a class documented as
  ``remoteexec.TCPExecutor`` covers ``remoteexec.executors.TCPExecutor``);
  a missing one is a warning, so ``-W`` fails the build.
- Untested examples: a ``python``/``pycon`` code block in a page that is not
  a doctest node (``doctest``, ``testcode``) is a warning: every Python
  example runs under ``sphinx-build -b doctest``. Files included from
  ``docs/examples/`` are exempt: a page that includes them runs them (e.g.
  a hidden ``testcode`` that runs pytest over them).
"""

from __future__ import annotations

import argparse
import importlib
import os
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

LOG = logging.getLogger(__name__)

#: Modules whose public names (``__all__``) must all be documented.
STABLE_MODULES = (
    "remoteexec",
    "remoteexec.executors",
    "remoteexec.waits",
    "remoteexec.errors",
    "remoteexec.services",
    "remoteexec.tarantool",
    "remoteexec.lab",
    "remoteexec.stack",
    "remoteexec.pytest",
)
#: Languages of code blocks that must be doctest nodes.
PYTHON_LANGUAGES = ("python", "python3", "py", "pycon")


# -- the command line ---------------------------------------------------------


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser captured")
        self.parser = parser


def cli_parser() -> argparse.ArgumentParser:
    """The ``remoteexec`` parser: ``remoteexec.cli.main.build_parser()`` when it
    exists, else the parser ``main()`` builds inline, caught as it starts
    parsing (before it acts on anything)."""
    module = importlib.import_module("remoteexec.cli.main")
    build = getattr(module, "build_parser", None)
    if build is not None:
        return build()  # type: ignore[no-any-return]
    original = argparse.ArgumentParser.parse_known_args

    def capture(self: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> Any:
        raise _Captured(self)

    argparse.ArgumentParser.parse_known_args = capture  # type: ignore[method-assign]
    try:
        # "--help": should the capture ever miss, argparse prints help and exits; nothing runs.
        module.main(["--help"])
    except _Captured as caught:
        return caught.parser
    except SystemExit:
        pass
    finally:
        argparse.ArgumentParser.parse_known_args = original  # type: ignore[method-assign]
    raise RuntimeError(
        "remoteexec.cli.main.main() built no parser the docs could catch:"
        " give remoteexec.cli.main a build_parser() -> argparse.ArgumentParser"
    )


def subcommands(
    parser: argparse.ArgumentParser,
) -> Iterator[Tuple[str, Optional[str], argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand of ``parser``, in order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name), sub


def _metavar(action: argparse.Action) -> str:
    metavar = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
    return " ".join(metavar) if isinstance(metavar, tuple) else str(metavar)


def _argument_rows(parser: argparse.ArgumentParser) -> List[Tuple[str, str]]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings)
            if action.nargs != 0:
                name += " " + _metavar(action)
        else:
            name = _metavar(action)
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text:
            text += " (default: %s)" % (action.default,)
        rows.append((str(name), text.strip()))
    return rows


class CliReference(SphinxDirective):
    """``.. cli-reference::`` — the whole command line, from the parser."""

    has_content = False

    def run(self) -> List[nodes.Node]:
        parser = cli_parser()
        out: List[nodes.Node] = []
        self._command(out, parser, parser.prog, None)
        return out

    def _command(
        self,
        out: List[nodes.Node],
        parser: argparse.ArgumentParser,
        path: str,
        summary: Optional[str],
    ) -> None:
        anchor = nodes.make_id("cli " + path)
        out.append(nodes.target("", "", ids=[anchor]))
        out.append(nodes.rubric("", "", nodes.literal(path, path)))
        for text in (summary, parser.description):
            if text:
                text = text.replace("``", "")  # docstring markup in a parser description
                out.append(nodes.paragraph(text, text))
        usage = parser.format_usage().strip()
        block = nodes.literal_block(usage, usage)
        block["language"] = "text"
        out.append(block)
        rows = _argument_rows(parser)
        if rows:
            items = nodes.definition_list()
            for name, text in rows:
                item = nodes.definition_list_item()
                item += nodes.term("", "", nodes.literal(name, name))
                item += nodes.definition("", *([nodes.paragraph(text, text)] if text else []))
                items += item
            out.append(items)
        for name, help_text, sub in subcommands(parser):
            self._command(out, sub, path + " " + name, help_text)


# -- the stack file -----------------------------------------------------------


def type_text(kind: Any) -> str:
    """A stack file value's type, in words, from its ``remoteexec.stack.schema`` type."""
    schema = importlib.import_module("remoteexec.stack.schema")
    if isinstance(kind, schema.Str):
        if kind.pattern == schema.NAME_PATTERN:
            return "NAME"
        return "string" + (": %s" % kind.pattern_doc if kind.pattern_doc else "")
    if isinstance(kind, schema.Int):
        low = "" if kind.minimum is None else str(kind.minimum)
        high = "" if kind.maximum is None else str(kind.maximum)
        return "integer" + (" %s..%s" % (low, high) if low or high else "")
    if isinstance(kind, schema.Seconds):
        return "seconds (a number > 0)"
    if isinstance(kind, schema.Bool):
        return "boolean"
    if isinstance(kind, schema.Enum):
        return "one of " + ", ".join(repr(v) for v in kind.values)
    if isinstance(kind, schema.AnyValue):
        return "any value"
    if isinstance(kind, schema.ListOf):
        empty = "" if kind.min_items else ", may be empty"
        return "array of %s%s" % (type_text(kind.item), empty)
    if isinstance(kind, schema.MapOf):
        key = "NAME" if kind.key_pattern == schema.NAME_PATTERN else kind.key_doc
        key = key if kind.key_pattern else "any key"
        return "table: %s = %s" % (key, type_text(kind.value))
    if isinstance(kind, schema.Table):
        return "table (below)"
    if isinstance(kind, schema.OneOf):
        return " or ".join(type_text(option) for option in kind.options)
    raise TypeError("no words for stack file type %r: add it to type_text()" % (kind,))


def stack_file_sections(
    table: Any, header: str
) -> Iterator[Tuple[str, List[Tuple[str, str, bool, str]]]]:
    """(section header, [(key, type, required, meaning)]) of ``table`` and the tables in it."""
    schema = importlib.import_module("remoteexec.stack.schema")
    rows = [(key, type_text(f.type), f.required, f.doc) for key, f in table.fields.items()]
    yield header, rows
    inner = "" if header == "top level" else header.strip("[]") + "."
    for key, f in table.fields.items():
        if isinstance(f.type, schema.Table):
            yield from stack_file_sections(f.type, "[%s%s]" % (inner, key))
        elif isinstance(f.type, schema.MapOf) and isinstance(f.type.value, schema.Table):
            yield from stack_file_sections(f.type.value, "[%s%s.NAME]" % (inner, key))


def _row(*cells: nodes.Node) -> nodes.row:
    row = nodes.row()
    for cell in cells:
        row += nodes.entry("", cell)
    return row


def _text(text: str) -> nodes.paragraph:
    return nodes.paragraph(text, text)


class StackFileReference(SphinxDirective):
    """``.. stack-file-reference::`` — every key of a stack file, from its schema."""

    has_content = False

    def run(self) -> List[nodes.Node]:
        schema = importlib.import_module("remoteexec.stack.schema")
        self.env.note_dependency(str(schema.__file__))  # rebuilt when the definitions change
        out: List[nodes.Node] = []
        for header, rows in stack_file_sections(schema.TOP, "top level"):
            out.append(nodes.rubric("", "", nodes.literal(header, header)))
            group = nodes.tgroup(cols=3)
            for width in (22, 30, 48):
                group += nodes.colspec(colwidth=width)
            head = nodes.thead()
            head += _row(_text("key"), _text("type"), _text("meaning"))
            group += head
            body = nodes.tbody()
            for key, kind, required, doc in rows:
                name = nodes.paragraph("", "", nodes.literal(key, key))
                if required:
                    name += nodes.Text(" (required)")
                body += _row(name, _text(kind), _text(doc))
            group += body
            out.append(nodes.table("", group))
        return out


def check_schema_file(_app: Sphinx, _env: Any) -> None:
    """Warn when the shipped ``stack.schema.json`` is not what the definitions render."""
    schema = importlib.import_module("remoteexec.stack.schema")
    path = os.path.join(os.path.dirname(str(schema.__file__)), "stack.schema.json")
    with open(path, encoding="utf-8") as f:
        shipped = f.read()
    if shipped != schema.render():
        LOG.warning(
            "%s is not what remoteexec.stack.schema renders: regenerate it with"
            " python -m remoteexec.stack.schema > %s",
            path,
            path,
        )


# -- API coverage -------------------------------------------------------------


def _documented(env: Any) -> Tuple[Set[str], Set[int]]:
    """(full names, ids of the objects) documented in the Python domain."""
    domain = env.get_domain("py")
    names = set(domain.objects) | set(domain.modules)
    ids: Set[int] = set()
    for name in names:
        module_name, _, attr = name.rpartition(".")
        candidates = [(name, None), (module_name, attr)] if module_name else [(name, None)]
        for mod, attribute in candidates:
            try:
                obj = importlib.import_module(mod)
                ids.add(id(getattr(obj, attribute) if attribute else obj))
                break
            except (ImportError, AttributeError):
                continue
    return names, ids


def public_names(module: Any) -> List[str]:
    """``__all__``, or else the names the module defines without a leading underscore."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    )


def check_api_coverage(_app: Sphinx, env: Any) -> None:
    """Warn for every public name of :data:`STABLE_MODULES` that no page documents."""
    names, ids = _documented(env)
    for module_name in STABLE_MODULES:
        module = importlib.import_module(module_name)
        for public in public_names(module):
            full = "%s.%s" % (module_name, public)
            value = getattr(module, public)
            if full in names or id(value) in ids:
                continue
            LOG.warning("public name %s is not documented in the API reference", full)


# -- untested examples --------------------------------------------------------


def check_examples_tested(app: Sphinx, doctree: nodes.document) -> None:
    """Warn for each Python code block that the doctest builder would not run."""
    examples = os.path.join(app.srcdir, "examples") + os.sep
    for block in doctree.findall(nodes.literal_block):
        if str(block.get("source", "")).startswith(examples):
            continue
        if block.get("language") in PYTHON_LANGUAGES and "testnodetype" not in block:
            LOG.warning(
                "a %s example that no doctest runs: use ```{testcode} or ```{doctest}",
                block.get("language"),
                location=block,
            )


def setup(app: Sphinx) -> Dict[str, Any]:
    app.add_directive("cli-reference", CliReference)
    app.add_directive("stack-file-reference", StackFileReference)
    app.connect("env-check-consistency", check_schema_file)
    app.connect("env-check-consistency", check_api_coverage)
    app.connect("doctree-read", check_examples_tested)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
