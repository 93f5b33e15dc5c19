import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from pivot_jax import model as M
from pivot_jax import sharding


def test_mesh_fills_the_minus_one_axis():
    mesh = sharding.make_mesh(-1, 2, 2)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert dict(sharding.make_mesh(1, -1, 1).shape) == {"data": 1, "fsdp": 8, "tensor": 1}


@pytest.mark.parametrize("axes,message", [((3, 1, 1), "8 devices"), ((-1, -1, 1), "at most one"),
                                          ((-1, 3, 1), "cannot be split")])
def test_bad_meshes_are_explained(axes, message):
    with pytest.raises(ValueError, match=message):
        sharding.make_mesh(*axes)


def test_param_shardings_follow_rules_and_replicate_what_does_not_divide():
    mesh = sharding.make_mesh(1, 2, 4)
    smol = nnx.eval_shape(lambda: M.create(M.preset("smollm2-135m")))  # 9 heads, 3 kv heads: not / 4
    shardings = sharding.param_shardings(smol, mesh)
    assert shardings["layers"]["attn"]["q_proj"].spec == P(None, "fsdp", None, None)
    assert shardings["layers"]["mlp"]["gate_proj"].spec == P(None, "fsdp", "tensor")
    assert shardings["embed"].spec == P("tensor", "fsdp")
    custom = sharding.param_shardings(smol, mesh, [("embed", None), ("mlp", "fsdp")])
    assert custom["layers"]["mlp"]["gate_proj"].spec == P(None, None, "fsdp")


def test_constrain_is_a_no_op_without_mesh_and_shards_inside_one():
    x = jnp.ones((8, 4, 16))
    axes = ("activation_batch", "activation_length", "activation_embed")
    assert sharding.constrain(x, axes) is x
    mesh = sharding.make_mesh(4, 2, 1)
    with sharding.activate(mesh):
        y = jax.jit(lambda v: sharding.constrain(v * 2, axes))(x)
    assert y.sharding.spec == P(("data", "fsdp"))
    np.testing.assert_array_equal(y, 2 * x)
