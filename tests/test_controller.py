"""The controller's pure decisions (`crash_repairs`, `choose_work`, pack grouping) on
generated runs, with W&B's real engine behind the proposals; no store, no processes."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent.sweep.controller import (
    KIND_SAMPLE,
    MAX_HEARTBEAT_S,
    MAX_HEARTBEAT_TIMEOUT_S,
    MIN_BEATS_PER_TIMEOUT,
    MIN_HEARTBEAT_S,
    PROPOSALS_PER_MEMBER,
    check_heartbeat,
    choose_work,
    crash_repairs,
    expected_runs,
    proposal_budget,
    repeatable,
    runs_left,
)
from agent.sweep.engine import proposed_params
from agent.sweep.store import STATES, Run
from util.errors import UserError

# A grid whose points fall into two pack keys (model) of 6 points each.
PARAMETERS = {"model": {"values": ["dense", "cnn"]}, "lr": {"values": [0.1, 0.01, 0.001]},
              "seed": {"values": [0, 1]}}
POINTS = [dict(zip(PARAMETERS, values)) for values in
          itertools.product(*(spec["values"] for spec in PARAMETERS.values()))]
NOW = 1000.0
# The engine is W&B's and validates the sweep on every call (a few ms): few examples suffice.
ENGINE = settings(max_examples=40, deadline=None)
PURE = settings(max_examples=300, deadline=None)


def grid(**extra) -> dict:
    return {"method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
            "parameters": PARAMETERS, **extra}


def model_key(config: dict) -> str:
    return config["model"]


def point(config: dict) -> tuple:
    """A config as a grid point, whatever the order of its keys."""
    return tuple(sorted(config.items()))


@st.composite
def stored_runs(draw, states=STATES, max_size=12):
    """Runs as a store could hold them: distinct grid points in order of creation, any
    state (a pending run has trained no epoch), and some crashed runs repeated once (a
    repeat may itself be in any state; pending, it starts from scratch or continues from
    the crashed run's last epoch, store.insert_repeat)."""
    points = draw(st.lists(st.sampled_from(range(len(POINTS))), unique=True,
                           max_size=max_size))
    runs: list[Run] = []
    for index in points:
        state = draw(st.sampled_from(states))
        runs.append(Run(
            id=f"r{len(runs)}", seq=len(runs) + 1, config=POINTS[index], state=state,
            epoch=0 if state == "pending" else draw(st.integers(0, 5)),
            heartbeat=draw(st.none() | st.floats(0, NOW)) if state == "running" else None))
        if state == "crashed" and draw(st.booleans()):
            crashed = runs[-1]
            again = draw(st.sampled_from(states))
            runs.append(Run(id=f"r{len(runs)}", seq=len(runs) + 1, config=POINTS[index],
                            state=again, requeued_from=crashed.id,
                            epoch=draw(st.sampled_from([0, crashed.epoch]) if again == "pending"
                                       else st.integers(0, 5)),
                            heartbeat=draw(st.floats(0, NOW))))
    return runs


def resumable(run: Run) -> bool:
    """A run that continues from a checkpoint: preempted, or a crashed run's repeat that
    starts from the crashed run's last epoch."""
    return run.state == "preempted" or (run.state == "pending" and run.epoch > 0)


# --- crash repairs ----------------------------------------------------------------------------

@PURE
@given(stored_runs(), st.floats(0.01, NOW))
def test_crash_repairs_are_the_silent_runs_and_each_crash_is_repeated_once(runs, timeout):
    stale, requeue = crash_repairs(runs, NOW, timeout)
    assert stale == [r.id for r in runs
                     if r.state == "running" and (r.heartbeat or 0) < NOW - timeout]
    repeated = {r.requeued_from for r in runs}
    wanted = [r.id for r in runs if (r.state == "crashed" or r.id in stale)
              and r.requeued_from is None and r.id not in repeated]
    assert [r.id for r in requeue] == wanted

    # Applied, the repairs leave nothing to repair: no crash is ever repeated twice.
    after = [Run(**{**r.__dict__, "state": "crashed"}) if r.id in stale else r for r in runs]
    after += [Run(id=f"repeat-{r.id}", seq=len(after) + i + 1, config=r.config,
                  state="pending", requeued_from=r.id) for i, r in enumerate(requeue)]
    assert crash_repairs(after, NOW, timeout) == ([], [])


@PURE
@given(stored_runs(), st.floats(0.01, NOW))
def test_a_repeat_of_our_trainer_is_repeated_again_only_an_epoch_further(runs, timeout):
    """With our trainer (`resumable`: a repeat continues from the checkpoint of the run it
    repeats), a crashed repeat is repeated in turn when it recorded an epoch past that run;
    each crash still once. Every chain of repeats gets an epoch further at each link, so it
    ends within the run's epochs."""
    stale, requeue = crash_repairs(runs, NOW, timeout, resumable=True)
    epochs = {r.id: r.epoch for r in runs}
    repeated = {r.requeued_from for r in runs}
    wanted = [r.id for r in runs if (r.state == "crashed" or r.id in stale)
              and r.id not in repeated
              and (r.requeued_from is None or r.epoch > epochs[r.requeued_from])]
    assert [r.id for r in requeue] == wanted
    after = [Run(**{**r.__dict__, "state": "crashed"}) if r.id in stale else r for r in runs]
    after += [Run(id=f"repeat-{r.id}", seq=len(after) + i + 1, config=r.config,
                  state="pending", requeued_from=r.id, epoch=r.epoch)
              for i, r in enumerate(requeue)]
    assert crash_repairs(after, NOW, timeout, resumable=True) == ([], [])
    # A repeat that crashed with no epoch gained, or whose run keeps no checkpoint, ends it.
    for run in requeue:
        if run.requeued_from:
            assert run.epoch > epochs[run.requeued_from]
            unsaved = Run(**{**run.__dict__, "config": {**run.config, "checkpoint": False}})
            assert not repeatable(unsaved, epochs, resumable=True)
            assert not repeatable(run, epochs, resumable=False)


def test_a_run_beating_within_the_timeout_is_left_alone():
    alive = Run(id="a", seq=1, config=POINTS[0], state="running", heartbeat=NOW - 59.9)
    silent = Run(id="s", seq=2, config=POINTS[1], state="running", heartbeat=NOW - 60.1)
    never = Run(id="n", seq=3, config=POINTS[2], state="running", heartbeat=None)
    stale, requeue = crash_repairs([alive, silent, never], NOW, 60.0)
    assert stale == ["s", "n"] and [r.id for r in requeue] == ["s", "n"]


# --- choose_work with one run: exactly the rule of the single-run claim -------------------------

def single_run_rule(sweep_config: dict, runs: list[Run]) -> tuple:
    """The claim of one run as it was before packs: first the first run that resumes from
    a checkpoint (preempted, or a crashed run's repeat from its last epoch), else first
    pending, else the engine's proposal under run_cap, else wait while running, else
    done."""
    for waiting in ([r for r in runs if resumable(r)], [r for r in runs if r.state == "pending"]):
        if waiting:
            return ("take", waiting[0].id)
    cap = sweep_config.get("run_cap")
    if not cap or sum(not r.requeued_from for r in runs) < cap:
        params = proposed_params(sweep_config, runs)
        if params is not None:
            return ("start", params)
    return ("wait" if any(r.state == "running" for r in runs) else "done",)


def as_tuple(work) -> tuple:
    if work.kind != "run":
        return (work.kind,)
    assert len(work.take) + len(work.start) == 1 and not work.park
    return ("take", work.take[0].id) if work.take else ("start", work.start[0])


@ENGINE
@given(stored_runs(), st.none() | st.integers(1, 14), st.booleans())
def test_one_run_claims_follow_the_single_run_rule(runs, run_cap, with_key):
    config = grid(run_cap=run_cap) if run_cap else grid()
    work = choose_work(config, runs, 1, model_key if with_key else None)
    assert as_tuple(work) == single_run_rule(config, runs)


# --- packs ------------------------------------------------------------------------------------

@PURE
@given(stored_runs(), st.integers(1, 6))
def test_preempted_runs_resume_together_by_pack_key_and_epoch(runs, count):
    preempted = [r for r in runs if resumable(r)]  # and repeats from a crashed run's epoch
    assume(preempted)
    work = choose_work(grid(), runs, count, model_key)
    group = [r for r in preempted if (model_key(r.config), r.epoch)
             == (model_key(preempted[0].config), preempted[0].epoch)]
    assert work.kind == "run" and work.take == group[:count]
    assert work.start == [] and work.park == []  # a resumed pack is not mixed with new runs


@PURE
@given(stored_runs(states=("pending", "pending", "running", "finished")), st.integers(1, 6))
def test_pending_runs_are_taken_oldest_first_with_the_oldest_ones_key(runs, count):
    pending = [r for r in runs if r.state == "pending"]
    assume(pending)
    work = choose_work(grid(), runs, count, model_key)
    key = model_key(pending[0].config)
    assert work.take == [r for r in pending if model_key(r.config) == key][:count]


@ENGINE
@given(stored_runs(states=("pending", "running", "finished", "failed", "crashed", "stopped")),
       st.integers(1, 5), st.none() | st.integers(1, 14))
def test_a_pack_shares_one_key_and_proposals_of_other_keys_are_parked(runs, count, run_cap):
    config = grid(run_cap=run_cap) if run_cap else grid()
    work = choose_work(config, runs, count, model_key)
    resuming = [r for r in runs if resumable(r)]
    if resuming:  # crashed runs' repeats from their checkpoints go first, as preempted runs
        first = (model_key(resuming[0].config), resuming[0].epoch)
        assert work.take == [r for r in resuming
                             if (model_key(r.config), r.epoch) == first][:count]
        assert work.start == [] and work.park == []
        return
    pending = [r for r in runs if r.state == "pending"]
    originals = sum(not r.requeued_from for r in runs)
    proposed = work.start + work.park
    if work.kind != "run":
        assert not pending and not proposed
        assert work.kind == ("wait" if any(r.state == "running" for r in runs) else "done")
        return
    members = [r.config for r in work.take] + work.start
    key = model_key(members[0])
    if pending:  # the oldest pending run decides the key, and its kind go first
        assert key == model_key(pending[0].config)
        assert work.take == [r for r in pending if model_key(r.config) == key][:count]
    assert 1 <= len(members) <= count and {model_key(m) for m in members} == {key}
    assert all(model_key(p) != key for p in work.park)
    assert len(proposed) <= proposal_budget(config, count - len(work.take))
    if run_cap:
        assert originals + len(proposed) <= max(run_cap, originals)
    # A grid point is proposed once, and never one that is already a run.
    stored = {point(r.config) for r in runs}
    fresh = [point(c) for c in proposed]
    assert len(fresh) == len(set(fresh)) and not stored & set(fresh)
    # Fewer members than asked for only when the engine, the cap or the budget ran out.
    if len(members) < count:
        left = [p for p in POINTS if point(p) not in stored | set(fresh)]
        assert (not [p for p in left if model_key(p) == key]
                or len(proposed) == proposal_budget(config, count - len(work.take))
                or (run_cap and originals + len(proposed) >= run_cap))


@ENGINE
@given(stored_runs(states=("pending", "preempted", "running", "finished", "crashed")),
       st.integers(1, 5), st.integers(1, 5))
def test_a_size_per_kind_of_pack_is_the_size_of_the_kind_the_work_has(runs, dense, cnn):
    # --pack auto asks with a function of the pack key: the work is what a claim of that
    # kind's size would be, whichever kind the oldest preempted, pending or proposed run has
    sizes = {"dense": dense, "cnn": cnn}
    asked = []
    work = choose_work(grid(), runs, lambda key, like: asked.append((key, like)) or sizes[key],
                       model_key)
    if work.kind != "run":
        assert work == choose_work(grid(), runs, 1, model_key)
        return
    first = work.take[0].config if work.take else work.start[0]
    key = model_key(first)
    assert {k for k, _ in asked} == {key} and work.size == sizes[key]
    assert first in [like for _, like in asked]  # asked with a config of that kind: the first
    assert work == choose_work(grid(), runs, sizes[key], model_key)


def test_a_pack_keyed_by_the_fastest_varying_parameter_parks_every_other_proposal():
    # The engine walks the grid with the last parameter by name (seed) varying fastest, so
    # its proposals alternate seed 0, 1, 0, ...: four of seed 0 take seven proposals.
    work = choose_work(grid(), [], 4, lambda config: config["seed"])
    assert [c["seed"] for c in work.start] == [0] * 4
    assert [c["seed"] for c in work.park] == [1] * 3


@pytest.mark.parametrize("method, parameters", [
    ("random", {"lr": {"min": 0.0001, "max": 0.1}, "model": {"values": ["dense", "cnn"]}}),
    ("bayes", {"lr": {"min": 0.0001, "max": 0.1}, "model": {"values": ["dense", "cnn"]}}),
    ("grid", PARAMETERS),
])
def test_every_method_proposes_distinct_members_in_one_claim(method, parameters):
    # The engine draws from Python's and numpy's global generators: seeded, so that random's
    # 12 proposals (a coin per model) do not, once in ~200 runs, hold fewer than 3 of a kind.
    random.seed(0)
    np.random.seed(0)
    config = {"method": method, "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": parameters}
    done = [Run(id=f"d{i}", seq=i + 1, config={"lr": lr, "model": "dense"}, state="finished",
                summary={"val/acc": acc}, history=[{"val/acc": acc}])
            for i, (lr, acc) in enumerate([(0.05, 0.5), (0.001, 0.9), (0.01, 0.7)])]
    work = choose_work(config, done if method == "bayes" else [], 3, model_key)
    assert len(work.start) == 3 and len({model_key(c) for c in work.start}) == 1
    assert len({point(c) for c in work.start}) == 3


BAYES_KINDS = {"method": "bayes", "metric": {"name": "val/acc", "goal": "maximize"},
               "parameters": {"lr": {"min": 0.0001, "max": 0.1},
                              "optimizer": {"values": ["sgd", "adam", "adamw", "rmsprop"]},
                              "batch_size": {"values": [16, 32, 64, 128]}}}


def optimizer_and_batch(config: dict) -> tuple:
    return config["optimizer"], config["batch_size"]


@pytest.mark.parametrize("pending", [0, 1])
def test_a_bayes_claim_asks_for_no_more_proposals_than_its_pack_has_places(pending):
    """Bayes proposes from the results so far: K W&B agents asking at once get K
    proposals, each seeing the others as running. A claim of a pack of 4 over 16 kinds
    asked for up to 16 and parked those of other kinds, to be trained after the pack's
    results were in by proposals made without them. Now it asks for as many as the pack
    has places left (4, or 3 beside a pending run it takes); a proposal of another kind
    among them is parked, as a W&B agent would have started it then."""
    random.seed(0)
    np.random.seed(0)
    done = [Run(id=f"d{i}", seq=i + 1, config={"lr": lr, "optimizer": "sgd", "batch_size": 32},
                state="finished", summary={"val/acc": acc}, history=[{"val/acc": acc}])
            for i, (lr, acc) in enumerate([(0.05, 0.5), (0.001, 0.9), (0.01, 0.7)])]
    waiting = [Run(id="w", seq=4, config={"lr": 0.02, "optimizer": "adam", "batch_size": 16},
                   state="pending")][:pending]
    work = choose_work(BAYES_KINDS, done + waiting, 4, optimizer_and_batch)
    assert len(work.take) == pending
    assert 1 <= len(work.start) + len(work.park) <= 4 - pending, work
    members = [r.config for r in work.take] + work.start
    assert len({optimizer_and_batch(m) for m in members}) == 1


def test_the_run_cap_counts_parked_proposals_and_ignores_repeats():
    crashed = Run(id="c", seq=1, config=POINTS[0], state="crashed")
    repeat = Run(id="p", seq=2, config=POINTS[0], state="finished", requeued_from="c")
    work = choose_work(grid(run_cap=3), [crashed, repeat], 4, lambda config: config["seed"])
    assert len(work.start) + len(work.park) == 2  # 3 originals in all; the repeat is free


# --- the heartbeat options --------------------------------------------------------------------

@PURE
@given(st.floats(allow_nan=True, allow_infinity=True) | st.floats(0.01, 10),
       st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 100))
