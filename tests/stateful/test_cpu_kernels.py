"""optim_jax's CPU kernels (one pass over a step's arrays, in one call, for Adam, AdamW and SGD
with momentum): built by the install, used where they cover a step, bit-identical to XLA's
path, and left aside everywhere else."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optim_jax as optim
from optim_jax import cpu_kernels, fused
from optim_jax.stateful import storage

# Every kind of options each kernel covers; a class's kinds go into one optimizer, a group each.
COVERED = {
    optim.Adam: [{}, {"maximize": True, "weight_decay": 0.1},
                 {"decoupled_weight_decay": True, "weight_decay": 0.1}],
    optim.AdamW: [{"betas": (0.8, 0.99), "eps": 1e-6}, {"weight_decay": 0.0}],
    optim.SGD: [{"momentum": 0.9}, {"momentum": 0.9, "dampening": 0.2, "maximize": True},
                {"momentum": 0.5, "nesterov": True, "weight_decay": 1e-3}],
}
NOT_COVERED = [
    (optim.Adam, {"amsgrad": True}),
    (optim.Adam, {"lr": lambda count: 1e-2 / (1.0 + count)}),
    (optim.SGD, {}),  # no momentum: XLA's one loop is a single pass already
    (optim.RMSprop, {}),
]


def tree(seed: int, dtype=jnp.float32) -> dict:
    """Twelve small leaves and a large one, which share one buffer where a kernel takes the
    steps (fused.SHARED_UP_TO; the large one has a buffer of its own on XLA's path), and a
    larger one, a buffer of its own on both."""
    rng = np.random.default_rng(seed)
    leaves = {f"w{i}": jnp.asarray(rng.standard_normal((40 + i, 40)), dtype) for i in range(12)}
    leaves["big"] = jnp.asarray(rng.standard_normal(70_001), dtype)
    leaves["huge"] = jnp.asarray(rng.standard_normal(fused.SHARED_UP_TO + 3), dtype)
    return leaves


def loss(params):
    return sum(jnp.sum(jnp.sin(p) * p) for p in jax.tree.leaves(params))


@pytest.fixture
def kernel_calls(monkeypatch):
    """The kernels traced into programs: ``(FFI target, number of arrays stepped)``, or for a
    call over buffers read in gradient segments, ``(target, "segments", number of segments,
    the buffers' length)``."""
    calls = []
    original, segmented = cpu_kernels.call, cpu_kernels.call_segments

    def counting(target, columns, terms):
        calls.append((target, len(columns[0])))
        return original(target, columns, terms)

    def counting_segments(target, whole, grads, terms):
        calls.append((target, "segments", len(grads), whole[0].size))
        return segmented(target, whole, grads, terms)

    monkeypatch.setattr(cpu_kernels, "call", counting)
    monkeypatch.setattr(cpu_kernels, "call_segments", counting_segments)
    return calls


def run(cls, option_sets, steps=3, dtype=jnp.float32):
    """Steps from given gradients, then from a closure, with one group per set of options;
    everything the optimizer holds."""
    groups = [{"params": tree(10 * g, dtype), **options} for g, options in enumerate(option_sets)]
    opt = cls(groups, lr=1e-2)
    for k in range(steps):
        opt.grad = [jax.tree.map(lambda g, k=k: g * (k + 1), tree(10 * g + k + 1, dtype))
                    for g in range(len(groups))]
        opt.step()
    for _ in range(2):
        opt.step(loss)
    return jax.tree.leaves((opt.params, opt.state_dict()["state"]))


def xla_path(monkeypatch, cls, option_sets, **kwargs):
    with monkeypatch.context() as patch:
        patch.setattr(cpu_kernels, "available", lambda: False)
        return run(cls, option_sets, **kwargs)


def test_the_install_builds_the_kernels():
    assert cpu_kernels.library_path() is not None, "pip install -e . did not build the kernels"
    assert cpu_kernels.available()


@pytest.mark.parametrize("cls", list(COVERED), ids=lambda cls: cls.__name__)
def test_kernel_steps_are_bit_identical_to_xla(monkeypatch, kernel_calls, cls):
    option_sets = COVERED[cls]
    expected = xla_path(monkeypatch, cls, option_sets)
    assert not kernel_calls
    got = run(cls, option_sets)
    # Two programs (step() and step(closure)), each stepping a group's shared buffer in one
    # call over its 13 leaves' gradients and the huge leaf's buffer in one more; and where a
    # kind of options is first checked against XLA, 2 calls over 4099 elements.
    shared = sum(int(np.prod(x.shape)) for x in tree(0).values()) - fused.SHARED_UP_TO - 3
    steps = sorted(call[2:] for call in kernel_calls if call[1] == "segments" and call[3] > 4099)
    assert steps == sorted([(1, fused.SHARED_UP_TO + 3), (13, shared)] * 2 * len(option_sets))
    assert len(kernel_calls) - len(steps) <= 2 * len(option_sets)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("cls, options", NOT_COVERED,
                         ids=lambda x: getattr(x, "__name__", str(x)))
def test_steps_the_kernels_do_not_cover_take_xlas_path(kernel_calls, cls, options):
    run(cls, [options], steps=1)
    assert not kernel_calls


def test_other_dtypes_take_xlas_path(kernel_calls):
    run(optim.Adam, [{}], steps=1, dtype=jnp.bfloat16)
    assert not kernel_calls


def test_small_steps_take_xlas_path_and_a_tree_is_stepped_in_one_call(monkeypatch, kernel_calls):
    """A step over fewer than MIN_SIZE elements in all keeps XLA's path; a tree kept as it is
    (too few leaves to pack) of arrays large and small, of any shapes, is stepped in one call,
    bit-identical to XLA's path."""
    small = {"w": jnp.ones((100, 100)), "b": jnp.zeros(100)}
    opt = optim.Adam(small, lr=0.1)
    opt.step(lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2))
    assert not kernel_calls

    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((130, 140)), jnp.float32),
              "v": jnp.asarray(rng.standard_normal((3, 5, 7)), jnp.float32),
              "b": jnp.asarray(rng.standard_normal(140), jnp.float32)}

    def steps():
        opt = optim.Adam(params, lr=0.1, weight_decay=0.01)
        for _ in range(3):
            opt.step(loss)
        return jax.tree.leaves((opt.params, opt.state_dict()["state"]))

    got = steps()
    assert kernel_calls[-1] == (cpu_kernels.ADAM, 3)
    with monkeypatch.context() as patch:
        patch.setattr(cpu_kernels, "available", lambda: False)
        expected = steps()
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_kernel_that_does_not_match_xla_is_not_used(monkeypatch, kernel_calls):
    """The first use of each kind of options compares the kernel with XLA's path; a mismatch
    (another jaxlib, another CPU) keeps XLA's path for the process."""
    monkeypatch.setattr(fused, "_compare", lambda kernel, key: False)
    fused._verified.cache_clear()
    try:
        expected = run(optim.SGD, [{"momentum": 0.9, "dampening": 0.3}], steps=1)
        assert len(kernel_calls) == 0
    finally:
        fused._verified.cache_clear()
    assert all(np.all(np.isfinite(np.asarray(x))) for x in expected)


