import jax.numpy as jnp
import numpy as np
import pytest

from pivot_jax import optimizer
from pivot_jax.config import base_config


def _opt(**kw):
    c = base_config().optimizer
    c.update(kw)
    return c


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_schedules_warm_up_then_decay(schedule):
    lr = optimizer.learning_rate_schedule(_opt(lr=2e-5, schedule=schedule, warmup_ratio=0.03), 1000)
    assert float(lr(0)) == 0.0
    np.testing.assert_allclose(float(lr(30)), 2e-5, rtol=1e-6)  # 3% of 1000 steps of warmup
    np.testing.assert_allclose(float(lr(15)), 1e-5, rtol=1e-6)
    end = float(lr(1000))
    assert end == pytest.approx(2e-5 if schedule == "constant" else 0.0, abs=1e-12)
    if schedule == "linear":
        np.testing.assert_allclose(float(lr(515)), 1e-5, rtol=1e-6)


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="cosnie"):
        optimizer.learning_rate_schedule(_opt(schedule="cosnie"), 10)


def test_norms_are_not_decayed():
    params = {"embed": jnp.ones((4, 2)), "final_norm": {"scale": jnp.ones(2)},
              "layers": {"attn_norm": {"scale": jnp.ones((3, 2))}, "mlp": {"up_proj": jnp.ones((3, 2, 2))}}}
    mask = optimizer.decay_mask(params)
    assert mask == {"embed": True, "final_norm": {"scale": False},
                    "layers": {"attn_norm": {"scale": False}, "mlp": {"up_proj": True}}}
    tx, _ = optimizer.make(_opt(lr=0.1, weight_decay=0.5, warmup_ratio=0.0, schedule="constant"), 10)
    zeros = {k: v for k, v in params.items()}
    grads = __import__("jax").tree.map(jnp.zeros_like, zeros)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert float(updates["final_norm"]["scale"][0]) == 0.0  # zero grad, no decay
    assert float(updates["embed"][0, 0]) == pytest.approx(-0.05)  # lr * wd * param
