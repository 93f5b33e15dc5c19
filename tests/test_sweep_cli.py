"""`python -m pivot_jax.sweep`: the dry run prints each point's exact command; usage errors are one line."""

import shlex

import pytest

from pivot_jax.sweep.__main__ import main


def test_dry_run_prints_every_point_command(tmp_path, capsys):
    main(["--config", "configs/sweeps/quickstart.py:langs=es,amounts=0+75", "--workdir", str(tmp_path), "--dry_run"])
    commands = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
    assert len(commands) == 2 and all(c[1:3] == ["-m", "pivot_jax.train"] for c in commands)
    assert f"{tmp_path}/points/quickstart-es-pairs75-seed0" in commands[1]
    assert "--config.data.translation_amount=75" in commands[1] and "--config.train.epochs=2.0" in commands[1]
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_only_selects_points_by_glob(tmp_path, capsys):
    main(["--config", "configs/sweeps/quickstart.py", "--workdir", str(tmp_path), "--dry_run", "--only", "*-zh-*"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and all("quickstart-zh-" in line for line in lines)


@pytest.mark.parametrize("argv, message", [
    (["--workdir", "x"], "a sweep needs --config and --workdir"),
    (["collect"], "collect takes the sweep's DIR"),
    (["fit", "x"], "unknown action 'fit'"),
])
def test_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def test_collect_needs_a_sweep_directory(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["collect", str(tmp_path)])
    assert "is not a sweep directory" in capsys.readouterr().err