def test_disabled_by_the_environment(monkeypatch):
    monkeypatch.setenv("OPTIM_JAX_CPU_KERNELS", "0")
    cpu_kernels.available.cache_clear()
    try:
        assert not cpu_kernels.available()
    finally:
        monkeypatch.delenv("OPTIM_JAX_CPU_KERNELS")
        cpu_kernels.available.cache_clear()
    assert cpu_kernels.available()


def test_kernels_update_in_place_and_compile_once(kernel_calls, xla_compilations):
    """Donated buffers are written in place (no copies), and steps after the first reuse the
    program."""
    opt = optim.Adam({"w": jnp.ones(50_000)}, lr=0.1)
    opt.grad = {"w": jnp.ones(50_000)}
    opt.step()
    before = opt.param_groups[0]["params"]["w"].unsafe_buffer_pointer()
    count = xla_compilations()
    for _ in range(3):
        opt.grad = {"w": jnp.ones(50_000)}
        opt.step()
    assert xla_compilations() == count
    assert opt.param_groups[0]["params"]["w"].unsafe_buffer_pointer() == before
    np.testing.assert_allclose(opt.params["w"], 1 - 0.4, rtol=1e-6)


def test_groups_spread_over_devices_are_not_local():
    devices = jax.devices()
    one = jax.device_put(jnp.ones(3), devices[0])
    assert storage.on_one_device({"a": one, "b": np.ones(2)})
    if len(devices) > 1:
        other = jax.device_put(jnp.ones(3), devices[1])
        assert not storage.on_one_device({"a": one, "b": other})


