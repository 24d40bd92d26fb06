"""bench/throughput.py's summary of repeated runs (the bench itself is not a test: bench/README.md)."""

from __future__ import annotations

from types import ModuleType

from tests.conftest import REPO, load_script


def _throughput() -> ModuleType:
    return load_script(REPO / "bench" / "throughput.py", "bench_throughput")


def test_repeated_runs_give_each_ratio_its_median_and_each_process_its_own() -> None:
    # A ratio that is a dict of values (cores by kind of process) once made the summary of a
    # `--repeat` run fail after all its runs ("'<' not supported between 'dict' and 'dict'").
    runs = [{"ratios": {"b/a": 0.876, "b cores during the flow": {"parent": 0.088, "workers": 1.833}}},
            {"ratios": {"b/a": 0.797, "b cores during the flow": {"parent": 0.092, "workers": 1.816}}},
            {"ratios": {"b/a": 0.946, "b cores during the flow": {"parent": 0.089, "workers": 1.828}}},
            {"ratios": {}}]  # a run whose stage failed has no ratios
    assert _throughput().ratio_medians(runs) == {
        "b cores during the flow: parent": {"median": 0.089, "min": 0.088, "max": 0.092, "runs": 3},
        "b cores during the flow: workers": {"median": 1.828, "min": 1.816, "max": 1.833, "runs": 3},
        "b/a": {"median": 0.876, "min": 0.797, "max": 0.946, "runs": 3},
    }
