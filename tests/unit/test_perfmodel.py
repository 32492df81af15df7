"""The performance model's formulas against hand-computed cases (hvdkit.bench.perfmodel,
collectives, fusion)."""

import math
from dataclasses import replace

import pytest

from hvdkit.bench.bandwidth import busbw
from hvdkit.bench.collectives import (
    Cluster,
    Link,
    parse_link,
    ps_seconds,
    reduce_scatter_seconds,
    ring_allreduce_seconds,
    tcp_payload_share,
)
from hvdkit.bench.fusion import Horovod, expected_exchange, readiness, simulate_exchange
from hvdkit.bench.perfmodel import (
    Workload,
    expected_max_normal,
    host_per_byte,
    overlaps_backward,
    predict_pipeline,
    predict_step,
)
from hvdkit.errors import UserError
from hvdkit.parallel.schedules import ideal_bubble, simulate

GB = Link(1e9, 10e-6)


def test_ring_allreduce_alpha_beta():
    # 2(n-1)α + 2(n-1)/n S/β, n=4, 1 MB, 10 µs, 1 GB/s: 6·10 µs + 1.5 ms
    assert ring_allreduce_seconds(1e6, 4, GB) == pytest.approx(60e-6 + 1.5e-3)
    assert ring_allreduce_seconds(1e6, 1, GB) == 0.0


@pytest.mark.parametrize("n", [2, 3, 8, 64])
def test_ring_busbw_is_the_link_bandwidth(n):
    # nccl-tests: busbw = S/t · 2(n-1)/n; without latency a ring's busbw is β at every n
    t = ring_allreduce_seconds(64e6, n, Link(3e9, 0.0))
    assert busbw(64e6, t, n) == pytest.approx(3e9)


def test_reduce_scatter_is_half_a_ring():
    assert reduce_scatter_seconds(1e6, 4, GB) == pytest.approx(30e-6 + 0.75e-3)
    assert 2 * reduce_scatter_seconds(1e6, 4, GB) == pytest.approx(
        ring_allreduce_seconds(1e6, 4, GB))


def test_parameter_server_traffic_through_the_root():
    one_host = Cluster(4, 1, Link(1e9, 0.0), Link(1e8, 0.0))
    # 3 gradients in and 3 parameter copies out, 1 MB each, at 1 GB/s
    assert ps_seconds(1e6, 1e6, one_host) == pytest.approx(6e-3)
    two_hosts = Cluster(2, 2, Link(1e9, 1e-6), Link(1e8, 1e-5))
    # 1 local rank at 1 GB/s, 2 remote ranks through the root host's 100 MB/s link
    assert ps_seconds(1e6, 1e6, two_hosts) == pytest.approx(2e-5 + 2 * 2e6 / 1e8)


def test_fusion_cycles_and_buffers():
    cost = lambda nbytes: 2e-3  # noqa: E731 — every buffer 2 ms

    def end(ready, fusion_bytes):  # the loop first wakes at 1 ms; backward ends at the last
        last = max(at for at, _ in ready)
        return simulate_exchange(ready, cost, fusion_bytes, 1e-3, 1e-3, last)[0]

    at_end = [(0.0, 10.0), (0.0, 10.0)]
    assert end(at_end, 100) == pytest.approx(3e-3)  # one buffer
    assert end(at_end, 15) == pytest.approx(5e-3)  # two buffers
    # the second gradient misses the first cycle: it waits for the first buffer's end
    assert end([(0.0, 1.0), (2.5e-3, 1.0)], 100) == pytest.approx(5e-3)
    # nothing ready until 4.2 ms: the loop's first cycle after it is at 5 ms
    assert end([(4.2e-3, 1.0)], 100) == pytest.approx(7e-3)


