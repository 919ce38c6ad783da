"""FSDP-style data-parallel training of an MLP on digits across 8 (fake CPU) devices.

Fully sharded data parallelism splits everything along one 'data' mesh axis: every weight large
enough is cut into one slice per device, each batch is split into one slice per device, and the
optimizer state follows its parameter, so params and Adam's two moments cost each device about
an eighth of their total. Nothing here asks for communication: ``opt.step`` compiles one program
in which XLA gathers the weights for the forward pass and reduces the gradients back onto their
slices.

On a machine with one CPU the script makes 8 devices of it (``XLA_FLAGS``, set before JAX is
imported) unless ``XLA_FLAGS`` already sets a device count; on a GPU or TPU host it uses the
accelerators there. It prints each device's bytes of parameters and of optimizer state, and the
test accuracy (about 97% with the defaults), and saves the loss curve to ``data_parallel.png`` in
the current directory (``--plot PATH`` to change it).

Run it with::

    pip install -e ".[examples]" && python examples/data_parallel.py

    python examples/data_parallel.py --fast --plot loss.png
"""

import os

# Before anything imports jax, the sibling modules _digits and quickstart included.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

from collections.abc import Sequence  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from tqdm import trange  # noqa: E402

import optim_jax  # noqa: E402
from _digits import (Panel, Params, accuracy, argument_parser, cross_entropy,  # noqa: E402
                     epoch_batches, load_digits_split, save_panels)
from quickstart import MLP  # noqa: E402

FAST_EPOCHS = 4


def fsdp_spec(shape: tuple[int, ...], devices: int) -> P:
    """Shards a parameter's largest dimension that splits evenly over the devices.

    Parameters with no such dimension (the 10 biases of the output layer) stay whole on every
    device: they are a rounding error next to the weights.
    """
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % devices == 0:
            return P(*(None,) * dim, "data")
    return P()


def bytes_per_device(arrays: Sequence[jax.Array]) -> dict[int, int]:
    """Bytes each device holds of ``arrays``: its shards, replicas included."""
    held: dict[int, int] = {}
    for array in arrays:
        for shard in array.addressable_shards:
            held[shard.device.id] = held.get(shard.device.id, 0) + shard.data.nbytes
    return held


def loss_fn(params: Params, model: nn.Module, x: jax.Array, y: jax.Array) -> jax.Array:
    return cross_entropy(model.apply({"params": params}, x), y)


def main(argv: Sequence[str] | None = None) -> float:
    """Trains the MLP, prints per-device memory and test accuracy, returns the accuracy."""
    parser = argument_parser(__doc__, __file__, epochs=15, lr=1e-3, lr_help="AdamW learning rate")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="global batch, split evenly over the devices")
    args = parser.parse_args(argv)
    epochs = FAST_EPOCHS if args.fast else args.epochs
    devices = jax.device_count()
    if args.batch_size % devices:
        raise SystemExit(f"--batch-size {args.batch_size} does not split over {devices} devices")
    mesh = Mesh(np.array(jax.devices()), ("data",))
    by_example = NamedSharding(mesh, P("data"))
    data = load_digits_split()

    model = MLP(hidden=256)
    params = model.init(jax.random.key(args.seed), data.x_train[:1])["params"]
    params = jax.tree.map(
        lambda p: jax.device_put(p, NamedSharding(mesh, fsdp_spec(p.shape, devices))), params)
    opt = optim_jax.AdamW(params, lr=args.lr, weight_decay=1e-4)

    rng = np.random.default_rng(args.seed)
    losses: list[float] = []
    progress = trange(epochs, desc="training", unit="epoch")
    for _ in progress:
        step_losses = [
            opt.step(loss_fn, model, jax.device_put(data.x_train[batch], by_example),
                     jax.device_put(data.y_train[batch], by_example))
            for batch in epoch_batches(rng, len(data.x_train), args.batch_size)
        ]
        # One fetch per epoch keeps the steps dispatching asynchronously.
        losses.extend(map(float, jax.device_get(step_losses)))
        progress.set_postfix(loss=f"{np.mean(losses[-len(step_losses):]):.4f}")

    param_bytes = bytes_per_device(jax.tree.leaves(opt.params))
    # Every parameter's entry lists the group's one step counter: count each array once.
    state_arrays = {id(a): a for entry in opt.state.values() for a in entry.values()}
    state_bytes = bytes_per_device(list(state_arrays.values()))
    total = sum(p.nbytes for p in jax.tree.leaves(opt.params))
    print(f"{devices} devices, params {total} bytes in all; held per device:")
    for device in sorted(param_bytes):
        print(f"  device {device}: params {param_bytes[device]} bytes, "
              f"optimizer state {state_bytes[device]} bytes")

    logits = model.apply({"params": opt.params},
                         jax.device_put(data.x_test, NamedSharding(mesh, P())))
    test_accuracy = float(accuracy(logits, data.y_test))
    print(f"test accuracy: {test_accuracy:.1%}")
    panel = Panel("training loss", "step", "cross-entropy",
                  {"batch (per step)": (np.arange(1, len(losses) + 1), losses)}, yscale="log")
    save_panels(args.plot, f"MLP on digits, FSDP over {devices} devices", [panel])
    print(f"loss curve saved to {args.plot}")
    return test_accuracy


if __name__ == "__main__":
    main()
