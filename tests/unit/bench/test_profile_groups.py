"""`bench.profile.groups`: which part of the flow a py-spy sample is put in."""

from __future__ import annotations

from bench.profile import groups

# Stacks as py-spy's raw format writes them (root first), shortened to the frames that decide.
_ROOT = ["<module> (omni-ledger)", "main (omni_ledger/cli.py)", "cmd_run (omni_ledger/cli.py)"]
_RUN = [*_ROOT, "run (omni_ledger/runner.py)"]


def test_a_runtime_sample_under_the_scripts_module_is_not_an_import() -> None:
    # The main thread's every stack starts at the script's `<module>`: Bytewax's own time
    # (the runner's `run` as the leaf, or an operator shim) must not read as start-up.
    shares = groups([(_RUN, 3), ([*_RUN, "flat_map.<locals>.shim_mapper.<locals>.<genexpr> (operators)"], 1)])
    assert shares == {"Bytewax runtime, operator shims": 1.0}


def test_an_import_is_start_up_wherever_it_happens() -> None:
    lazy = [*_RUN, "_find_and_load (<frozen importlib._bootstrap>)", "<module> (numpy/__init__.py)"]
    early = [*_ROOT[:1], "_find_and_load (<frozen importlib._bootstrap>)"]
    assert groups([(lazy, 1), (early, 1)]) == {"start-up: imports": 1.0}


def test_the_named_step_wins_over_the_runtime_around_it() -> None:
    fold = [*_RUN, "ShardLogic.on_batch (flows/logic.py)", "fold (ledger/fold.py)"]
    admit = [*_RUN, "admit_batch (flows/logic.py)", "by_position (ledger/effects.py)"]
    notices = [*_RUN, "_notices (flows/atp.py)"]
    assert groups([(fold, 2), (admit, 1), (notices, 1), (_RUN, 4)]) == {
        "Bytewax runtime, operator shims": 0.5,
        "fold": 0.25,
        "admission: split, grouping": 0.125,
        "atp notices": 0.125,
    }


def test_a_thread_outside_the_runner_is_other() -> None:
    assert groups([(["_bootstrap (threading.py)", "poll (librdkafka)"], 1)]) == {"other": 1.0}
