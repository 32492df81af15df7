"""A description of a cluster one does not have, for `hvdkit predict DESCRIPTION.yaml`.

    model:    {parameters: 25557032, dtype: float32}        # or gradient_bytes: 102228128
    compute:  {samples_per_sec: 400, batch_per_device: 64}  # one device; or seconds_per_sample
    cluster:
      devices_per_host: 8
      hosts: [1, 2, 4, 8, 64]
      intra_host: {bandwidth: 100GB/s, latency: 5us}
      inter_host: {bandwidth: 25Gbit/s, latency: 10us}

Optional: model.tensors (elements per parameter tensor, forward order), model.powersgd_ratio,
model.activation_bytes_per_sample (pipelines), compute.backward_share (2/3), compute.overlap
(true: allreduce during backward, as Horovod's PyTorch hooks), compute.fixed_seconds (per
step), compute.jitter (a device's step-to-step spread, standard deviation ÷ mean: stragglers),
horovod {fusion_mb, cycle_ms}, pipeline {stages, microbatches, virtual (2), schedules (all)}.
What cannot give a number (no compute time, a link without bandwidth, an empty list of hosts,
a string where a number belongs) is a UserError naming the field: one line, exit 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hvdkit.bench.collectives import Link, parse_latency, parse_rate
from hvdkit.bench.fusion import Horovod
from hvdkit.bench.perfmodel import Workload
from hvdkit.errors import UserError
from hvdkit.parallel.schedules import SCHEDULES

ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
KEYS = {
    "": {"model", "compute", "cluster", "horovod", "pipeline", "name"},
    "model": {"parameters", "gradient_bytes", "dtype", "tensors", "powersgd_ratio",
              "activation_bytes_per_sample"},
    "compute": {"samples_per_sec", "seconds_per_sample", "batch_per_device", "backward_share",
                "overlap", "fixed_seconds", "jitter"},
    "cluster": {"devices_per_host", "hosts", "intra_host", "inter_host"},
    "horovod": {"fusion_mb", "cycle_ms"},
    "pipeline": {"stages", "microbatches", "virtual", "schedules"},
    "link": {"bandwidth", "latency"},
}


@dataclass
class Description:
    work: Workload
    batch: float
    devices_per_host: int
    hosts: list[int]
    intra: Link
    inter: Link
    horovod: Horovod = field(default_factory=Horovod)
    pipeline: dict[str, Any] | None = None


def is_description(path: str | Path) -> bool:
    """A description has a `cluster` or `compute` section and no `data` (a recipe's)."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(doc, dict) and "data" not in doc and bool({"cluster", "compute"} & set(doc))


def _section(doc: dict[str, Any], name: str, where: str, required: bool = True) -> dict:
    value = doc.get(name)
    if value is None:
        if required:
            raise UserError(f"{where}: no '{name}' section; see hvdkit/bench/describe.py")
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where}: '{name}' must be a mapping")
    _check_keys(value, KEYS[name], f"{where}: {name}")
    return value


def _check_keys(value: dict, valid: set[str], where: str) -> None:
    unknown = sorted(set(value) - valid)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(sorted(valid))}")


def _link(cluster: dict, name: str, where: str) -> Link:
    value = cluster.get(name)
    if not isinstance(value, dict) or value.get("bandwidth") is None:
        raise UserError(f"{where}: cluster.{name} needs a bandwidth, e.g. "
                        f"{{bandwidth: 25Gbit/s, latency: 10us}}; it cannot be calibrated here")
    _check_keys(value, KEYS["link"], f"{where}: cluster.{name}")
    latency = parse_latency(value.get("latency", 0.0))
    if latency < 0:
        raise UserError(f"{where}: cluster.{name}.latency must be 0 or more, got "
                        f"{value['latency']!r}")
    return Link(parse_rate(value["bandwidth"]), latency)


def _positive(value: Any, what: str, where: str) -> float:
    number = _number(value, what, where)
    if number <= 0:
        raise UserError(f"{where}: {what} must be positive, got {value!r}")
    return number


def _number(value: Any, what: str, where: str) -> float:
    """A finite number: YAML's, or a string that reads as one (PyYAML leaves 1e-3 a string);
    not true/false, a list, a mapping or nothing."""
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError
        number = float(value)
        if not math.isfinite(number):
            raise ValueError
    except ValueError:
        raise UserError(f"{where}: {what} must be a number, got {value!r}") from None
    return number


def _whole(value: Any, what: str, where: str) -> int:
    """A positive whole number (4, or 4.0; not 1.5)."""
    number = _positive(value, what, where)
    if number != int(number):
        raise UserError(f"{where}: {what} must be a whole number, got {value!r}")
    return int(number)


def _optional(value: Any, what: str, where: str, low: float = 0.0,
               high: float | None = None) -> float:
    """An optional field's value (or its default), a number in [low, high]."""
    number = _number(value, what, where)
    if number < low or (high is not None and number > high):
        bounds = f"between {low:g} and {high:g}" if high is not None else f"{low:g} or more"
        raise UserError(f"{where}: {what} must be {bounds}, got {value!r}")
    return number