def test_a_call_takes_at_most_max_arrays(kernel_calls):
    """XLA's compile time grows with the square of one call's aliased operands: a tree of many
    arrays is stepped in calls of at most MAX_ARRAYS."""
    tree_kept = type("TreeKeptAdam", (optim.Adam,), {"contiguous": False})
    count = 2 * fused.MAX_ARRAYS + 6
    opt = tree_kept([jnp.full(300, float(i)) for i in range(count)], lr=0.1)
    opt.grad = [jnp.ones(300)] * count
    opt.step()
    sizes = [n for _, n in kernel_calls if n > 1]
    assert sizes == [fused.MAX_ARRAYS, fused.MAX_ARRAYS, 6]
    np.testing.assert_allclose(opt.params[-1], count - 1 - 0.1, rtol=1e-6)


def test_large_leaves_share_the_buffer_and_their_gradients_are_not_concatenated():
    """Where a kernel is expected, leaves up to SHARED_UP_TO share the group's buffer, and the
    kernel reads each gradient where it lies: the compiled step holds no concatenation of them
    (XLA's path would pay a pass over the gradient for it)."""
    params = [jnp.full(50_000, float(i)) for i in range(20)]
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    assert opt._records[0].packing.sizes == (("float32", 1_000_000),)
    opt.grad = [jnp.ones(50_000)] * 20
    opt.step()
    program = next(p for key, p in opt._compiled._programs.items() if key.key[0] == "apply")
    hlo = program.lower(opt._held(), opt._states(), opt._prepare()[1], opt._grad).compile()
    assert "f32[1000000]{0} concatenate" not in hlo.as_text()
    assert "custom-call" in hlo.as_text()
    np.testing.assert_allclose(opt.params[7], 7 - 0.1, rtol=1e-6)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpu_kernels, "available", lambda: False)
        assert optim.SGD(params, lr=0.1, momentum=0.9)._records[0].packing.sizes == tuple(
            (f"float32#{i}", 50_000) for i in range(20))


@pytest.mark.parametrize("cls", [optim.Adam, functools.partial(optim.SGD, momentum=0.9)],
                         ids=["Adam", "SGD"])
