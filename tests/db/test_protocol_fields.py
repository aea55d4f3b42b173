"""Every protocol field is declared once (db.protocol.PROTOCOL_FIELDS) and reachable
from every surface that sets or shows a protocol: the options of `segbench submit`
and `segbench train`, and protocol_line. One option name per field."""

from __future__ import annotations

import dataclasses

import pytest
import typer.main

from db.presets import protocol_line, resolve
from db.protocol import PROTOCOL_FIELDS, Protocol, protocol_field
from worker.cli import app

SHARED = [f for f in PROTOCOL_FIELDS if not f.per_run]


def _options(command_name: str) -> dict[str, list[str]]:
    command = typer.main.get_command(app).commands[command_name]
    return {p.name: list(p.opts) + list(p.secondary_opts) for p in command.params}


def test_the_declaration_covers_every_field_of_protocol():
    assert [f.name for f in PROTOCOL_FIELDS] == [f.name for f in dataclasses.fields(Protocol)]
    for f in PROTOCOL_FIELDS:
        assert f.label and f.help.endswith("."), f.name
        assert f.option == "--" + f.name.replace("_", "-")
        if f.choices:
            assert f.default in f.choices, f.name
            for choice in f.choices:  # every choice is named in the help
                assert choice in f.help, (f.name, choice)


@pytest.mark.parametrize("command", ["submit", "train"])
def test_every_shared_field_is_an_option_with_one_name(command):
    options = _options(command)
    for f in SHARED:
        assert f.name in options, f"{command} has no option for {f.name}"
        assert options[f.name][0] == f.option
        rest = set(options[f.name][1:]) - {f"--no-{f.option[2:]}"}
        assert rest == set(f.option_aliases), (f.name, rest)


def test_a_command_line_value_reaches_the_protocol(tmp_path):
    """Each generated option sets its field (a value other than the default)."""
    from worker.cli.options import protocol_from_options

    for f in SHARED:
        if f.choices:
            value = next(c for c in f.choices if c != f.default)
        elif f.type is bool:
            value = not f.default
        elif f.name == "image_size":
            value = 64
        else:
            value = f.type(f.default * 2)
        protocol = protocol_from_options(None, {f.name: value})
        assert getattr(protocol, f.name) == value, f.name


def test_protocol_line_shows_every_shared_field():
    p = resolve("authors-2020", nsd_tolerance_mm=3.5, boundary_mode="border-voxel")
    line = protocol_line(p)
    for f in SHARED:
        assert f.show(getattr(p, f.name)) in line, f.name
    assert "NSD tolerance 3.5 mm" in line and "boundary border-voxel" in line
    assert protocol_field("seed").per_run and "seed 0" not in line
