"""A checkpoint body that holds data only: numpy arrays in an `.npz`, everything else as JSON.

    body = encode(payload)          # bytes: an uncompressed .npz archive
    payload = decode(body)          # the same values, of the same types

Reading never runs code: the archive is read with `np.load(allow_pickle=False)` (an object
array is refused) and the JSON tree names only the types below; anything else is a
`FormatError`. The round trip is exact, so a resumed run goes on bit for bit:

- None, bool, int (any size), float (its repr: -0.0, nan and inf included), str: JSON's own;
- list: a JSON list; tuple `{"tuple": [...]}`; a dict with str keys `{"dict": {...}}`, with
  other keys (an optimizer's int keys) `{"items": [[key, value], ...]}`, order kept;
- numpy array `{"array": i}` and numpy scalar `{"scalar": i}`: member `a<i>` of the archive
  (a scalar as a 0-d array), its dtype, shape and memory order kept.

The tree itself is member `tree`, its UTF-8 bytes as a uint8 array. Any other type is refused
at save time with `UnsupportedValue`, which names where in the payload it is: a bug in the code
that built the payload, never the user's input.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

TREE = "tree"
TAGS = ("tuple", "dict", "items", "array", "scalar")


class UnsupportedValue(TypeError):
    """A payload value the format cannot hold exactly (raised when saving)."""


class FormatError(ValueError):
    """A body that is not one `encode` wrote (raised when loading)."""


def encode(payload: Any) -> bytes:
    """`payload` as the bytes of an .npz archive (see the module docstring)."""
    arrays: list[np.ndarray] = []
    tree = _encode(payload, arrays, "payload")
    text = json.dumps(tree, ensure_ascii=False, separators=(",", ":"))
    members = {f"a{i}": a for i, a in enumerate(arrays)}
    members[TREE] = np.frombuffer(text.encode(), dtype=np.uint8)
    out = io.BytesIO()
    np.savez(out, allow_pickle=False, **members)
    return out.getvalue()


def decode(body: bytes) -> Any:
    """The payload `encode` wrote into `body`; `FormatError` for anything else."""
    try:
        archive = np.load(io.BytesIO(body), allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise FormatError("the body is not an .npz archive")
        with archive:
            names = set(archive.files)
            if TREE not in names:
                raise FormatError("the archive has no tree")
            tree = json.loads(archive[TREE].tobytes().decode())
            return _decode(tree, archive, names)
    except FormatError:
        raise
    except (ValueError, TypeError, OSError, EOFError, KeyError, RecursionError,
            zipfile.BadZipFile) as exc:
        # ValueError includes "Object arrays cannot be loaded when allow_pickle=False".
        raise FormatError(f"{type(exc).__name__}: {str(exc)[:200]}") from None


def _encode(value: Any, arrays: list[np.ndarray], where: str) -> Any:
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if kind is list:
        return [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind is tuple:
        return {"tuple": [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]}
    if kind is dict:
        if all(type(k) is str for k in value):
            return {"dict": {k: _encode(v, arrays, f"{where}[{k!r}]") for k, v in value.items()}}
        return {"items": [[_encode(k, arrays, f"{where} key {k!r}"),
                           _encode(v, arrays, f"{where}[{k!r}]")] for k, v in value.items()]}
    if kind is np.ndarray or isinstance(value, np.generic):
        array = np.asarray(value)
        _check_dtype(array.dtype, where)
        arrays.append(array)
        return {"array" if kind is np.ndarray else "scalar": len(arrays) - 1}
    raise UnsupportedValue(f"checkpoint {where} is a {kind.__module__}.{kind.__qualname__}"
                           ", which the checkpoint format cannot hold (numpy arrays and scalars, "
                           "None, bool, int, float, str, list, tuple and dict only)")


def _check_dtype(dtype: np.dtype, where: str) -> None:
    """Refuse a dtype that .npy cannot write and read back as itself (objects; an extension
    type such as ml_dtypes' bfloat16, which .npy would read back as raw bytes)."""
    same = False
    if not dtype.hasobject:
        try:
            descr = np.lib.format.dtype_to_descr(dtype)
            same = np.lib.format.descr_to_dtype(descr) == dtype
        except (ValueError, TypeError):
            same = False
    if not same:
        raise UnsupportedValue(f"checkpoint {where} has dtype {dtype}, which the "
                               "checkpoint format cannot hold exactly")


def _decode(node: Any, archive: Any, names: set[str]) -> Any:
    if node is None or type(node) in (bool, int, float, str):
        return node
    if type(node) is list:
        return [_decode(v, archive, names) for v in node]
    if type(node) is not dict or len(node) != 1:
        raise FormatError(f"unexpected node {str(node)[:80]!r}")
    (tag, inner), = node.items()
    if tag == "tuple" and type(inner) is list:
        return tuple(_decode(v, archive, names) for v in inner)
    if tag == "dict" and type(inner) is dict:
        return {k: _decode(v, archive, names) for k, v in inner.items()}
    if tag == "items" and type(inner) is list and all(
            type(kv) is list and len(kv) == 2 for kv in inner):
        return {_decode(k, archive, names): _decode(v, archive, names) for k, v in inner}
    if tag in ("array", "scalar") and type(inner) is int and f"a{inner}" in names:
        array = archive[f"a{inner}"]
        if tag == "array":
            return array
        if array.ndim != 0:
            raise FormatError(f"scalar a{inner} has shape {array.shape}")
        return array[()]
    raise FormatError(f"unexpected node {str(node)[:80]!r}")