def test_a_closure_step_updates_the_shared_buffer_in_place_without_copying_it(cls):
    """The loss reads the params through views of the group's buffer, in fusions of its own
    for its value and for its gradient. The kernel, updating the buffer in place, must come
    after all of them: one call over all of the buffer's segments (more than MAX_ARRAYS), made
    to wait for the loss. Otherwise XLA copies the buffer first (twice, measured)."""
    count = fused.MAX_ARRAYS + 38
    targets = [jnp.full(1000, 0.5 * i) for i in range(count)]
    opt = cls([jnp.full(1000, float(i)) for i in range(count)], lr=0.1)
    assert opt._records[0].packing.sizes == (("float32", 1000 * count),)

    def closure(params, targets):
        return sum(jnp.sum((p - t) ** 2) for p, t in zip(params, targets))

    loss = opt.step(closure, targets)
    np.testing.assert_allclose(loss, sum(1000 * (0.5 * i) ** 2 for i in range(count)),
                               rtol=1e-6)
    objective = opt._objective(closure, (targets,), {})
    program = next(p for key, p in opt._compiled._programs.items() if key.key[0] == "closure")
    hlo = program.lower(opt._held(), opt._states(), opt._prepare()[1], objective.arrays,
                        opt._offsets()).compile().as_text()
    assert hlo.count("custom-call(") == 1
    assert f"f32[{1000 * count}]{{0}} copy(" not in hlo


HUGE_PAGE = 2 << 20


def whole_huge_pages(array: jax.Array) -> int:
    """How many whole 2 MiB pages lie inside ``array``'s buffer."""
    start = array.unsafe_buffer_pointer()
    return max(0, ((start + array.nbytes) // HUGE_PAGE) - -(-start // HUGE_PAGE))


def huge_page_kib(array: jax.Array) -> int:
    """The huge pages (KiB, Linux's smaps) of the mappings that hold ``array``'s buffer."""
    start, total, inside = array.unsafe_buffer_pointer(), 0, False
    end = start + array.nbytes
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo < end and hi > start
            elif inside and head == "AnonHugePages:":
                total += int(line.split()[1])
    return total


def collapse_works() -> bool:
    """Whether this Linux backs touched anonymous memory with a huge page on MADV_COLLAPSE
    (6.1 and later) and the system's setting is not "never" (which the kernels respect)."""
    import ctypes
    import mmap

    setting = "/sys/kernel/mm/transparent_hugepage/enabled"
    if not os.path.exists("/proc/self/smaps") or not os.path.exists(setting):
        return False
    with open(setting) as f:
        if "[never]" in f.read():
            return False
    region = mmap.mmap(-1, 2 * HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.write(b"\1" * (2 * HUGE_PAGE))
    anchor = ctypes.c_char.from_buffer(region)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        start = -(-ctypes.addressof(anchor) // HUGE_PAGE) * HUGE_PAGE
        return libc.madvise(start, HUGE_PAGE, 25) == 0  # MADV_COLLAPSE
    finally:
        del anchor
        region.close()


@pytest.mark.parametrize("cls, leaves", [(optim.Adam, 1),
                                         (functools.partial(optim.SGD, momentum=0.9), 128)],
                         ids=["Adam, own buffer", "SGD, shared buffer (segments)"])
def test_buffers_a_kernel_writes_in_place_get_huge_pages_from_the_second_step(cls, leaves):
    """The params and state a kernel steps in place live from step to step: from the second
    step on, every whole 2 MiB page inside them is a huge page (fewer page-table walks on a
    memory-bound pass), where this Linux does MADV_COLLAPSE. The values are unchanged."""
    size = (3 << 22) // leaves  # 48 MiB in all: 128 leaves of 98,304 share a buffer
    opt = cls([jnp.full(size, 1.0 + i) for i in range(leaves)], lr=0.1)
    for _ in range(3):
        opt.grad = [jnp.full(size, 0.5)] * leaves
        opt.step()
    kept = [x for x in jax.tree.leaves((opt._held(), opt._states())) if x.size >= size * leaves]
    assert len(kept) == (3 if cls is optim.Adam else 2)
    if collapse_works():
        for buffer in kept:
            assert huge_page_kib(buffer) >= whole_huge_pages(buffer) * 2048 > 0
    expected = {optim.Adam: 1.0 - 3 * 0.1}.get(cls, 1.0 - 0.1 * 0.5 * (1 + 1.9 + 2.71))
    np.testing.assert_allclose(opt.params[-1], expected + leaves - 1, rtol=1e-6)
