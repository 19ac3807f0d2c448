"""Every benchmark runs: one tiny round each (`--smoke`), so that none rots.

Timing is not checked (see benchmarks/README.md). One backend runs them: on
torch nothing compiles, so each costs seconds; the JAX-only distributed
benchmark runs on JAX.
"""

import importlib
import pathlib

import pytest

from conftest import BACKEND

BENCHMARKS = pathlib.Path(__file__).parents[1] / "benchmarks"
# script: the backend whose test run smoke-tests it.
TIMING = {
    "head_to_head": "torch",
    "overhead": "torch",
    "step_overhead": "torch",
    "pos_mlm_step_time": "torch",
    "mim_step_time": "torch",
    "held_out_cost": "torch",
    "downstream_cost": "torch",
    "distributed_overhead": "jax",
}


@pytest.fixture
def harness(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module("harness")
    monkeypatch.setattr(module, "SMOKE", True)
    return module


def test_every_timing_script_is_smoke_tested():
    """A script on the shared harness is a timing benchmark (research lives in benchmarks/research/)."""
    scripts = {p.stem for p in BENCHMARKS.glob("*.py") if "import harness" in p.read_text()}
    assert scripts - {"workloads", "summary"} == set(TIMING)


@pytest.mark.parametrize("name", sorted(TIMING))
def test_benchmark_runs_one_tiny_round(name, harness):
    if BACKEND != TIMING[name]:
        pytest.skip(f"smoke-tested on {TIMING[name]}")
    module = importlib.import_module(name)
    if name == "distributed_overhead":
        rows = module.measure(1, 1)  # on the devices there are
    else:
        rows = list(module.measure_backend(**harness.smoke_values(module.OPTIONS)))
        assert module.markdown_table(rows).count("\n") == len(rows) + 1
    assert rows and all(value == value for row in rows for value in row.values() if isinstance(value, float))


def test_summary_reads_every_table(harness):
    """The summary's rows come from the benchmarks' own rows (fed here by hand)."""
    summary = importlib.import_module("summary")
    h2h = [
        {"backend": "jax", "variant": "PyTorch Group DRO loop", "ms": 1.0, "vs_loop": 1.0},
        {"backend": "jax", "variant": "MinimaxModel + EG", "ms": 0.6, "vs_loop": 0.6, "baseline": "plain Keras",
         "vs_baseline": 1.2, "added_us": 100.0},
    ]
    lines = summary.summary_table({"head_to_head": h2h, "pos_mlm_step_time": [], "mim_step_time": []})
    row = next(line for line in lines.splitlines() if "MinimaxModel + EG" in line)
    assert "0.60" in row and row.rstrip(" |").endswith("no")


@pytest.mark.parametrize("name", ["dro_failure_cases", "held_out_gram_time", "main_job", "recipe_results"])
def test_research_script_imports(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS / "research"))
    assert callable(importlib.import_module(name).main)


def test_recipe_results_pair_each_arm_with_uniform_on_the_same_seed(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS / "research"))
    results = importlib.import_module("recipe_results")
    run = lambda a, b: {"accuracy": {"noun": a, "verb": b}}
    report = {"recipe": "pos-mlm", "backend": "jax", "seeds": [0, 1], "rules": {
        "uniform": {"runs": [run(0.1, 0.3), run(0.2, 0.4)], "task_weights": {"noun": 0.5, "verb": 0.5}},
        "eg@held_out": {"runs": [run(0.2, 0.2), run(0.1, 0.4)], "task_weights": {"noun": 0.7, "verb": 0.3}},
    }}
    table = results.markdown(report)
    # Worst group per seed: uniform 0.1, 0.2; eg 0.2, 0.1 -> paired +0.1, -0.1; mean 0.2, 0.25 against 0.2, 0.3 -> 0.0, -0.05.
    assert "| eg@held_out | +0.000 ± 0.141 | -0.025 ± 0.035 |" in table
    assert "| **worst** | 0.150 ± 0.071 | 0.150 ± 0.071 |" in table