def test_collectives_during_backward_pause_it_when_no_core_is_free():
    cost = lambda nbytes: 0.5e-3  # noqa: E731
    ready = [(1e-3, 1.0), (2e-3, 1.0)]  # in backward's own seconds; backward 2 ms
    # a free core: backward runs beside the first collective (1-1.5 ms), the second
    # gradient is taken at the 2 ms cycle
    assert simulate_exchange(ready, cost, 100, 1e-3, 1e-3, 2e-3) == pytest.approx(
        (2.5e-3, 2e-3))
    # none: backward stops for 1-1.5 ms, so ends at 2.5 ms; the next cycle, 3 ms, takes it
    assert simulate_exchange(ready, cost, 100, 1e-3, 1e-3, 2e-3, on_core=cost) == \
        pytest.approx((3.5e-3, 2.5e-3))
    # none, but 0.4 ms of each collective waits on a network link: backward stops for 0.1 ms
    on_core = lambda nbytes: 0.1e-3  # noqa: E731
    assert simulate_exchange(ready, cost, 100, 1e-3, 1e-3, 2e-3, on_core=on_core) == \
        pytest.approx((3.5e-3, 2.1e-3))


def test_backward_pauses_only_for_the_host_share_of_a_collective_over_a_network():
    work = Workload(parameters=1_000_000, forward=1e-4, backward=2e-4, overlap=False,
                    host_per_byte={"ring": 1e-9})
    slow = Link(1e8, 1e-5)  # 40 ms of transfer for the 4 MB of gradients
    one_host = predict_step(work, Cluster(2, 1, slow, slow), "ring", 32)
    two_hosts = predict_step(work, Cluster(1, 2, slow, slow), "ring", 32)
    # the same collectives; over the network backward runs on while they wait on the link
    assert two_hosts["comm_s"] == pytest.approx(one_host["comm_s"])
    assert two_hosts["step_s"] < one_host["step_s"] - 2e-3


def test_expected_exchange_averages_the_loops_phase():
    free = lambda nbytes: 0.0  # noqa: E731
    end, backward_end = expected_exchange([(0.0, 1.0)], free, Horovod(cycle=1e-3), 0.0)
    assert end == pytest.approx(0.5e-3) and backward_end == 0.0  # half a cycle on average


def test_host_share_reproduces_the_measured_exchange():
    work = Workload(parameters=300_000, forward=1e-3, backward=2e-3, overlap=False,
                    early=False, tensors=(100_000, 200_000))
    link = Link(1e9, 1e-6)
    hvd = Horovod(cycle=1e-3)
    measured = {"ring": 3e-3, "fp16": 2.5e-3}  # alone between 2 ranks of one host
    host = host_per_byte(measured, work, link, hvd)
    # beyond half a cycle and 2α + S/β: 3 − 0.5 − (0.002 + 1.2) ms over 1.2 MB
    assert host["ring"] == pytest.approx((3e-3 - 0.5e-3 - 2e-6 - 1.2e-3) / 1.2e6)
    assert host["fp16"] == pytest.approx((2.5e-3 - 0.5e-3 - 2e-6 - 0.6e-3) / 0.6e6)
    calibrated = replace(work, host_per_byte=host)
    for exchange, seconds in measured.items():  # after a backward of whole cycles (20 ms)
        row = predict_step(calibrated, Cluster(2, 1, link, link), exchange, 10, hvd)
        assert row["exposed_comm_s"] == pytest.approx(seconds)
    # more ranks over a slower link: the host's share stays, the ring's part grows
    four = predict_step(calibrated, Cluster(1, 4, link, Link(1e8, 1e-5)), "ring", 10, hvd)
    assert four["exposed_comm_s"] == pytest.approx(
        0.5e-3 + 6e-5 + 1.5 * 1.2e6 / 1e8 + host["ring"] * 1.2e6)