def test_heartbeat_timeout_is_finite_and_at_least_three_beats(heartbeat, timeout):
    valid = (math.isfinite(heartbeat) and MIN_HEARTBEAT_S <= heartbeat <= MAX_HEARTBEAT_S
             and math.isfinite(timeout)
             and MIN_BEATS_PER_TIMEOUT * heartbeat <= timeout <= MAX_HEARTBEAT_TIMEOUT_S)
    if valid:
        check_heartbeat(heartbeat, timeout)
    else:
        with pytest.raises(UserError) as refused:
            check_heartbeat(heartbeat, timeout)
        assert "\n" not in str(refused.value) and "--heartbeat" in str(refused.value)


# --- how many runs of a kind are left (what --pack auto measures up to) ------------------------

ENGINE_ORDER = [dict(zip(sorted(PARAMETERS), values)) for values in itertools.product(
    *(PARAMETERS[name]["values"] for name in sorted(PARAMETERS)))]  # last name varies fastest


@ENGINE
@given(stored_runs(), st.sampled_from(POINTS), st.none() | st.integers(1, 14),
       st.sampled_from(["grid", "random"]))
def test_runs_left_of_a_kind_are_its_open_runs_and_the_points_not_yet_proposed(
        runs, like, run_cap, method):
    config = {**grid(run_cap=run_cap), "method": method} if run_cap else \
        {**grid(), "method": method}
    left = runs_left(config, runs, like, model_key)
    key = model_key(like)
    waiting = sum(r.state in ("pending", "preempted") and model_key(r.config) == key
                  for r in runs)
    originals = sum(not r.requeued_from for r in runs)
    room = math.inf if not run_cap else max(0, run_cap - originals)
    if method == "random":
        assert left == (None if not run_cap else waiting + room)
        return
    stored = {point(r.config) for r in runs}
    unproposed = [p for p in ENGINE_ORDER if point(p) not in stored]
    if run_cap:
        unproposed = unproposed[:max(0, min(run_cap, len(POINTS)) - originals)]
    assert left == waiting + sum(model_key(p) == key for p in unproposed)


