"""The checkpoint body's format (hvdkit.training.safe_format): every type a payload holds comes
back as itself (tuples, int keys, numpy dtypes, shapes, memory order and scalar types, float
bits), values it cannot hold are refused when saving, and bodies it did not write are refused
when loading."""

from __future__ import annotations

import io
import json
import random
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hvdkit.training.checkpoint import rng_state, save, set_rng_state
from hvdkit.training.safe_format import FormatError, UnsupportedValue, decode, encode


def assert_same(a: Any, b: Any, where: str = "payload") -> None:
    """`a` and `b` equal and of the same types all the way down (floats bit for bit)."""
    assert type(a) is type(b), f"{where}: {type(a)} became {type(b)}"
    if isinstance(a, np.ndarray | np.generic):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape}"
        assert a.tobytes() == b.tobytes(), where
        if isinstance(a, np.ndarray):  # Fortran order kept (a strided view comes back whole)
            assert b.flags.f_contiguous >= (a.flags.f_contiguous and not a.flags.c_contiguous)
            assert b.flags.writeable, where
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), f"{where}: {a!r} became {b!r}"
    elif isinstance(a, dict):
        assert len(a) == len(b), where
        for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True):
            assert_same(ka, kb, f"{where} key {ka!r}")
            assert_same(va, vb, f"{where}[{ka!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} became {b!r}"


def sample_payload() -> dict[str, Any]:
    """What adapters, exchanges and the checkpointer put in a payload, and its corner cases."""
    random.seed(3)
    np.random.seed(4)
    np.random.standard_normal()  # numpy's state then holds a cached Gaussian (a float)
    return {
        "rng": rng_state(),  # Python's (3, tuple of 625 ints, None); numpy's tuple with array
        "optimizer": {  # a torch optimizer's state_dict: int keys, tuples, 0-d arrays
            "state": {0: {"step": np.array(3.0, np.float32),
                          "exp_avg": np.arange(6, dtype=np.float32).reshape(2, 3)}, 1: {}},
            "param_groups": [{"lr": 0.002, "betas": (0.9, 0.999), "eps": 1e-8,
                              "weight_decay": 0, "amsgrad": False, "foreach": None,
                              "params": [0, 1]}]},
        "scalars": [np.float32(0.5), np.int64(7), np.bool_(True), np.float16(1.5),
                    np.uint8(255), np.float64(0.1), np.str_("é")],  # Keras' variable.numpy()
        "arrays": [np.zeros((0, 3)), np.asfortranarray(np.arange(12.0).reshape(3, 4)),
                   np.arange(4, dtype=">i4"), np.array(1, np.int8),
                   np.array([1 + 2j], np.complex64), np.array(["ab", "c"]),
                   np.zeros(2, [("x", "<f4"), ("y", "<i2")]), np.arange(10.0)[::3],
                   np.array([np.nan, -0.0], np.float32)],
        "floats": [0.1, -0.0, float("inf"), float("-inf"), float("nan"), 1e308, 5e-324, 2.0],
        "ints": [0, -1, 2**100, True, False, None],
        "keys": {(1, "a"): "a tuple key", 2: None, "s": "ünïcode ✓", -3: 1.5},
        "empty": [{}, [], (), "", np.array([], np.int32)],
        "lookalikes": [{"tuple": [1]}, {"array": 0}, {"dict": {}}, ["tuple", [1]]],
        "nested": ((1, [2, (3,)]), [[[]]]),
    }


def test_every_type_comes_back_as_itself() -> None:
    payload = sample_payload()
    assert_same(payload, decode(encode(payload)))


def test_the_rng_states_go_on_with_the_same_numbers() -> None:
    state = sample_payload()["rng"]
    loaded = decode(encode(state))
    set_rng_state(state)
    expected = (random.random(), np.random.standard_normal(3).tolist())
    set_rng_state(loaded)
    assert (random.random(), np.random.standard_normal(3).tolist()) == expected


def test_a_torch_optimizer_resumes_bit_for_bit() -> None:
    """Through the real types: Adam's state_dict (tensors as numpy) saved, loaded into a new
    model and optimizer, and the next step equal to the original's bit for bit."""
    torch = pytest.importorskip("torch")
    from hvdkit.adapters.torch.state import to_numpy, to_torch

    def step(model: Any, optimizer: Any, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        optimizer.zero_grad()
        model(torch.randn(8, 5, generator=gen)).square().mean().backward()
        optimizer.step()

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.8, 0.95))
    for seed in range(3):
        step(model, optimizer, seed)
    state = {"model": to_numpy(model.state_dict()), "optimizer": to_numpy(optimizer.state_dict())}
    loaded = decode(encode(state))
    assert_same(state, loaded)
    twin = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    twin_optimizer = torch.optim.AdamW(twin.parameters(), lr=0.5)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in loaded["model"].items()})
    twin_optimizer.load_state_dict(to_torch(loaded["optimizer"]))
    step(model, optimizer, 9)
    step(twin, twin_optimizer, 9)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


class Opaque:
    pass


@pytest.mark.parametrize("value, named", [
    ({"a": [1, {2, 3}]}, "payload['a'][1] is a builtins.set"),
    ({"b": Opaque()}, f"payload['b'] is a {__name__}.Opaque"),
    ({"c": b"bytes"}, "payload['c'] is a builtins.bytes"),
    ({"d": np.array([Opaque()], dtype=object)}, "payload['d'] has dtype object"),
    ({"e": np.ma.masked_array([1.0])}, "payload['e'] is a numpy.ma.MaskedArray"),
    ({frozenset(): 1}, "payload key frozenset() is a builtins.frozenset"),
    ({"f": (np.float32,)}, "payload['f'][0] is a builtins.type"),
])
def test_a_value_it_cannot_hold_is_refused_naming_where(tmp_path: Path, value: Any,
                                                        named: str) -> None:
    with pytest.raises(UnsupportedValue, match=f"^checkpoint {re.escape(named)}"):
        encode(value)
    with pytest.raises(UnsupportedValue):
        save(tmp_path, 1, value)
    assert list(tmp_path.iterdir()) == []  # refused before any file


def test_an_extension_dtype_is_refused() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")  # .npy would read bfloat16 back as raw bytes
    with pytest.raises(UnsupportedValue, match="dtype bfloat16"):
        encode({"w": np.zeros(2, ml_dtypes.bfloat16)})


def _npz(**members: Any) -> bytes:
    out = io.BytesIO()
    np.savez(out, **members)
    return out.getvalue()


def _tree(tree: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(tree).encode(), np.uint8)


@pytest.mark.parametrize("body, reason", [
    (b"", "EOFError"),
    (b"\x80\x04K\x01.", "contains pickled"),  # a pickle of 1
    (_npz(a0=np.zeros(1)), "no tree"),
    (_npz(tree=_tree({"pickle": "x"})), "unexpected node"),
    (_npz(tree=_tree({"array": 3})), "unexpected node"),
    (_npz(tree=_tree({"scalar": 0}), a0=np.zeros(2)), "scalar a0 has shape"),
    (_npz(tree=_tree({"items": [[[1], 2]]})), "unhashable"),
    (_npz(tree=_tree({"array": 0}), a0=np.array([None], dtype=object)), "allow_pickle"),
    (_npz(tree=np.frombuffer(b"\xff\xfe", np.uint8)), "UnicodeDecodeError"),
    (_npz(tree=np.frombuffer(b"[" * 100000, np.uint8)), "RecursionError|JSONDecodeError"),
])
def test_a_body_it_did_not_write_is_refused(body: bytes, reason: str) -> None:
    with pytest.raises(FormatError, match=reason):
        decode(body)