def test_stragglers_grow_with_the_ranks():
    # E[max of n standard normals]: 1/sqrt(pi) for 2, the known 1.0294 for 4 and 1.4236 for 8
    assert expected_max_normal(1) == 0.0
    assert expected_max_normal(2) == pytest.approx(1 / math.sqrt(math.pi), rel=1e-4)
    assert expected_max_normal(4) == pytest.approx(1.0294, abs=1e-4)
    assert expected_max_normal(8) == pytest.approx(1.4236, abs=1e-4)
    work = Workload(parameters=1000, forward=1e-3, backward=2e-3, jitter=0.1)
    for n in (1, 8):  # 30 ms of compute, spread 10% of it, on every rank
        row = predict_step(work, Cluster(n, 1, GB, GB), "ring", 10)
        assert row["straggle_s"] == pytest.approx(0.1 * 0.030 * expected_max_normal(n))


def test_readiness_in_reverse_order_during_backward():
    assert readiness(1.0, [1.0, 3.0], early=True) == [(0.75, 3.0), (1.0, 1.0)]
    assert readiness(1.0, [1.0, 3.0], early=False) == [(1.0, 1.0), (1.0, 3.0)]
    # measured fractions (a CNN: its big dense layer, last in forward, ready first)
    assert readiness(1.0, [1.0, 3.0], early=True, fractions=[1.0, 0.2]) == \
        [(1.0, 1.0), (0.2, 3.0)]


def test_gradients_ready_early_hide_more_of_the_exchange():
    """A CNN's dense weights, ready at a fifth of backward, leave the rest of backward to
    hide their transfer behind; by bytes they would be ready at the end."""
    work = Workload(parameters=1_000_000, forward=1e-4, backward=2e-4, overlap=False,
                    tensors=(100_000, 900_000))
    slow = Link(2e8, 1e-5)  # 20 ms for the 4 MB
    by_bytes = predict_step(work, Cluster(1, 2, slow, slow), "ring", 100)
    measured = predict_step(replace(work, ready=(1.0, 0.2)), Cluster(1, 2, slow, slow),
                            "ring", 100)
    # backward is 20 ms; the dense layer's 18 ms transfer starts at 4 ms of it, not at 18
    assert by_bytes["step_s"] - measured["step_s"] == pytest.approx(14e-3, abs=1e-3)


def test_parse_link():
    link = parse_link("25Gbit/s,10us")
    assert link.bandwidth == pytest.approx(25e9 / 8) and link.latency == pytest.approx(1e-5)
    assert parse_link("1.5GB/s, 0.5ms") == Link(1.5e9, 5e-4)
    for bad in ("25Gbit/s", "fast,10us", "25Gbit/s,10parsecs", "0Gbit/s,1us"):
        with pytest.raises(UserError):
            parse_link(bad)


def test_tcp_payload_share():
    # 1500-byte packets: 1448 of payload (IPv4 20, TCP 20 + timestamps 12) in 1538 bytes on
    # a wire (Ethernet 14 + FCS 4 + preamble 8 + gap 12) or 1514 counted by a qdisc
    assert tcp_payload_share() == pytest.approx(1448 / 1538)
    assert tcp_payload_share(framing=14) == pytest.approx(1448 / 1514)
    assert tcp_payload_share(mtu=9000) == pytest.approx(8948 / 9038)
    with pytest.raises(UserError):
        tcp_payload_share(mtu=40)


def test_a_token_bucket_burst_shortens_the_exposed_transfer():
    # CNN-like: 30 ms compute (10 forward), one 1 MB tensor ready at the start of backward,
    # a 10 MB/s link: 100 ms transfer from t=10 ms of the step; backward ends at 30 ms
    work = Workload(parameters=250_000, forward=10e-3, backward=20e-3, tensors=(250_000,),
                    ready=(0.0,), host_per_byte={})
    wire, bucket = Link(1e7, 0.0), Link(1e7, 0.0, burst=100e3)
    plain = predict_step(work, Cluster(1, 2, wire, wire), "ring", 1)
    burst = predict_step(work, Cluster(1, 2, bucket, bucket), "ring", 1)
    # 10 ms of forward refill 100 KB, which pass at once: 10 ms sooner
    assert plain["step_s"] - burst["step_s"] == pytest.approx(10e-3, abs=1e-4)
    assert bucket.credit_seconds(2e-3) == pytest.approx(2e-3)  # refilled 20 KB only
    # a burst larger than the step's bytes saves their transfer, not the latency
    late = replace(work, tensors=(2_500,), ready=(1.0,))
    slow = Link(1e7, 5e-3, burst=1e9)
    small = predict_step(late, Cluster(1, 2, slow, slow), "ring", 1)
    assert small["exposed_comm_s"] >= 2 * slow.latency
    # a transfer hidden under backward stays hidden: nothing to save
    hidden = replace(work, tensors=(2_500,))
    assert (predict_step(hidden, Cluster(1, 2, bucket, bucket), "ring", 1)["step_s"]
            == pytest.approx(predict_step(hidden, Cluster(1, 2, wire, wire), "ring", 1)["step_s"]))


