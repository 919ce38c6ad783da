"""What the digits examples share: the data, the metrics, the per-epoch curves and the plots.

Not an example itself: ``examples/*.py`` import it as a sibling module (a script's own folder is
on ``sys.path``).
"""

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

NUM_CLASSES = 10

Params = Any  # a pytree of arrays


class Digits(NamedTuple):
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def load_digits_split(standardize: bool = True, dtype: Any = np.float32) -> Digits:
    """scikit-learn's 8x8 digits (bundled, no download), split 80/20 with stratification.

    The split ignores the examples' ``--seed``, so runs with different seeds are scored on the
    same test set. ``standardize`` scales each pixel with statistics of the training set only;
    otherwise pixels are divided by their maximum, 16, into [0, 1].
    """
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    if standardize:
        scaler = StandardScaler().fit(x_train)
        x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    else:
        x_train, x_test = x_train / 16.0, x_test / 16.0
    return Digits(x_train.astype(dtype), x_test.astype(dtype), y_train.astype(np.int32),
                  y_test.astype(np.int32))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def epoch_batches(rng: np.random.Generator, num_examples: int, batch_size: int) -> np.ndarray:
    """One epoch's shuffled example indices, a row per batch.

    The last partial batch is dropped so that every batch has the same shape and the step
    compiles once; reshuffling every epoch means no example is left out for good.
    """
    num_batches = num_examples // batch_size
    return rng.permutation(num_examples)[: num_batches * batch_size].reshape(num_batches,
                                                                             batch_size)


SPARSE = 30  # curves with at most this many points are drawn with markers


class Panel(NamedTuple):
    """One subplot: ``curves`` maps a legend label to its ``(x, y)`` points."""

    title: str
    xlabel: str
    ylabel: str
    curves: dict[str, tuple[Sequence[float], Sequence[float]]]
    yscale: str = "linear"


def save_panels(path: str, title: str, panels: Sequence[Panel]) -> None:
    """Side-by-side subplots in one PNG."""
    # A bare Figure renders PNGs with the Agg backend: no display needed, no pyplot global state.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(4.5 * len(panels), 4), layout="constrained")
    fig.suptitle(title)
    colors: dict[str, str] = {}  # one colour per label across panels: "test set" is one colour
    for ax, panel in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels):
        sparse = {label for label, (x, _) in panel.curves.items() if len(x) <= SPARSE}
        for label, (x, y) in panel.curves.items():
            color = colors.setdefault(label, f"C{len(colors)}")
            if label in sparse:  # markers, so that each point (one per epoch) shows
                ax.plot(x, y, label=label, color=color, marker="o", markersize=3)
            else:  # a noisy per-step curve stays in the background of the per-epoch ones
                ax.plot(x, y, label=label, color=color, linewidth=1,
                        alpha=0.5 if sparse else 1.0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps, epochs, iterations
        ax.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel, yscale=panel.yscale)
        ax.legend()
    fig.savefig(path, dpi=120)


class Curves:
    """A training run's curves: each step's batch loss and, after each epoch, the loss and
    accuracy on the whole training and test sets.

    ``predict(params, x) -> logits`` must be deterministic (no dropout): it scores the model.
    """

    def __init__(self, predict: Callable[[Params, jax.Array], jax.Array], data: Digits):
        self.data = data
        self.losses: list[float] = []
        self.epoch_ends: list[int] = []  # the step count at the end of each epoch
        self.metrics: dict[str, list[float]] = {
            f"{split} {metric}": [] for split in ("train", "test") for metric in ("loss", "acc")
        }

        @jax.jit
        def evaluate(params: Params, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
            logits = predict(params, x)
            return cross_entropy(logits, y), accuracy(logits, y)

        self._evaluate = evaluate

    def end_epoch(self, params: Params, step_losses: Sequence[jax.Array]) -> dict[str, str]:
        """Records an epoch; returns the numbers to show on the progress bar."""
        # Fetching the step losses once per epoch, not once per step, lets JAX dispatch the
        # steps asynchronously instead of waiting for each one to finish.
        self.losses.extend(map(float, jax.device_get(step_losses)))
        self.epoch_ends.append(len(self.losses))
        for split, x, y in (("train", self.data.x_train, self.data.y_train),
                            ("test", self.data.x_test, self.data.y_test)):
            loss, acc = self._evaluate(params, x, y)
            self.metrics[f"{split} loss"].append(float(loss))
            self.metrics[f"{split} acc"].append(float(acc))
        return {"loss": f"{self.metrics['train loss'][-1]:.4f}",
                "test_acc": f"{self.metrics['test acc'][-1]:.1%}"}

    def report(self, path: str, title: str, *panels: Panel) -> float:
        """Prints the final test accuracy and saves the curves, then ``panels``, as a PNG.

        Returns the test accuracy, a fraction in [0, 1].
        """
        test_accuracy = self.metrics["test acc"][-1]
        print(f"test accuracy: {test_accuracy:.1%}")
        save_panels(path, title, [*self.panels(), *panels])
        print(f"curves saved to {path}")
        return test_accuracy

    def panels(self) -> list[Panel]:
        """Loss (per step and per epoch, log scale) and accuracy per epoch."""
        epochs = np.arange(1, len(self.epoch_ends) + 1)
        loss = Panel("loss", "step", "cross-entropy", {
            "batch (per step)": (np.arange(1, len(self.losses) + 1), self.losses),
            "train set": (self.epoch_ends, self.metrics["train loss"]),
            "test set": (self.epoch_ends, self.metrics["test loss"]),
        }, yscale="log")
        acc = Panel("accuracy", "epoch", "accuracy", {
            "train set": (epochs, self.metrics["train acc"]),
            "test set": (epochs, self.metrics["test acc"]),
        })
        return [loss, acc]


def argument_parser(doc: str, script: str, *, epochs: int | None = None, lr: float | None = None,
                    lr_help: str = "learning rate",
                    seeds: str = "initialisation and shuffling") -> argparse.ArgumentParser:
    """A parser with the options every example has, ``--plot`` and ``--fast``, and those of the
    training examples, each with the example's own default.

    ``--plot`` defaults to ``<script name>.png`` in the current directory: every example saves
    its curves, as the README says. ``epochs`` adds ``--epochs`` and ``--seed``, whose help
    says it seeds ``seeds``; ``lr`` adds ``--lr``, which ``lr_help`` describes.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--plot", metavar="PATH", default=f"{Path(script).stem}.png",
                        help="where to save the PNG of the curves (default: %(default)s)")
    parser.add_argument("--fast", action="store_true",
                        help="a short run, as the tests use")
    if epochs is not None:
        parser.add_argument("--epochs", type=int, default=epochs,
                            help="passes over the training set")
    if lr is not None:
        parser.add_argument("--lr", type=float, default=lr, help=lr_help)
    if epochs is not None:  # after --lr, where the examples have always listed it
        parser.add_argument("--seed", type=int, default=0, help=f"seeds {seeds}")
    return parser
