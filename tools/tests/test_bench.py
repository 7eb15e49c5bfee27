"""`defender-tools bench`: it measures the real agent and prints figures (asserted: only
that there are figures, never how fast: speed is recorded in docs/benchmarks.md)."""

from __future__ import annotations

from defender_tools import bench


def test_latency_measures_each_burst_against_the_agent_process() -> None:
    figures = bench.measure_latency(bench.default_agent_src(), bursts=3)
    assert len(figures.samples) == 3 and all(s > 0 for s in figures.samples)
    assert figures.summary["min"] <= figures.summary["median"] <= figures.summary["max"]


def test_memory_reads_the_agent_process() -> None:
    result = bench.measure_memory(bench.default_agent_src(), flood=200)
    assert set(result) == {"at rest", "after 200 failures"}
    assert all(kib["VmHWM"] >= kib["VmRSS"] > 0 for kib in result.values())
