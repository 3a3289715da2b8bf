"""The stack file: parsing, validation and the JSON Schema. Pure: no host, no process.

Each kind of file error is asserted on the line and the key path it names,
because that is what a user reads to fix the file.
"""

from __future__ import annotations

import json
import os
import textwrap
from typing import Any, Dict, List, Optional

import pytest

from remoteexec.stack import file as stackfile
from remoteexec.stack import schema

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "shop.toml")

GOOD = """\
name = "shop"

[defaults]
python = "/usr/bin/python3"

[hosts]
a = { target = "root@10.0.0.11" }
b = { target = "root@10.0.0.12", via = "a" }
c = { target = "local" }

[tarantool.storage]
members = ["a:3301", "b:3301", "c:3301"]
replication_timeout = 0.1
box_cfg = { memtx_memory = 134217728 }

[tarantool.router]
on = "b"
listen = "0.0.0.0:0"
env = { STORAGE_URI = "${storage.leader.uri}" }

[services.seed]
on = "a"
command = ["python3", "seed.py", "${storage.leader.uri}"]
job = true

[services.api]
on = ["b", "c"]
command = ["python3", "api.py", "--router", "${router.uri}"]
ready = { http = "http://127.0.0.1:8080/health", banner = "listening" }
depends_on = { router = "healthy", seed = "completed" }
restart = "on-failure"
max_restarts = 2
"""


def problems_of(text: str, environ: Optional[Dict[str, str]] = None) -> List[stackfile.FileProblem]:
    with pytest.raises(stackfile.StackFileError) as caught:
        stackfile.parse(textwrap.dedent(text), "stack.toml", environ or {})
    return caught.value.problems


def one(problems: List[stackfile.FileProblem], path: str) -> stackfile.FileProblem:
    found = [p for p in problems if p.path == path]
    assert len(found) == 1, "expected one problem at %s, got: %s" % (
        path,
        "\n".join(map(str, problems)),
    )
    return found[0]


def with_line(line: int, text: str) -> str:
    """``GOOD`` with ``text`` put in place of line ``line`` (1-based), or appended at 0."""
    lines = GOOD.splitlines()
    if line == 0:
        return GOOD + text
    lines[line - 1] = text
    return "\n".join(lines) + "\n"


def test_the_good_file_loads_with_its_start_order() -> None:
    topology = stackfile.parse(GOOD, "stack.toml", {})
    assert list(topology.hosts) == ["a", "b", "c"]
    assert topology.hosts["a"].options == {"python": "/usr/bin/python3"}
    assert topology.hosts["b"].via == "a"
    api = topology.services["api"]
    assert (api.kind, api.hosts) == ("process", ["b", "c"])
    assert api.depends_on == {"router": "healthy", "seed": "completed"}
    # A reference is a dependency ("healthy") unless declared; a job listed is "completed".
    assert topology.services["router"].depends_on == {"storage": "healthy"}
    assert topology.services["seed"].depends_on == {"storage": "healthy"}
    assert topology.waves() == [["storage"], ["router", "seed"], ["api"]]
    assert topology.services["storage"].kind == "replicaset"
    assert topology.services["router"].kind == "tarantool"


def test_a_syntax_error_names_its_line() -> None:
    found = problems_of(with_line(13, "replication_timeout = = 0.1"))
    assert len(found) == 1
    assert found[0].line == 13 and found[0].message.startswith("TOML syntax:"), found


def test_an_unknown_key_gets_a_did_you_mean_at_its_line() -> None:
    found = problems_of(with_line(30, 'depend_on = { router = "healthy" }'))
    problem = one(found, "services.api.depend_on")
    assert problem.line == 30
    assert "unknown key (did you mean 'depends_on'?)" in problem.message
    problem = one(problems_of(with_line(1, 'nmae = "shop"')), "nmae")
    assert (problem.line, problem.message) == (1, "unknown key (did you mean 'name'?)")
    # Inside an inline table too, on the line of the table.
    problem = one(problems_of(with_line(7, 'a = { taget = "root@x" }')), "hosts.a.taget")
    assert problem.line == 7 and "did you mean 'target'" in problem.message