@pytest.mark.parametrize("method", ["grid", "random", "bayes"])
@pytest.mark.parametrize("size", [1, 2, 16, 100])
def test_a_grid_claim_looks_further_ahead_than_four_proposals_a_member(method, size):
    budget = proposal_budget({"method": method}, size)
    assert budget == {"grid": max(PROPOSALS_PER_MEMBER * size, 256), "bayes": size}.get(
        method, PROPOSALS_PER_MEMBER * size)


def test_kinds_that_interleave_in_a_grid_still_fill_their_packs():
    # 12 kinds of 2 points each, the kind the fastest-varying parameter (the last by name): a
    # kind's second point comes 12 proposals after its first, past four proposals a member
    parameters = {"a_lr": {"values": [0.1, 0.01]}, "b_kind": {"values": list(range(12))}}
    config = {"method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": parameters}
    work = choose_work(config, [], 2, lambda c: c["b_kind"])
    assert [(c["a_lr"], c["b_kind"]) for c in work.start] == [(0.1, 0), (0.01, 0)]
    assert len(work.park) == 11


# --- how many runs of a kind a random sweep is expected to give (--pack auto's outlook) ---------

# A pack-shared parameter `kind` drawn by each of the engine's distributions that give a
# discrete kind, with the chance that one draw is `like`'s kind (W&B's random_search.py:
# categorical draws uniformly or by its probabilities, int_uniform uniformly over min..max,
# q_uniform rounds a uniform draw to a multiple of q, so an end value gets half a step's mass)
KIND_DRAWS = [
    ({"value": 7}, 7, 1.0),
    ({"values": [1, 2]}, 1, 1 / 2),
    ({"values": list(range(6))}, 3, 1 / 6),
    ({"values": list(range(18))}, 0, 1 / 18),
    ({"distribution": "categorical_w_probabilities", "values": [1, 2, 3],
      "probabilities": [0.6, 0.3, 0.1]}, 3, 0.1),
    ({"distribution": "categorical_w_probabilities", "values": [1, 2, 3],
      "probabilities": [0.6, 0.3, 0.1]}, 1, 0.6),
    ({"distribution": "int_uniform", "min": 1, "max": 4}, 2, 1 / 4),
    ({"distribution": "q_uniform", "min": 0, "max": 10, "q": 2}, 4, 2 / 10),
    ({"distribution": "q_uniform", "min": 0, "max": 10, "q": 2}, 10, 1 / 10),
]


