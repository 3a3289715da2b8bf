"""remoteexec.tarantool.scripts and .version: the Lua package data and version parsing."""

from __future__ import annotations

import re

import pytest

from remoteexec.tarantool import scripts
from remoteexec.tarantool.config import box_cfg_for, render_init_lua
from remoteexec.tarantool.version import VERSION_RE, Features, parse_version
from remoteexec.target.tarantool import version as target_version


def test_every_lua_file_is_package_data_with_lua_in_it() -> None:
    assert "local function start_probe(path)" in scripts.probe_lua()
    assert scripts.box_status_lua().rstrip().endswith("return r")
    template = scripts.init_template()
    assert "{{box_cfg}}" in template and "{{probe_lua}}" in template
    # No Python string syntax left in the Lua.
    for text in (scripts.probe_lua(), scripts.box_status_lua(), template):
        assert '"""' not in text


def test_render_fills_every_placeholder_and_refuses_drift() -> None:
    assert scripts.render("a {{x}} b {{y}}", {"x": "1", "y": "{{x}}"}) == "a 1 b {{x}}"
    with pytest.raises(ValueError, match=r"missing \['y'\]"):
        scripts.render("{{x}} {{y}}", {"x": "1"})
    with pytest.raises(ValueError, match=r"unused \['z'\]"):
        scripts.render("{{x}}", {"x": "1", "z": "2"})


def test_rendered_init_lua_has_no_placeholder_left_and_sets_params() -> None:
    cfg = box_cfg_for((2, 6, 0), listen=3301, work_dir="/tmp/w")
    src = render_init_lua(box_cfg=cfg, probe_socket="/tmp/p", app_params={"port": 3301})
    assert not re.search(r"\{\{\w+\}\}", src)
    assert "rawset(_G, 'params', {\n    port = 3301,\n})" in src
    assert "local rx_password_env = nil" in src
    assert "rawset(_G, 'params', {})" in render_init_lua(box_cfg=cfg, probe_socket="/tmp/p")


def test_master_and_target_parse_versions_with_one_pattern() -> None:
    assert VERSION_RE is target_version.VERSION_RE
    assert parse_version("Tarantool 2.6.0-0-g47aa4e01e") == (2, 6, 0)


def test_features_by_version() -> None:
    old, new = Features.for_version((2, 6, 0)), Features.for_version([2, 11, 1, 99])
    assert old.version == (2, 6, 0) and new.version == (2, 11, 1)
    assert not old.bootstrap_strategy and new.bootstrap_strategy and new.quorum_deprecated
    assert not old.promote and Features.for_version((2, 6, 3)).promote
    assert not Features.for_version((2, 7, 1)).promote and Features.for_version((2, 7, 2)).promote
    assert old.election_mode is False and Features.for_version((2, 6, 1)).election_mode
