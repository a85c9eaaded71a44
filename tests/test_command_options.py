"""One options model per command: the CLI, the Python API and the pipeline stage agree on every default and
summary; grouped commands have real subcommands; a flag that does not apply is an error."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from ecgka.cli import ALIASES, COMMANDS, build_parser, load_command, main
from ecgka.cli.options import SynthOptions, api_function
from ecgka.pipeline.stages import STAGE_KINDS

REPO = Path(__file__).resolve().parents[1]

# every runnable command line: ("synth",), ("registry", "list"), ...
LEAVES = [(name,) for name, info in COMMANDS.items() if not info.subcommands] + [
    (name, sub) for name, info in COMMANDS.items() for sub in info.subcommands]

# stage kind -> the command whose options it takes
STAGE_COMMANDS = {"synth": ("synth",), "synth_age": ("age", "synth"), "build": ("build",), "train": ("train",),
                  "evaluate": ("evaluate",), "report": ("report",), "register": ("registry", "register"),
                  "promote": ("registry", "promote")}
STAGE_ONLY = {"challenger", "compare"}  # no command of their own; their options live beside the others

# API defaults that differ on purpose (asserted, so a new difference fails): the Python functions run
# in-process by default, the command and the stage use the machine
API_EXCEPTIONS = {("build", "workers"): (None, 1), ("age", "pack", "workers"): (4, 1)}


def _info(words: tuple[str, ...]):
    info = COMMANDS[words[0]]
    return info.subcommands[words[1]] if len(words) > 1 else info


def _parser(words: tuple[str, ...]):
    return build_parser("ecgka " + " ".join(words), _info(words))


def _parser_defaults(words: tuple[str, ...]) -> dict:
    """dest -> default of every optional argument (positionals with a default included)."""
    parser = _parser(words)
    return {a.dest: a.default for a in parser._actions if a.dest != "help" and not a.required
            and not (not a.option_strings and a.nargs in (None, "+"))}


def _model_defaults(model) -> dict:
    return {name: f.get_default(call_default_factory=True) for name, f in model.model_fields.items()
            if not f.is_required()}


@pytest.mark.parametrize("words", LEAVES, ids=[" ".join(w) for w in LEAVES])
def test_parser_defaults_and_summary_are_the_models(words, capsys):
    command = load_command(_info(words))
    defaults = _model_defaults(command.options)
    parsed = _parser_defaults(words)
    appended = {d for d in parsed if parsed[d] is None and defaults.get(d) == []}  # --labs, --set: None, then []
    assert {k: v for k, v in parsed.items() if k not in appended} == {
        k: v for k, v in defaults.items() if k not in appended}
    assert _parser(words).description == _info(words).summary
    assert command.options.model_config["extra"] == "forbid"
    with pytest.raises(SystemExit) as done:
        main([*words, "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and out.startswith(f"usage: ecgka {' '.join(words)} ")
    assert "".join(_info(words).summary.split()) in "".join(out.split())  # as argparse wraps it


def _plain(value):
    """An immutable default of an API function (``()``) as the model writes it (``[]``)."""
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("words", LEAVES, ids=[" ".join(w) for w in LEAVES])
def test_api_signature_defaults_are_the_models(words):
    model = load_command(_info(words)).options
    function = api_function(model)
    if function is None:
        pytest.skip(f"ecgka {' '.join(words)} has no API function of its own")
    params = inspect.signature(function).parameters
    for name, default in _model_defaults(model).items():
        param = params.get(model.api_names.get(name, name))
        if param is None or param.default is inspect.Parameter.empty:
            continue
        if (*words, name) in API_EXCEPTIONS:
            assert (default, param.default) == API_EXCEPTIONS[(*words, name)]
        else:
            assert _plain(param.default) == default, f"ecgka {' '.join(words)} {name}: API {param.default!r}, CLI {default!r}"


@pytest.mark.parametrize("kind", sorted(STAGE_COMMANDS))
def test_stage_options_are_the_commands(kind):
    """A stage takes its command's options (less --out/--force/--quiet): same names, same defaults."""
    stage_model = STAGE_KINDS.get(kind).options_model
    command_model = load_command(_info(STAGE_COMMANDS[kind])).options
    assert issubclass(command_model, stage_model)
    assert set(command_model.model_fields) - set(stage_model.model_fields) <= {"out", "force", "quiet",
                                                                                 "allow_other_dataset"}
    parsed = _parser_defaults(STAGE_COMMANDS[kind])
    for name, default in _model_defaults(stage_model).items():
        assert parsed.get(name, default) == default or (parsed.get(name) is None and default == [])


def test_every_stage_kind_has_an_options_model_of_a_command():
    assert set(STAGE_KINDS.names()) >= set(STAGE_COMMANDS) | STAGE_ONLY
    for kind in STAGE_COMMANDS.keys() | STAGE_ONLY:
        assert STAGE_KINDS.get(kind).options_model.__module__ == "ecgka.cli.options"


def test_the_synth_subject_count_is_one_number():
    from ecgka.standin import generate_standin

    cli = _parser_defaults(("synth",))["subjects"]
    api = inspect.signature(generate_standin).parameters["subjects"].default
    stage = STAGE_KINDS.get("synth").options_model.model_fields["subjects"].default
    assert cli == api == stage == SynthOptions.model_fields["subjects"].default == 200


def test_the_top_level_listing_is_the_table(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, info in COMMANDS.items():
        line = next(line for line in out.splitlines() if line.startswith(f"  {name} "))
        assert (f"ecgka {' '.join(ALIASES[name])}" if name in ALIASES else info.summary) in line


@pytest.mark.parametrize("group", ["registry", "age"])
def test_groups_list_their_subcommands(group, capsys):
    assert main([group, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ecgka {group} {{{','.join(COMMANDS[group].subcommands)}}}")
    for sub, info in COMMANDS[group].subcommands.items():
        assert f"  {sub} " in out and info.summary in out
    assert main([group]) == 2  # no subcommand: the same listing, exit 2
    assert "subcommands:" in capsys.readouterr().out


def test_an_unknown_subcommand_is_one_line(capsys):
    assert main(["registry", "lst", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'list'" in err


@pytest.mark.parametrize("argv", [
    ["registry", "list", "REG", "--note", "x"],
    ["registry", "show", "REG@v1", "--checkpoint", "last"],
    ["registry", "register", "REG", "RUN", "--gate", "g.yaml"],
    ["registry", "promote", "REG@v1", "--note", "x"],
    ["age", "pack", "--csv", "a.csv", "--images", "im", "--out", "o", "--metadata", "m.csv"],
    ["age", "prepare", "agedb", "--metadata", "m.csv", "--out", "o.csv", "--rows-per-shard", "3"],
    ["synth-age", "--out", "o", "--subjects", "3"],
])
def test_a_flag_of_another_subcommand_is_an_error(argv, capsys, tmp_path):
    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1 and "unrecognized arguments" in err, err
    assert err.startswith(f"ecgka {' '.join(argv[:2] if argv[0] != 'synth-age' else argv[:1])}: error: ")


def test_synth_age_is_an_alias_of_age_synth():
    assert COMMANDS["synth-age"] is COMMANDS["age"].subcommands["synth"]
    assert load_command(COMMANDS["synth-age"]) is load_command(COMMANDS["age"].subcommands["synth"])


def test_top_level_help_imports_no_options_model():
    code = ("import sys\nfrom ecgka.cli import main\nmain(['--help'])\n"
            "print(sorted(m for m in ('pydantic', 'ecgka.cli.options') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout + res.stderr
