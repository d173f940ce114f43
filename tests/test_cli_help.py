"""What each registered command tells its user before converting anything: its help, and the options it requires.

Parametrized over the registry: a converter registered later is covered without editing this file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from converters import registry
from converters.cli import SHARED_HELP, run
from converters.contract import Converter, Role

CONVERTERS = registry.names()


def shown(converter: Converter) -> list[tuple[str, str]]:
    """Each option as argparse shows it (flag, then its metavar), with its help."""
    options = []
    for option in converter.options:
        metavar = option.metavar or option.dest.upper()
        spellings = ", ".join(f"{flag} {metavar}" for flag in (option.flag, *option.aliases))
        options.append((spellings, option.help))
    shared = [("--overwrite", SHARED_HELP["--overwrite"]), ("--push_to_hub [REPO_ID]", SHARED_HELP["--push_to_hub"]),
              ("--junitxml PATH", SHARED_HELP["--junitxml"]), ("--report DIR", SHARED_HELP["--report"]),
              ("--verbose", SHARED_HELP["--verbose"]), ("--verify DIR", SHARED_HELP["--verify"]),
              ("--fix-config OUT", SHARED_HELP["--fix-config"]),
              ("--revision REV", SHARED_HELP["--revision"])]  # fmt: skip
    return options + shared


@pytest.mark.parametrize("name", CONVERTERS)
def test_each_converters_command_is_the_script_setup_py_installs_for_it(name: str) -> None:
    """setup.py reads the registry's names, not its records: it installs ``convert-<name>-checkpoint =
    converters.scripts:<name>``."""
    import importlib.metadata

    from converters import scripts

    assert registry.get(name).command == f"convert-{name}-checkpoint" and callable(getattr(scripts, name))
    (installed,) = importlib.metadata.entry_points(group="console_scripts", name=registry.get(name).command)
    assert installed.value == f"converters.scripts:{name}"


def test_the_scripts_module_has_no_script_for_an_unregistered_name() -> None:
    from converters import scripts

    with pytest.raises(AttributeError, match="no converter of that name"):
        scripts.no_such_format  # noqa: B018


def test_the_built_in_converters_are_registered() -> None:
    assert {"ast", "s3prl"} <= set(CONVERTERS)
    assert registry.get("ast").command == "convert-ast-checkpoint"
    assert registry.by_command("convert-s3prl-checkpoint") is registry.get("s3prl")


@pytest.mark.parametrize("name", CONVERTERS)
def test_the_help_names_the_command_what_it_does_and_every_option(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside a text: each is compared whole
    converter = registry.get(name)
    with pytest.raises(SystemExit) as exit_:
        run(converter, ["--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith(f"usage: {converter.command} ")
    assert f"\n\n{converter.description}\n\n" in help_text
    flowing = " ".join(help_text.split())  # argparse puts a long option's help on the next line
    for option, explanation in shown(converter):
        assert f" {option} {explanation} " in flowing + " ", option


@pytest.mark.parametrize(
    ("name", "left_out"),
    [(name, option.flag) for name in CONVERTERS for option in registry.get(name).options if option.required],
)
def test_a_required_option_left_out_stops_the_command_naming_it(
    name: str, left_out: str, capsys: pytest.CaptureFixture[str]
) -> None:
    converter = registry.get(name)
    required = [option.flag for option in converter.options if option.required]
    arguments = [part for option in required if option != left_out for part in (option, "x")]
    with pytest.raises(SystemExit) as exit_:
        run(converter, arguments)
    assert exit_.value.code == 2
    assert f"the following arguments are required: {left_out}" in capsys.readouterr().err


@pytest.mark.parametrize("name", CONVERTERS)
def test_each_converter_names_its_source_and_output(name: str) -> None:
    roles = [option.role for option in registry.get(name).options]
    assert roles.count(Role.SOURCE) == 1 and roles.count(Role.OUTPUT) == 1


def test_the_generic_command_reaches_every_format(capsys: pytest.CaptureFixture[str]) -> None:
    from converters.cli import main

    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(f"{name} ({registry.get(name).command})" in listed for name in CONVERTERS)
    assert main(["no-such-format"]) == 2
    assert f"unknown format 'no-such-format'; registered: {', '.join(registry.names())}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ast", "--help"])
    assert capsys.readouterr().out.startswith("usage: convert-ast-checkpoint ")


@pytest.mark.parametrize("name", CONVERTERS)
def test_the_help_says_every_options_default(name: str) -> None:
    """What leaving an option out does is never a surprise: each one not required says its default."""
    converter = registry.get(name)
    for option in converter.options:
        assert option.required or "(default: " in option.help, option.flag
    assert all("(default: " in text for text in SHARED_HELP.values())


@pytest.mark.parametrize("name", CONVERTERS)
def test_fix_config_without_verify_is_an_argument_error_that_says_what_it_needs(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    converter = registry.get(name)
    required = [part for option in converter.options if option.required for part in (option.flag, str(tmp_path))]
    with pytest.raises(SystemExit) as exit_:
        run(converter, [*required, "--fix-config", str(tmp_path / "fixed")])
    assert exit_.value.code == 2
    error = " ".join(capsys.readouterr().err.split())
    needs = "--fix-config writes a fixed copy of a directory --verify checks: give --verify DIR"
    assert error.endswith(f"{converter.command}: error: {needs}")


def test_the_generic_command_reads_its_arguments_and_lists_the_formats_for_h(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from converters.cli import main

    monkeypatch.setattr("sys.argv", ["convert-checkpoint", "-h"])
    assert main() == 0
    formats = ", ".join(f"{name} ({registry.get(name).command})" for name in registry.names())
    assert f"\nformats: {formats}\n" in capsys.readouterr().out
    assert all(f"{name} ({registry.get(name).command})" in formats for name in CONVERTERS)
    monkeypatch.setattr("sys.argv", ["convert-checkpoint"])
    assert main() == 2


def test_the_usage_line_shows_what_each_mode_requires(capsys: pytest.CaptureFixture[str]) -> None:
    """Converting, verifying, and holding a directory to its golden record, one line each; a source that a published
    name can stand for is shown so."""
    with pytest.raises(SystemExit):
        run(registry.get("ast"), ["--help"])
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert usage == (
        "usage: convert-ast-checkpoint (--checkpoint_path FILE|URL | --model_name NAME) --pytorch_dump_folder_path "
        "DIR [options]\n"
        "       convert-ast-checkpoint (--checkpoint_path FILE|URL | --model_name NAME) --verify DIR|HUB_NAME "
        "[--fix-config OUT] [options]\n"
        "       convert-ast-checkpoint --verify DIR|HUB_NAME --golden RECORD [options]"
    )
    with pytest.raises(SystemExit):
        run(registry.get("s3prl"), ["--help"])
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert usage.splitlines() == [
        "usage: convert-s3prl-checkpoint --base_model_name BASE_MODEL_NAME --checkpoint_path CHECKPOINT_PATH "
        "--model_dump_path DIR [options]",
        "       convert-s3prl-checkpoint --base_model_name BASE_MODEL_NAME --checkpoint_path CHECKPOINT_PATH "
        "--verify DIR|HUB_NAME [--fix-config OUT] [options]",
        "       convert-s3prl-checkpoint --verify DIR|HUB_NAME --golden RECORD [options]",
    ]


def test_no_source_and_no_published_name_is_an_argument_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        run(registry.get("ast"), ["--pytorch_dump_folder_path", "out"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "convert-ast-checkpoint: error: the following arguments are required: --checkpoint_path, or --model_name "
        "NAME (its published original is fetched)"
    )


@pytest.mark.parametrize("name", [name for name in CONVERTERS if registry.get(name).default_source])
def test_a_misspelt_published_name_without_a_source_is_refused_suggesting_the_nearest(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The name stands for the source: a run that names no published model is refused in one line, not with a
    traceback from reading its arguments."""
    converter = registry.get(name)
    (output,) = [o for o in converter.options if o.role.name == "OUTPUT"]
    code = run(converter, [converter.default_source_option, "smal", output.flag, str(tmp_path / "out")])
    error = " ".join(capsys.readouterr().err.split())
    assert code == 1 and f"{converter.command}: error: unknown model name 'smal'" in error
    assert "Traceback" not in error and not (tmp_path / "out").exists()