def test_one_rank_is_compute_only():
    work = Workload(parameters=1000, forward=1e-3, backward=2e-3, fixed=1e-3)
    row = predict_step(work, Cluster(1, 1, GB, GB), "ring", 10)
    assert row["step_s"] == pytest.approx(0.031) and row["exposed_comm_s"] == 0.0
    assert row["samples_per_sec"] == pytest.approx(10 / 0.031)


def test_ring_without_overlap_is_fully_exposed():
    work = Workload(parameters=250_000, forward=1e-3, backward=2e-3, overlap=False,
                    tensors=(250_000,))
    cluster = Cluster(2, 1, Link(1e9, 0.0), GB)
    hvd = Horovod(cycle=1e-6)
    row = predict_step(work, cluster, "ring", 10, hvd)
    # 1 MB of float32 gradients, 2·(1/2)·1 MB / 1 GB/s = 1 ms after the 20 ms backward
    assert row["exposed_comm_s"] == pytest.approx(1e-3 + 0.5e-6, rel=1e-6)
    fp16 = predict_step(work, cluster, "fp16", 10, hvd)
    assert fp16["exposed_comm_s"] == pytest.approx(0.5e-3 + 0.5e-6, rel=1e-6)  # + half a cycle


def test_overlap_hides_all_but_the_last_gradient():
    work = Workload(parameters=400, forward=1e-3, backward=2e-3, tensors=(100,) * 4,
                    itemsize=4)
    link = Link(400 / 1e-3, 0.0)  # one 400-byte tensor's ring step (n=2) takes 1 ms
    row = predict_step(work, Cluster(2, 1, link, link), "ring", 10, Horovod(cycle=1e-6))
    # backward 20 ms; gradients ready at 5, 10, 15, 20 ms; only the last one's 1 ms shows
    assert row["exposed_comm_s"] == pytest.approx(1e-3, rel=1e-2)


def test_overlap_needs_pytorch_and_a_free_core():
    # PyTorch's hooks overlap on a GPU, or on a CPU host with a core left over
    assert overlaps_backward("torch", "gpu", 8, 4, 16)
    assert overlaps_backward("torch", "cpu", 2, 1, 4)
    # the ranks' threads fill the CPU host's cores: the exchange takes its time from compute
    assert not overlaps_backward("torch", "cpu", 2, 1, 2)
    assert not overlaps_backward("torch", "cpu", 4, 4, 16)
    # TensorFlow's grouped allreduce waits for the whole backward
    assert not overlaps_backward("tensorflow", "gpu", 1, 1, 16)


@pytest.mark.parametrize("name", ["gpipe", "1f1b"])
def test_pipeline_span_and_bubble_against_the_simulator(name):
    # forward 1, backward 2 per sample, 8 micro-batches of 1 over 4 stages, free messages
    work = Workload(parameters=1000, forward=1.0, backward=2.0)
    row = predict_pipeline(work, Cluster(4, 1, Link(1e9, 0.0), GB), name, 4, 8, batch=8)
    assert row["step_s"] == pytest.approx((8 + 4 - 1) * 0.75)  # (m + p − 1)(F + B)
    assert row["bubble"] == pytest.approx(ideal_bubble(name, 4, 8))
    assert row["bubble"] == pytest.approx(max(simulate(name, 4, 8).idle))


