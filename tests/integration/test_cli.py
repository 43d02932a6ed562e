"""The ``notify`` command's contract: ``--version``, exit codes 0 / 1 / 2, an unknown user is a clear failure."""

from __future__ import annotations

import pytest

from include.notify.config import NotifyConfig
from notify_tools import cli

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_env(config: NotifyConfig, monkeypatch: pytest.MonkeyPatch) -> NotifyConfig:
    monkeypatch.setenv("NOTIFY_DYNAMODB_ENDPOINT_URL", config.dynamodb_endpoint_url)
    monkeypatch.setenv("NOTIFY_TABLE_PREFIX", config.table_prefix)
    monkeypatch.setenv("NOTIFY_STATE_DIR", str(config.state_dir))
    return config


def test_version_prints_the_package_version_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == cli.EXIT_OK
    assert capsys.readouterr().out.strip() == f"notify {cli.version()}"
    assert cli.version()[0].isdigit()


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["plan"])  # USER_ID missing
    assert exited.value.code == cli.EXIT_USAGE
    assert "user_id" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["explain", "plan", "deliveries"])
def test_an_unknown_user_exits_1_with_a_clear_message(
    cli_env: NotifyConfig, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([command, "U9999999"]) == cli.EXIT_FAILURE
    captured = capsys.readouterr()
    assert "unknown user 'U9999999'" in captured.err
    assert cli_env.table_name("users") in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_a_known_user_exits_0(cli_env: NotifyConfig, dynamo, capsys: pytest.CaptureFixture[str]) -> None:
    dynamo.put_items("users", [{"user_id": "U0000001", "timezone": "UTC", "email": "u1@example.com"}])
    assert cli.main(["deliveries", "U0000001"]) == cli.EXIT_OK
    assert "U0000001" in capsys.readouterr().out


def test_a_failure_exits_1_and_keeps_the_traceback_in_the_log_file(
    cli_env: NotifyConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(args):
        raise RuntimeError("dynalite is not running on 127.0.0.1:1")

    monkeypatch.setattr(cli, "cmd_init", broken)
    assert cli.main(["init"]) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "notify: dynalite is not running" in err
    assert "Traceback" not in err
    assert "Traceback" in (cli_env.state_dir / "logs" / "notify.log").read_text()
