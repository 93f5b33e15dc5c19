"""The sweep backends by name: `--backend_option KEY=VALUE` parsing, and unknown names or options refused."""

import pytest

from pivot_jax.errors import ConfigError
from pivot_jax.launch.backends import make_executor, parse_options
from pivot_jax.launch.local import LocalExecutor


def test_options_parse_and_keep_everything_after_the_first_equals_sign():
    assert parse_options(["partition=gpu", "constraint=a100&nvlink", "empty="]) == {
        "partition": "gpu", "constraint": "a100&nvlink", "empty": ""}


@pytest.mark.parametrize("item", ["partition", "=gpu"])
def test_an_option_without_a_key_or_value_sign_is_named(item):
    with pytest.raises(ConfigError, match=f"--backend_option '{item}': expected KEY=VALUE"):
        parse_options([item])


def test_local_backend_and_bad_names():
    executor = make_executor("local", 3)
    assert isinstance(executor, LocalExecutor) and executor.slots == 3
    with pytest.raises(ConfigError, match="--backend must be one of"):
        make_executor("mainframe", 1)
    with pytest.raises(ConfigError, match="--backend local takes no --backend_option, got \\['partition'\\]"):
        make_executor("local", 1, {"partition": "gpu"})
