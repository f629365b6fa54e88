from click.testing import CliRunner

from sync.cli import cli, main


def test_version_exits_zero(capsys):
    assert main(["--version"]) == 0
    assert "mailsync" in capsys.readouterr().out


def test_every_command_has_help():
    runner = CliRunner()
    for name, command in cli.commands.items():
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert command.help, f"{name} has no help text"