def _flag(value: Any, what: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{where}: {what} must be true or false, got {value!r}")
    return value


def _list(value: Any, what: str, where: str, example: str) -> list:
    """A non-empty list (a single value: a list of it)."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise UserError(f"{where}: {what} is empty; give at least one, e.g. {what}: {example}")
    return items


def _tensors(model: dict, where: str) -> tuple[float, ...]:
    value = model.get("tensors")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise UserError(f"{where}: model.tensors must be a list of elements per parameter "
                        f"tensor, got {value!r}")
    return tuple(_positive(t, "each of model.tensors", where) for t in value)


def _pipeline(doc: dict, where: str) -> dict[str, Any] | None:
    """The pipeline section checked: schedules known, stages and microbatches whole numbers."""
    section = _section(doc, "pipeline", where, required=False)
    if not section:
        return None
    schedules = _list(section.get("schedules", list(SCHEDULES)), "pipeline.schedules", where,
                      "[1f1b]")
    unknown = [s for s in schedules if s not in SCHEDULES]
    if unknown:
        raise UserError(f"{where}: pipeline.schedules has {unknown[0]!r}; valid: "
                        f"{', '.join(SCHEDULES)}")
    out: dict[str, Any] = {"schedules": schedules}
    for key in ("stages", "microbatches"):
        if section.get(key) is None:
            raise UserError(f"{where}: pipeline needs {key}, e.g. {{stages: 4, microbatches: 8, "
                            f"schedules: [1f1b]}}")
        out[key] = _whole(section[key], f"pipeline.{key}", where)
    out["virtual"] = _whole(section.get("virtual", 2), "pipeline.virtual", where)
    return out


def load_description(path: str | Path) -> Description:
    """The description at `path`, every field checked: what cannot give a number (a missing
    or empty field, a wrong type, a value out of range) is one UserError naming the field."""
    where = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{where}: cannot read the description ({exc})".splitlines()[0]) \
            from None
    if not isinstance(doc, dict):
        raise UserError(f"{where}: a description is a mapping with model, compute, cluster")
    _check_keys(doc, KEYS[""], where)
    model, compute = _section(doc, "model", where), _section(doc, "compute", where)
    cluster = _section(doc, "cluster", where)
    dtype = model.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype not in ITEMSIZE:
        raise UserError(f"{where}: model.dtype {dtype!r}; valid: {', '.join(ITEMSIZE)}")
    if model.get("parameters") is not None:
        parameters = _whole(model["parameters"], "model.parameters", where)
    elif model.get("gradient_bytes") is not None:
        parameters = int(_positive(model["gradient_bytes"], "model.gradient_bytes", where)
                         // ITEMSIZE[dtype])
    else:
        raise UserError(f"{where}: model needs parameters or gradient_bytes")
    batch = _positive(compute.get("batch_per_device"), "compute.batch_per_device", where)
    if compute.get("seconds_per_sample") is not None:
        per_sample = _positive(compute["seconds_per_sample"], "compute.seconds_per_sample",
                               where)
    elif compute.get("samples_per_sec") is not None:
        per_sample = 1 / _positive(compute["samples_per_sec"], "compute.samples_per_sec", where)
    else:
        raise UserError(f"{where}: compute needs samples_per_sec or seconds_per_sample "
                        "(one device's speed); it cannot be calibrated from a description")
    share = _optional(compute.get("backward_share", 2 / 3), "compute.backward_share", where,
                      high=1.0)
    overlap = _flag(compute.get("overlap", True), "compute.overlap", where)
    work = Workload(parameters=parameters, forward=per_sample * (1 - share),
                    backward=per_sample * share, itemsize=ITEMSIZE[dtype],
                    fixed=_optional(compute.get("fixed_seconds", 0.0), "compute.fixed_seconds",
                                    where),
                    tensors=_tensors(model, where), overlap=overlap, early=overlap,
                    jitter=_optional(compute.get("jitter", 0.0), "compute.jitter", where),
                    powersgd_ratio=_positive(model.get("powersgd_ratio", 8.0),
                                             "model.powersgd_ratio", where),
                    activation_bytes=_optional(model.get("activation_bytes_per_sample", 0.0),
                                               "model.activation_bytes_per_sample", where))
    hosts = [_whole(h, "cluster.hosts", where) for h in
             _list(cluster.get("hosts", [1]), "cluster.hosts", where, "[1, 2, 4]")]
    devices = _whole(cluster.get("devices_per_host"), "cluster.devices_per_host", where)
    intra = _link(cluster, "intra_host", where) if devices > 1 else Link(1.0, 0.0)
    inter = _link(cluster, "inter_host", where) if max(hosts) > 1 else intra
    hvd = _section(doc, "horovod", where, required=False)
    horovod = Horovod(fusion_bytes=_positive(hvd.get("fusion_mb", 128), "horovod.fusion_mb",
                                             where) * 1024 * 1024,
                      cycle=_positive(hvd.get("cycle_ms", 1.0), "horovod.cycle_ms",
                                      where) * 1e-3)
    return Description(work, batch, devices, hosts, intra, inter, horovod,
                       _pipeline(doc, where))