def kind_key(config: dict):
    return config["kind"]


@pytest.mark.parametrize("spec, kind, chance", KIND_DRAWS,
                         ids=[f"{spec.get('distribution', 'values')}-{kind}"
                              for spec, kind, _ in KIND_DRAWS])
@pytest.mark.parametrize("run_cap, stored", [(4, 0), (16, 0), (100, 0), (100, 30)])
def test_expected_runs_of_a_kind_follow_its_chance_in_the_engines_draws(
        spec, kind, chance, run_cap, stored):
    config = {"method": "random", "metric": {"name": "val/acc", "goal": "maximize"},
              "run_cap": run_cap, "parameters": {"kind": spec,
                                                 "lr": {"min": 0.001, "max": 0.1}}}
    rng = random.Random(run_cap + stored)
    runs = [Run(id=f"r{i}", seq=i + 1, state=rng.choice(["pending", "finished", "running"]),
                config={"kind": kind if i % 3 == 0 else -1, "lr": 0.01}) for i in range(stored)]
    like = {"kind": kind, "lr": 0.05}  # a proposal not stored yet: certainly of its kind
    waiting = sum(r.state == "pending" and r.config["kind"] == kind for r in runs)
    rest = run_cap - stored - 1
    expected, likely = expected_runs(config, runs, like, kind_key)
    # the estimate draws KIND_SAMPLE proposals: a binomial share
    spread = rest * math.sqrt(chance * (1 - chance) / KIND_SAMPLE)
    assert abs(expected - (waiting + 1 + rest * chance)) <= 5 * spread + 1e-9
    assert expected <= likely <= waiting + 1 + rest
    assert isinstance(likely, int)
    if chance == 1.0:  # every draw is of the kind: exact
        assert expected == likely == waiting + 1 + rest
    # `like` stored as a pending run is counted once, among the waiting (the runs left to
    # propose are one fewer, and it is one of them no more)
    pending = Run(id="p", seq=stored + 1, state="pending", config=like)
    again, _ = expected_runs(config, [*runs, pending], like, kind_key)
    assert abs(again - (waiting + 1 + rest * chance)) <= 5 * spread + 1e-9


@pytest.mark.parametrize("method, run_cap", [("grid", 6), ("grid", None), ("bayes", 6),
                                             ("random", None)])
def test_expected_runs_are_estimated_for_a_capped_random_sweep_only(method, run_cap):
    config = {**grid(run_cap=run_cap), "method": method} if run_cap else \
        {**grid(), "method": method}
    assert expected_runs(config, [], POINTS[0], model_key) is None


def test_expected_runs_of_a_sweep_whose_target_is_reached_are_those_waiting():
    config = {**grid(run_cap=12), "method": "random",
              "metric": {"name": "val/acc", "goal": "maximize", "target": 0.9}}
    runs = [Run(id="a", seq=1, state="finished", config=POINTS[0], summary={"val/acc": 0.95}),
            Run(id="b", seq=2, state="pending", config=POINTS[1])]
    assert expected_runs(config, runs, POINTS[1], model_key) == (1.0, 1)
