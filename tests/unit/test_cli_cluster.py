"""`lamina serve --cluster` refuses a configuration it cannot run before anything starts:
exit status 2 and the option named."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from lamina.cli.main import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--database", "postgresql://u@h/db"], "--database: only with --cluster"),
        (["--nats", "nats://h:4222"], "--nats: only with --cluster"),
        (["--cluster"], "--cluster needs --database"),
        (["--cluster", "--database", "sqlite:///x.db", "--nats", "nats://h:1"], "not a postgresql"),
        (["--cluster", "--database", "postgresql://u@h/db"], "--cluster needs --nats"),
        (
            ["--cluster", "--database", "postgresql://u:pw@h/db", "--nats", "http://h:1"],
            "is not a nats://HOST:PORT URL",
        ),
        (
            [
                "--cluster",
                "--database",
                "postgresql://u@h/db",
                "--nats",
                "nats://h:1",
                "--node-name",
                "a.b",
            ],
            "--node-name: 'a.b'",
        ),
        (
            [
                "--cluster",
                "--database",
                "postgresql://u@h/db",
                "--nats",
                "nats://h:1",
                "--cluster-name",
                "x y",
            ],
            "--cluster-name: 'x y'",
        ),
        (
            [
                "--cluster",
                "--database",
                "postgresql://u@h/db",
                "--nats",
                "nats://h:1",
                "--advertise-url",
                "h:80",
            ],
            "--advertise-url",
        ),
    ],
)
def test_bad_cluster_options_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["serve", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_password_in_the_database_url_is_never_printed() -> None:
    result = CliRunner().invoke(
        main, ["serve", "--cluster", "--database", "mysql://u:sekret@h/db", "--nats", "nats://h:1"]
    )
    assert result.exit_code == 2
    assert "sekret" not in result.output and "***" in result.output
