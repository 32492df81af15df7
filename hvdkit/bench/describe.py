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
horovod {fusion_mb, cycle_ms}, pipeline {stages, microbatches, virtual, schedules}.
What cannot give a number (no compute time, a link without bandwidth) is a UserError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hvdkit.bench.perfmodel import Horovod, Link, Workload, parse_latency, parse_rate
from hvdkit.errors import UserError

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
    return Link(parse_rate(value["bandwidth"]), parse_latency(value.get("latency", 0.0)))


def _positive(value: Any, what: str, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {what} must be a number, got {value!r}") from None
    if number <= 0:
        raise UserError(f"{where}: {what} must be positive, got {value!r}")
    return number


def load_description(path: str | Path) -> Description:
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
    if dtype not in ITEMSIZE:
        raise UserError(f"{where}: model.dtype {dtype!r}; valid: {', '.join(ITEMSIZE)}")
    if model.get("parameters") is not None:
        parameters = int(_positive(model["parameters"], "model.parameters", where))
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
    jitter = float(compute.get("jitter", 0.0))
    if jitter < 0:
        raise UserError(f"{where}: compute.jitter must be 0 or more")
    share = float(compute.get("backward_share", 2 / 3))
    if not 0 <= share <= 1:
        raise UserError(f"{where}: compute.backward_share must be between 0 and 1")
    work = Workload(parameters=parameters, forward=per_sample * (1 - share),
                    backward=per_sample * share, itemsize=ITEMSIZE[dtype],
                    fixed=float(compute.get("fixed_seconds", 0.0)),
                    tensors=tuple(float(t) for t in model.get("tensors") or ()),
                    overlap=bool(compute.get("overlap", True)),
                    early=bool(compute.get("overlap", True)), jitter=jitter,
                    powersgd_ratio=_positive(model.get("powersgd_ratio", 8.0),
                                             "model.powersgd_ratio", where),
                    activation_bytes=float(model.get("activation_bytes_per_sample", 0.0)))
    hosts = cluster.get("hosts", [1])
    hosts = [int(_positive(h, "cluster.hosts", where)) for h in
             (hosts if isinstance(hosts, list) else [hosts])]
    devices = int(_positive(cluster.get("devices_per_host"), "cluster.devices_per_host", where))
    intra = _link(cluster, "intra_host", where) if devices > 1 else Link(1.0, 0.0)
    inter = _link(cluster, "inter_host", where) if max(hosts) > 1 else intra
    hvd = _section(doc, "horovod", where, required=False)
    horovod = Horovod(fusion_bytes=float(hvd.get("fusion_mb", 128)) * 1024 * 1024,
                      cycle=float(hvd.get("cycle_ms", 1.0)) * 1e-3)
    pipeline = _section(doc, "pipeline", where, required=False) or None
    return Description(work, batch, devices, hosts, intra, inter, horovod, pipeline)