def test_pipeline_messages_lengthen_the_step():
    work = Workload(parameters=1000, forward=1.0, backward=2.0, activation_bytes=1e6)
    free = predict_pipeline(work, Cluster(4, 1, Link(1e12, 0.0), GB), "1f1b", 4, 8, 8)
    slow = predict_pipeline(work, Cluster(4, 1, Link(1e7, 0.0), GB), "1f1b", 4, 8, 8)
    # each F and B carries one 1 MB message at 10 MB/s (0.1 s): (m + p − 1)(F + B + 0.2)
    assert slow["step_s"] - free["step_s"] == pytest.approx(11 * 0.2, rel=1e-3)


def test_overlay_prefers_the_compute_only_point_at_the_same_np():
    from hvdkit.bench.compare import overlay

    common = {"framework": "tensorflow", "controller": "mpi", "compression": "none",
              "parameters": 250_000, "global_batch": 10}
    rows = [{**common, "sync": "allreduce", "np": 1, "samples_per_sec": 1000.0},
            {**common, "sync": "none", "np": 2, "samples_per_sec": 1600.0, "step_jitter": 0.1},
            {**common, "sync": "allreduce", "np": 2, "samples_per_sec": 1400.0}]
    overlay(rows, Link(1e9, 0.0))
    assert "predicted_samples_per_sec" not in rows[1]  # the calibration point itself
    # 2 ranks sharing the host: 6.25 ms of compute for 5 samples each (not np=1's 5 ms),
    # 0.1 of it spread (straggling 0.56 x), then the 1 MB exchange after backward
    compute = 0.00625
    wait = sum(((k + 0.5) / 8 - (compute * 2 / 3 / 1e-3) % 1) % 1 for k in range(8)) / 8 * 1e-3
    step = compute * (1 + 0.1 / math.sqrt(math.pi)) + wait + 1e-3
    assert rows[2]["predicted_samples_per_sec"] == pytest.approx(10 / step, rel=1e-3)


def test_breakdown_of_a_timed_window():
    from hvdkit.bench.compare import breakdown

    shares = breakdown({"seconds": 10.0, "step_seconds": 9.0, "comm_seconds": 3.0})
    assert shares == pytest.approx({"compute_share": 0.6, "exposed_comm_share": 0.3,
                                    "rest_share": 0.1})
    # TensorFlow: the exchange is inside the compiled step, not apart
    assert breakdown({"seconds": 10.0, "step_seconds": 9.0}) == pytest.approx(
        {"compute_share": 0.9, "rest_share": 0.1})


def test_overlay_calibrates_on_the_np1_point():
    from hvdkit.bench.compare import overlay

    common = {"framework": "tensorflow", "controller": "mpi", "sync": "allreduce",
              "compression": "none", "parameters": 250_000}
    rows = [{**common, "np": 1, "global_batch": 10, "samples_per_sec": 1000.0},
            {**common, "np": 2, "global_batch": 10, "samples_per_sec": 1600.0}]
    overlay(rows, Link(1e9, 0.0))
    assert rows[0]["prediction_error"] == pytest.approx(0.0)
    # np=2: 5 samples per rank, 5 ms compute; backward (2/3) ends 3.33 ms into it; TF's
    # allreduce waits for Horovod's next cycle (the loop's phase averaged over 8 points of
    # its 1 ms cycle), then 1 MB at 1 GB/s: 1 ms
    wait = sum(((k + 0.5) / 8 - 1 / 3) % 1 for k in range(8)) / 8 * 1e-3
    predicted = rows[1]["predicted_samples_per_sec"]
    assert predicted == pytest.approx(10 / (0.005 + wait + 1e-3))
    assert rows[1]["prediction_error"] == pytest.approx(predicted / 1600 - 1)