@pytest.mark.parametrize(
    ("line", "text", "path", "words"),
    [
        # a value of the wrong type
        (13, 'replication_timeout = "fast"', "tarantool.storage.replication_timeout", "expected"),
        # a time that is not positive
        (13, "replication_timeout = -1", "tarantool.storage.replication_timeout", "more than zero"),
        # a URL that is not one
        (29, 'ready = { http = "ftp://x/health" }', "services.api.ready.http", "not a URL"),
        # a port out of range, in a member
        (12, 'members = ["a:3301", "b:99999"]', "tarantool.storage.members.1", "1-65535"),
        # a host that is not in [hosts], with a suggestion
        (12, 'members = ["a:3301", "bb:3301"]', "tarantool.storage.members.1", "did you mean 'b'"),
        (27, 'on = ["b", "d"]', "services.api.on.1", "unknown host 'd'"),
        # a hop through an unknown host
        (8, 'b = { target = "root@10.0.0.12", via = "x" }', "hosts.b.via", "unknown host 'x'"),
        # a target that does not parse
        (7, 'a = { target = "root@10.0.0.11:http" }', "hosts.a.target", "not a number"),
        # a dependency on a service that is not there
        (30, 'depends_on = { ruoter = "healthy" }', "services.api.depends_on.ruoter", "did you"),
        # a condition that does not exist
        (30, 'depends_on = { router = "up" }', "services.api.depends_on.router", "'healthy'"),
        # completed on a service that is not a job
        (30, 'depends_on = { router = "completed" }', "services.api.depends_on.router", "job"),
        # a string command without shell = true
        (28, 'command = "python3 api.py"', "services.api.command", "shell = true"),
        # a regex that does not compile
        (29, 'ready = { banner = "(" }', "services.api.ready.banner", "not a valid regex"),
        # a reference to an unknown service
        (19, 'env = { URI = "${strage.leader.uri}" }', "tarantool.router.env.URI", "'storage'"),
        # a malformed reference
        (19, 'env = { URI = "${storage}" }', "tarantool.router.env.URI", "not a reference"),
        # a restart policy that does not exist
        (31, 'restart = "always"', "services.api.restart", "'on-failure'"),
        # a unix socket path too long for AF_UNIX
        (29, 'ready = { unix = "/%s" }' % ("x" * 120), "services.api.ready.unix", "AF_UNIX"),
    ],
)
def test_each_kind_of_error_names_its_line_and_key(
    line: int, text: str, path: str, words: str
) -> None:
    problem = one(problems_of(with_line(line, text)), path)
    assert problem.line == line, problem
    assert words in problem.message, problem
    assert str(problem).startswith("stack.toml:%d: %s: " % (line, path))


def test_a_replica_set_or_one_instance_not_both() -> None:
    problem = one(problems_of(with_line(18, 'members = ["a:3301"]')), "tarantool.router")
    assert problem.line == 16 and "either members" in problem.message
    problem = one(problems_of(with_line(18, "")), "tarantool.router")
    assert "missing: members (a replica set), or on and listen" in problem.message


def test_a_missing_key_is_named() -> None:
    found = problems_of(with_line(28, "shell = false"))
    problem = one(found, "services.api.command")
    assert problem.message.startswith("missing: ") and problem.line == 26


def test_a_duplicate_name_across_sections() -> None:
    problem = one(
        problems_of(GOOD + '\n[services.router]\non = "a"\ncommand = ["x"]\n'), "services.router"
    )
    assert "duplicate name: tarantool.router" in problem.message
    assert problem.line == len(GOOD.splitlines()) + 2


def test_a_cycle_is_named_with_its_path() -> None:
    text = GOOD.replace(
        'env = { STORAGE_URI = "${storage.leader.uri}" }',
        'env = { STORAGE_URI = "${storage.leader.uri}", API = "${api.1.uri}" }',
    )
    found = problems_of(text)
    cycle = [p for p in found if "dependency cycle" in p.message]
    assert len(cycle) == 1, found
    assert cycle[0].message.count("router") + cycle[0].message.count("api") == 3, cycle


def test_the_password_comes_from_the_environment_only() -> None:
    text = GOOD.replace(
        "replication_timeout = 0.1",
        'replication_timeout = 0.1\nuser = "rep"\npassword_env = "RX_TEST_STORAGE_PW"',
    )
    problem = one(problems_of(text, {}), "tarantool.storage.password_env")
    assert problem.line == 15 and "RX_TEST_STORAGE_PW is not set" in problem.message
    topology = stackfile.parse(text, "stack.toml", {"RX_TEST_STORAGE_PW": "s3cret"})
    assert "s3cret" not in json.dumps(topology.to_dict())
    # And a password key in the file is refused: it is not a key at all.
    found = problems_of(text.replace('user = "rep"', 'user = "rep"\npassword = "x"'), {})
    assert "unknown key" in one(found, "tarantool.storage.password").message


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    text = """\
    nmae = "x"
    [hosts]
    a = { target = "local" }
    [services.api]
    on = "z"
    command = []
    ready = { http = "nope", tcp = 0 }
    timeout = 0
    depends_on = ["ghost"]
    """
    found = problems_of(text)
    paths = [p.path for p in found]
    assert paths == [
        "nmae",
        "services.api.on",
        "services.api.command",
        "services.api.ready.http",
        "services.api.ready.tcp",
        "services.api.timeout",
        "services.api.depends_on.ghost",
    ], "\n".join(map(str, found))
    assert [p.line for p in found] == [1, 5, 6, 7, 7, 8, 9]
    text = str(stackfile.StackFileError(found))
    assert text.startswith("7 problems in stack.toml")


