"""Random pytrees the parity tests step through: nested, and shaped for Muon and SparseAdam."""

import jax
import numpy as np

STEPS = 25  # steps of every trajectory compared with torch


def random_tree(rng: np.random.Generator, dtype=np.float32):
    """A nested dict/list/tuple pytree with scalar, vector and matrix leaves."""
    return {
        "scalar": rng.standard_normal(()).astype(dtype),
        "vector": rng.standard_normal((5,)).astype(dtype),
        "layers": [
            {"w": rng.standard_normal((4, 3)).astype(dtype), "b": rng.standard_normal((3,)).astype(dtype)},
            (rng.standard_normal((2, 3, 2)).astype(dtype),),
        ],
    }


def like_tree(rng: np.random.Generator, tree):
    """Random normal leaves shaped and typed like ``tree``'s."""
    return jax.tree.map(lambda x: rng.standard_normal(np.shape(x)).astype(np.asarray(x).dtype), tree)


def muon_tree(rng: np.random.Generator, dtype):
    """Tall, wide and square matrices (the tall ones are orthogonalised transposed)."""
    m = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    return {"tall": m(6, 3), "layers": [m(3, 5), (m(4, 4),)], "thin": m(2, 7)}


def sparse_tree(rng: np.random.Generator, dtype):
    """``random_tree``'s leaves and an embedding table, for SparseAdam."""
    m = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    return {"scalar": m(), "vector": m(5), "layers": [{"w": m(4, 3)}, (m(2, 3, 2),)], "embedding": m(10, 4)}


def sparse_grads(rng: np.random.Generator, params, steps: int = STEPS):
    """``steps`` gradients with about half of their entries zero (whole rows for the embedding)."""
    def one(path, p):
        g = rng.standard_normal(np.shape(p)).astype(np.asarray(p).dtype)
        if jax.tree_util.keystr(path) == "['embedding']":
            return g * (rng.random((g.shape[0], 1)) < 0.3)
        return g * (rng.random(np.shape(p)) < 0.5)

    return [jax.tree_util.tree_map_with_path(one, params) for _ in range(steps)]


def complex_tree(rng: np.random.Generator, scalar: bool = False):
    """Complex and real float64 leaves (``scalar``: and a complex scalar)."""
    cplx = lambda *shape: rng.standard_normal(shape) + 1j * rng.standard_normal(shape)  # noqa: E731
    tree = {"z": cplx(3, 2), "r": rng.standard_normal(4)}
    return {**tree, "s": cplx()} if scalar else tree