def test_key_lines_finds_headers_dotted_and_inline_keys() -> None:
    text = textwrap.dedent(
        """\
        [services.api]
        ready.http = "x"
        "quoted key" = 1
        desc = '''
        [not.a.table]
        '''
        env = { A = "1", "B" = "2" }
        [services."dotted.name"]
        on = "a"
        """
    )
    lines = stackfile.key_lines(text)
    assert lines[("services", "api")] == 1
    assert lines[("services", "api", "ready", "http")] == 2
    assert lines[("services", "api", "quoted key")] == 3
    assert ("not", "a", "table") not in lines
    assert lines[("services", "api", "env", "B")] == 7
    assert lines[("services", "dotted.name", "on")] == 9
    assert stackfile.line_of(lines, ("services", "api", "env", "A", "x")) == 7


def test_the_example_is_valid_and_three_tiers_on_three_hosts() -> None:
    topology = stackfile.read(EXAMPLE)
    assert topology.waves() == [["storage", "sessions"], ["router"], ["api"]]
    hosts = {name: s.hosts for name, s in topology.services.items()}
    abc = ["a", "b", "c"]
    assert hosts == {"storage": abc, "sessions": abc, "router": ["b"], "api": abc}
    assert topology.services["router"].app_source.count("net.box") >= 1


def test_the_shipped_schema_is_generated_from_the_definitions() -> None:
    shipped = os.path.join(REPO, "remoteexec", "stack", "stack.schema.json")
    with open(shipped, encoding="utf-8") as f:
        assert f.read() == schema.render(), "regenerate: python -m remoteexec.stack.schema"
    generated = schema.json_schema()
    service = generated["properties"]["services"]["additionalProperties"]
    assert service["additionalProperties"] is False
    assert set(service["required"]) == {"on", "command"}
    assert set(service["properties"]["ready"]["properties"]) == set(stackfile.READY_KINDS)
    conditions = service["properties"]["depends_on"]["anyOf"][1]["additionalProperties"]
    assert conditions == {"enum": ["started", "healthy", "completed"]}


def test_the_schema_refuses_what_the_checker_refuses() -> None:
    """Where a JSON Schema validator is installed, it agrees with the checker
    on the example (valid) and on a file with an unknown key (invalid)."""
    jsonschema = pytest.importorskip("jsonschema")
    with open(EXAMPLE, "rb") as f:
        doc = stackfile.tomllib.load(f)
    jsonschema.validate(doc, schema.json_schema())
    doc["services"]["api"]["depend_on"] = ["router"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema.json_schema())


def test_stack_from_file_runs_on_the_hosts_given(tmp_path: Any) -> None:
    """Not pure: ``Stack.from_file(path, hosts=...)`` maps the file's host
    names onto Hosts (here two local contexts), and a group (``on`` with
    two hosts) becomes ``NAME.1`` and ``NAME.2``."""
    import remoteexec as rx
    from remoteexec.stack import Stack

    path = tmp_path / "two.toml"
    path.write_text(
        textwrap.dedent(
            """\
            [hosts]
            x = { target = "root@192.0.2.1" }
            y = { target = "root@192.0.2.2" }
            [services.hello]
            on = ["x", "y"]
            command = ["sh", "-c", "echo hello; sleep 30"]
            ready = { banner = "^hello$" }
            [services.done]
            on = "y"
            command = ["true"]
            job = true
            depends_on = ["hello"]
            """
        )
    )
    with rx.Master() as master:
        hosts = {"x": master.local(name="x"), "y": master.local(name="y")}
        stack = Stack.from_file(str(path), hosts=hosts)
        assert stack.services == ["hello.1", "hello.2", "done"]
        try:
            timings = stack.up()
            assert set(timings) == {"hello.1", "hello.2", "done"}
            rows = {row["service"]: row for row in stack.status()}
            assert (rows["hello.1"]["host"], rows["hello.2"]["host"]) == ("x", "y")
            assert "hello" in stack.logs("hello.2", lines=5)
        finally:
            stack.down()
    with pytest.raises(ValueError, match="no Host for y"):
        stackfile.build(stackfile.read(str(path)), {"x": hosts["x"]})
