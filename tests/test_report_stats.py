"""The report's numbers as pure functions, on cases generated from their definitions: the
random model's bound (binomial), the majority model with tied classes, Welch's test with
Holm's correction behind a bold row, and the group rule on every branch."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from agent.params import validate
from agent.report import stats
from agent.report.study import RunRecord

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("classes", [2, 10, 100])
@pytest.mark.parametrize("n", [100, 1000, 10000])
def test_chance_bound_is_the_binomial_quantile(classes, n):
    labels = [i % classes for i in range(n)]
    base = stats.baselines(labels, labels, classes)
    k = round(base.chance_bound * n)
    # The smallest k with P(X <= k) >= 0.95 for X ~ Binomial(n, 1/K): the definition.
    assert scipy_stats.binom.cdf(k, n, 1 / classes) >= 0.95
    assert scipy_stats.binom.cdf(k - 1, n, 1 / classes) < 0.95
    assert base.chance == 1 / classes and base.test_size == n


def test_random_draw_is_seeded_and_near_chance():
    labels = [i % 10 for i in range(10000)]
    first = stats.baselines(labels, labels, 10, seed=3)
    assert first.random_draw == stats.baselines(labels, labels, 10, seed=3).random_draw
    assert abs(first.random_draw - 0.1) < 0.015  # 5 standard deviations


def test_majority_names_every_tied_class():
    train = [0] * 5 + [1] * 5 + [2] * 3
    test = [0] * 10 + [1] * 30 + [2] * 60
    base = stats.baselines(train, test, 3)
    assert base.tied and base.majority_classes == [0, 1] and base.majority_count == 5
    assert base.majority == 0.1 and base.majority_range == (0.1, 0.3)
    single = stats.baselines([2, 2, 1], test, 3)
    assert not single.tied and single.majority == 0.6


def test_holm_adjusts_step_down():
    adjusted = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})


def welch_by_hand(a, b) -> float:
    """Welch (1947): t on unequal variances, Welch-Satterthwaite degrees of freedom."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return 2 * scipy_stats.t.sf(abs(t), df)


def test_welch_p_matches_the_formula():
    a, b = [0.81, 0.83, 0.80, 0.82, 0.84], [0.79, 0.80, 0.78]
    assert stats.welch_p(a, b) == pytest.approx(welch_by_hand(a, b))
    assert stats.welch_p([0.5, 0.5], [0.5, 0.5]) == 1.0


def test_bold_only_when_the_best_beats_every_other_row():
    clear = {"a": [0.90, 0.91, 0.905, 0.908], "b": [0.80, 0.81, 0.805, 0.79],
             "c": [0.70, 0.72, 0.71, 0.69], "single": [0.99]}
    leader, adjusted = stats.supported_best(clear, "maximize")
    assert leader == "a" and set(adjusted) == {"b", "c"}  # n = 1 takes no part
    close = {"a": [0.90, 0.85, 0.93], "b": [0.89, 0.88, 0.90]}
    leader, adjusted = stats.supported_best(close, "maximize")
    assert leader is None and adjusted["b"] == pytest.approx(welch_by_hand(close["a"],
                                                                           close["b"]))
    assert stats.supported_best({"a": [0.1, 0.2], "b": [0.9, 0.8]}, "minimize")[0] == "a"


def run(history: list[dict], diverged: bool = False) -> RunRecord:
    return RunRecord("r1", "finished", {}, validate({}), {"diverged": diverged}, history,
                     Path("unused"))


EPOCHS = [{"epoch": 1, "train/loss": 1.2, "val/loss": 0.9, "val/acc": 0.7},
          {"epoch": 2, "train/loss": 0.7, "val/loss": 0.6, "val/acc": 0.8}]
RULE = stats.GroupRule(explode_factor=10, stuck_margin=0.05)


SPIKED_THEN_FLAT = [{"epoch": 1, "train/loss": 3.56, "val/loss": 2.31, "val/acc": 0.10},
                    {"epoch": 2, "train/loss": 2.30, "val/loss": 2.30, "val/acc": 0.101}]


@pytest.mark.parametrize("history, steps, diverged, group", [
    (EPOCHS, [2.3, 1.0, 0.6], False, "converged"),
    (EPOCHS, [2.3, math.inf], False, "diverged"),  # a step went non-finite
    (EPOCHS, [2.3, 1.0], True, "diverged"),  # the trial flagged it
    (EPOCHS, [2.3, 24.0, 0.6], False, "converged"),  # a step spiked and came back
    ([{"epoch": 1, "train/loss": 117.0, "val/loss": 82.0, "val/acc": 0.1}], [], False,
     "diverged"),  # the dense + adam at lr 0.1, from epoch means alone
    # ended far above 10 ln 10 with an accuracy above chance 0.1 + 0.05 = 0.15: it predicts,
    # its large cross-entropy from a few confident mistakes (adam at lr 0.86 on digits:
    # training loss 138, val/acc 0.81); one just below the bound stays diverged
    ([{"epoch": 1, "train/loss": 40.0, "val/loss": 31.0, "val/acc": 0.70},
      {"epoch": 2, "train/loss": 138.0, "val/loss": 95.0, "val/acc": 0.81}], [], False,
     "converged"),
    ([{"epoch": 1, "train/loss": 40.0, "val/loss": 31.0, "val/acc": 0.70},
      {"epoch": 2, "train/loss": 138.0, "val/loss": 95.0, "val/acc": 0.149}], [], False,
     "diverged"),  # left chance, ended back at it with a blown-up loss: not collapsed
    ([{"epoch": 1, "train/loss": 138.0, "train/acc": 0.5}], [], False, "converged"),  # no val
    ([{"epoch": 1, "train/loss": 2.0, "val/loss": 2.0, "val/acc": 0.3},
      {"epoch": 2, "train/loss": 24.0, "val/loss": 2.0, "val/acc": 0.151}], [], False,
     "converged"),
    ([{"epoch": 1, "train/loss": 512.0, "val/loss": 8.4, "val/acc": 0.3},
      {"epoch": 2, "train/loss": 2.9, "val/loss": 2.6, "val/acc": 0.4}], [], False,
     "converged"),  # epoch 1's mean spiked, the run ended near ln 10
    ([{"epoch": 1, "train/loss": 2.0, "val/loss": 2.0, "val/acc": 0.3},
      {"epoch": 2, "train/loss": 24.0, "val/loss": 2.0, "val/acc": 0.1}], [], False,
     "diverged"),  # its last epoch's training loss above 10 ln 10 = 23.03, at chance
    ([{"epoch": 1, "train/loss": 2.0, "val/loss": 2.0, "val/acc": 0.3},
      {"epoch": 2, "train/loss": 23.0, "val/loss": 2.0, "val/acc": 0.1}], [], False,
     "collapsed"),  # just below: grouped by its accuracy
    ([{"epoch": 1, "train/loss": 0.5, "val/loss": 30.0, "val/acc": 0.1}], [], False,
     "diverged"),  # its last validation loss
    ([], [2.3, 5.0, 30.0], False, "diverged"),  # no epoch: its last logged step
    ([{"epoch": 1, "train/loss": 2.31, "train/acc": 0.1}], [2.3, 40.0, 2.31], False,
     "stuck"),  # a step spiked, the run ended at chance
    ([{"epoch": 1, "train/loss": 2.3, "val/loss": 2.3, "val/acc": 0.149}], [2.3], False,
     "stuck"),
    ([{"epoch": 1, "train/loss": 2.3, "val/loss": 2.3, "val/acc": 0.151}], [2.3], False,
     "converged"),
    ([{"epoch": 1, "train/loss": 2.31, "train/acc": 0.1}], [2.3], False, "stuck"),  # no val
    # left chance, then ended at it (the run: 0.375 at epoch 1, a loss of ln 10
    # and an accuracy of 0.06 to 0.13 from epoch 4 to 15), one epoch or many back at it
    ([{"epoch": 1, "train/loss": 2.0, "val/loss": 1.8, "val/acc": 0.375},
      {"epoch": 2, "train/loss": 2.30, "val/loss": 2.30, "val/acc": 0.097}], [], False,
     "collapsed"),
    ([{"epoch": 1, "train/loss": 2.0, "val/loss": 1.8, "val/acc": 0.375},
      {"epoch": 2, "train/loss": 2.30, "val/loss": 2.30, "val/acc": 0.151}], [], False,
     "converged"),  # just above the bound
    ([{"epoch": 1, "train/loss": 2.0, "train/acc": 0.4},
      {"epoch": 2, "train/loss": 2.31, "train/acc": 0.1}], [], False, "collapsed"),  # no val
    # did not leave chance: still falling (the adam at lr 0.001, 2.56 -> 2.36 in 2
    # epochs) or flat; 2% below the epoch halfway through the run (the 2nd of 3)
    ([{"epoch": 1, "train/loss": 2.56, "val/loss": 2.4, "val/acc": 0.09},
      {"epoch": 2, "train/loss": 2.36, "val/loss": 2.35, "val/acc": 0.11}], [], False,
     "falling"),
    ([{"epoch": 1, "train/loss": 2.3030, "val/loss": 2.30, "val/acc": 0.09},
      {"epoch": 2, "train/loss": 2.3026, "val/loss": 2.30, "val/acc": 0.11}], [], False,
     "stuck"),
    ([{"epoch": 1, "train/loss": 2.65, "val/acc": 0.08}, {"epoch": 2, "train/loss": 2.34,
                                                          "val/acc": 0.08},
      {"epoch": 3, "train/loss": 2.32, "val/acc": 0.11}], [], False, "stuck"),  # 0.9%
    ([{"epoch": 1, "train/loss": 2.65, "val/acc": 0.08}, {"epoch": 2, "train/loss": 2.40,
                                                          "val/acc": 0.08},
      {"epoch": 3, "train/loss": 2.34, "val/acc": 0.11}], [], False, "falling"),  # 2.5%
    # its epoch means fall (3.56 then 2.30), its logged steps of the second half sit within
    # 2% of ln 10 = 2.3026 (the example report's cnn at adam's lr 0.1): stuck; with a step
    # outside the band, or fewer than 8 logged steps, the epoch means decide
    (SPIKED_THEN_FLAT, [3.7, 7.6, 2.6, 2.30, 2.31, 2.29, 2.30, 2.32, 2.30, 2.31, 2.29, 2.30,
                        2.31, 2.30, 2.29, 2.31], False, "stuck"),
    (SPIKED_THEN_FLAT, [3.7, 7.6, 2.6, 2.30, 2.31, 2.29, 2.30, 2.32, 2.30, 2.31, 2.29, 2.30,
                        2.31, 2.30, 2.29, 2.36], False, "falling"),  # 2.36: 2.5% above
    (SPIKED_THEN_FLAT, [3.7, 7.6, 2.6, 2.30, 2.31, 2.29, 2.30], False, "falling"),  # 7 steps
    (SPIKED_THEN_FLAT, [3.7, 7.6, 2.6, 2.30, 2.31, 2.29, 2.30, 2.30], False, "stuck"),  # 8
])
def test_group_rule_on_every_branch(history, steps, diverged, group):
    verdict = stats.classify(run(history, diverged), steps, 10, RULE)
    assert verdict.group == group, verdict


def test_a_stuck_runs_reason_never_prints_its_accuracy_equal_to_the_bound():
    """A Fashion-MNIST run of best validation accuracy 449/3000 = 0.14967 was listed as
    'best accuracy 0.150 < 0.150': the decimals go on until the two differ."""
    history = [{"epoch": 1, "train/loss": 2.3, "val/loss": 2.3, "val/acc": 449 / 3000}]
    verdict = stats.classify(run(history), [2.3], 10, RULE)
    assert verdict.group == "stuck"
    assert verdict.reason == ("best accuracy 0.1497 < 0.1500; one epoch: no trend in its loss "
                              "to read"), verdict
    history = [{"epoch": 1, "train/loss": 2.3, "val/loss": 2.3, "val/acc": 0.112}]
    assert stats.classify(run(history), [2.3], 10, RULE).reason.startswith(
        "best accuracy 0.112 < 0.150;")


def test_a_run_at_chance_says_what_its_epochs_show():
    """A collapsed run names where it left chance and where it came back, its last losses
    beside ln K; one that did not leave chance names its loss at the epoch halfway through
    and at the last, falling or flat."""
    history = [{"epoch": 1, "train/loss": 2.0, "val/loss": 1.8, "val/acc": 0.375},
               {"epoch": 2, "train/loss": 2.1, "val/loss": 2.2, "val/acc": 0.2},
               {"epoch": 3, "train/loss": 2.30, "val/loss": 2.303, "val/acc": 0.125},
               {"epoch": 4, "train/loss": 2.302, "val/loss": 2.303, "val/acc": 0.097}]
    verdict = stats.classify(run(history), [], 10, RULE)
    assert verdict.reason == (
        "left chance (best accuracy 0.375 at epoch 1), back at it from epoch 3: last accuracy "
        "0.097 < 0.150, training loss 2.30, validation loss 2.30 (ln 10 = 2.30)"), verdict
    history = [{"epoch": 1, "train/loss": 2.56, "val/loss": 2.4, "val/acc": 0.09},
               {"epoch": 2, "train/loss": 2.36, "val/loss": 2.35, "val/acc": 0.11}]
    assert stats.classify(run(history), [], 10, RULE).reason == (
        "best accuracy 0.110 < 0.150; its training loss still falling (2.56 at epoch 1, 2.36 "
        "at epoch 2)")
    history[1]["train/loss"] = 2.52
    assert stats.classify(run(history), [], 10, RULE).reason == (
        "best accuracy 0.110 < 0.150; its training loss flat (2.56 at epoch 1, 2.52 at epoch 2)")
    steps = [3.7, 7.6, 2.6, 2.30, 2.31, 2.29, 2.30, 2.32, 2.30, 2.31, 2.29, 2.30]
    assert stats.classify(run(SPIKED_THEN_FLAT), steps, 10, RULE).reason == (
        "best accuracy 0.101 < 0.150; its training loss at ln 10 = 2.30, the loss of a uniform "
        "guess, in the last 6 of its 12 logged steps (2.29 to 2.32; its epoch means 3.56 at "
        "epoch 1, 2.30 at epoch 2)")


def test_a_spike_that_came_back_is_named_beside_the_group():
    history = [{"epoch": 1, "train/loss": 512.0, "val/loss": 8.4, "val/acc": 0.12},
               {"epoch": 2, "train/loss": 2.87, "val/loss": 2.6, "val/acc": 0.1}]
    verdict = stats.classify(run(history), [], 10, RULE)
    assert verdict.group == "stuck" and verdict.spike == "epoch training loss 512 > 23.0, " \
        "ended at 2.87"
    assert verdict.reason == "best accuracy 0.120 < 0.150; its loss spiked and came back " \
        "(epoch training loss 512 > 23.0, ended at 2.87)"
    assert stats.classify(run(EPOCHS), [2.3, 1.0], 10, RULE).spike == ""


def test_no_epoch_and_no_loss_is_no_verdict():
    assert stats.classify(run([]), [], 10, RULE) is None


def test_rule_text_states_its_thresholds():
    text = stats.GroupRule(explode_factor=5, stuck_margin=0.02).describe(100)
    assert "5 x ln 100 = 23.0" in text and "1/100 + 0.02 = 0.030" in text


def test_run_time_counts_a_packed_trial_once_with_its_longest_member():
    from agent.report.setup_section import run_time_lines

    def record(run_id, model, pack, started, ended):
        config = {"model": model}
        return RunRecord(run_id, "finished", config, validate(config), {}, [], None,
                         started=1e9 + started, ended=1e9 + ended, pack=pack)

    runs = [record("a", "cnn", "p1", 0, 40), record("b", "cnn", "p1", 0, 41),
            record("c", "cnn", "p1", 0, 39), record("d", "dense", "p2", 50, 60),
            record("e", "dense", None, 70, 74)]
    packed, times = run_time_lines(runs)
    assert packed.startswith("- Packed trials (`--pack`): 5 runs trained as 3 trials of up "
                             "to 3 runs each")
    # 41 s (pack p1) + 10 s (pack p2) + 4 s (run e alone), not 40 + 41 + 39 + 10 + 4
    assert times == ("- Run time: 55 s summed over 3 trials; per trial, mean by model: "
                     "cnn 41 s, dense 7 s.")
    (alone,) = run_time_lines(runs[-1:])
    assert alone == "- Run time: 4 s summed over 1 run; per run, mean by model: dense 4 s."
    # a member the trial refused (failed, no epoch) trained nothing: named apart, not a
    # run trained nor a trial of 0.1 s in the means; one that failed after an epoch counts
    refused = RunRecord("r", "failed", {"model": "dense"}, validate({"model": "dense"}), {},
                        [], None, started=1e9 + 50, ended=1e9 + 50.1, pack="p3")
    late = RunRecord("l", "failed", {"model": "dense"}, validate({"model": "dense"}), {},
                     [{"epoch": 1}], None, started=1e9 + 50, ended=1e9 + 58, pack="p2")
    said, packed, times = run_time_lines([*runs, refused, late])
    assert said == "- 1 run failed before a first epoch ended (not counted below): r."
    assert packed.startswith("- Packed trials (`--pack`): 6 runs trained as 3 trials")
    assert times.endswith("mean by model: cnn 41 s, dense 7 s.")
    assert run_time_lines([refused]) == [
        "- 1 run failed before a first epoch ended (not counted below): r."]


def _lr_study(values: dict[str, list[float]]):
    """A study of an lr x optimizer grid: {optimizer: val/acc at each lr, low to high}."""
    from agent.report.markdown import Context
    from agent.report.study import Study

    lrs = [0.0001, 0.001, 0.01, 0.1]
    runs = []
    for optimizer, accs in values.items():
        for lr, acc in zip(lrs, accs):
            config = {"optimizer": optimizer, "lr": lr}
            runs.append(RunRecord(f"{optimizer}{lr}", "finished", config, validate(config),
                                  {"val/acc": acc}, [], None))
    sweep = {"method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
             "parameters": {"optimizer": {"values": list(values)}, "lr": {"values": lrs}}}
    study = Study("s", "s1", "local", sweep, runs)
    return Context(study, Path("."), stats.GroupRule(), ["optimizer", "lr"],
                   study.scored_runs())


@pytest.mark.parametrize("accs, bends", [
    ([0.70, 0.94, 0.98, 0.98], False),   # tied at the top end: a rise to the end
    ([0.70, 0.94, 0.985, 0.975], False),  # the end within NEAR_BEST of the peak
    ([0.70, 0.94, 0.98, 0.90], True),    # a real peak inside
    ([0.90, 0.98, 0.94, 0.70], True),
    ([0.97, 0.98, 0.94, 0.70], False),   # the low end within NEAR_BEST
    ([0.70, 0.80, 0.90, 0.98], False),   # monotone
])
def test_a_peak_inside_the_range_is_claimed_only_beyond_near_best_of_both_ends(accs, bends):
    from agent.report.discussion import _correlation_caveat

    (line,) = _correlation_caveat(_lr_study({"sam": accs, "sgd": [0.5, 0.6, 0.7, 0.8]}),
                                  "lr")
    assert ("optimizer=sam is best at" in line) == bends, line
    assert "optimizer=sgd is best" not in line


@pytest.mark.parametrize("state", ["finished", "stopped"])
def test_a_setting_counts_as_failing_only_by_runs_that_trained_to_their_end(state):
    """A run hyperband stopped after an epoch was cut short: stuck as it is, it says nothing
    about its setting; the report's table says it was stopped early."""
    from agent.report.discussion import _windows_and_failures
    from agent.report.runs_section import _cut_short

    ctx = _lr_study({"sgd": [0.12, 0.8, 0.9, 0.85]})
    low = next(r for r in ctx.study.runs if r.config["lr"] == 0.0001)
    low.state = state
    low.summary["epochs_done"] = 1
    for run in ctx.study.runs:
        group = stats.STUCK if run is low else stats.CONVERGED
        ctx.verdicts[run.id] = stats.Verdict(group, "best accuracy 0.12", None, None)
    (line,) = _windows_and_failures(ctx, "lr")
    assert ("every run diverged or ended at chance (1 run)" in line) == (state == "finished"), \
        line
    assert _cut_short(low) == ("" if state == "finished" else
                               f"; stopped early (hyperband) after 1 of {low.params.epochs} "
                               "epochs")


def test_hardest_classes_say_how_many_more_tie_with_the_last_shown():
    classes = list("abcdefg")
    assert stats.hardest_classes([0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 1.0], classes) == [
        "a (0.0%)", "b (0.0%)", "c (0.0%)", "and 2 more at 0.0%"]
    assert stats.hardest_classes([0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0], classes) == [
        "b (10.0%)", "c (20.0%)", "d (30.0%)"]
    assert stats.hardest_classes([0.5, 0.5], ["a", "b"]) == ["a (50.0%)", "b (50.0%)"]


CONSTANTS = [0.4, 0.1, 0.7, 1 / 3, 130 / 144, 1201 / 1797, 8191 / 8192, 2.302585, -0.35,
             1e-9, 123456.789]


@pytest.mark.parametrize("value", CONSTANTS)
def test_welch_p_reads_constant_samples_as_constant(value):
    """Two constant samples of one value have p = 1, of two values p = 0, whatever their
    sizes: np.mean of 0.4 three times reads 0.4000000000000001, so their np.std was 5.6e-17,
    not 0, and scipy's t on two of them gave p = 0.29 (rounding noise over rounding noise).
    Each value listed (accuracies k/n, losses, below 0, far from 1) and two drawn from its
    seed (uniform in -2..2, and k/10000), at every size from 2 to 9 on each side."""
    rng = np.random.default_rng(round(abs(value) * 1e6) % 2**32)
    noisy = 0  # cases np.std did not find constant (the defect's cases)
    for n, m in itertools.product(range(2, 10), repeat=2):
        for a in (value, float(rng.uniform(-2, 2)), float(rng.integers(0, 10001)) / 10000):
            assert stats.welch_p([a] * n, [a] * m) == 1.0, (a, n, m)
            noisy += np.std([a] * n) != 0 or np.std([a] * m) != 0
            other = a + max(abs(a), 1.0) * 1e-6  # a constant sample of another value
            assert stats.welch_p([a] * n, [other] * m) == 0.0, (a, n, m)
            assert stats.welch_p([other] * m, [a] * n) == 0.0, (a, n, m)
    # a sample of one value but for rounding (0.1 + 0.2 and 0.3) is constant too
    assert stats.welch_p([0.1 + 0.2, 0.3, 0.3], [0.3, 0.3]) == 1.0
    # and one constant sample against a spread one is Welch's own test
    spread = [value * 1.01, value * 0.98, value * 1.02]
    assert stats.welch_p([value] * 3, spread) == pytest.approx(
        welch_by_hand([value] * 3, spread), rel=1e-6)
    assert noisy  # the premise: np.std found some of these samples not constant


def _settings_run(run_id: str, optimizer: str, lr: float, seed: int, value: float) -> RunRecord:
    config = {"optimizer": optimizer, "lr": lr, "seed": seed}
    return RunRecord(run_id, "finished", config, validate(config), {"val/acc": value}, [],
                     None)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("goal", ["maximize", "minimize"])
def test_settings_whose_means_differ_by_rounding_rank_in_the_sweeps_order(seed, goal):
    """Settings of 3 seeds each whose accuracies (counts of n) sum to one of 3 totals:
    equal means within a total, which np.mean reads in floats that may differ in their last
    bit ((128 + 130 + 132) / 3 / 144 and 130 / 144). They were ranked by that bit; they rank
    in the sweep's order of their first run, the groups too, and tied_at_cut (with
    tied_mean) names the settings tied at any cut as the ranking ordered them: generated
    totals, counts, groups and orders."""
    rng = np.random.default_rng(seed)
    n = int(rng.choice([144, 360, 1797, 10000]))
    runs, exact, group_of = [], {}, {}
    for s in range(24):
        k = int(rng.choice([int(n * 0.9), int(n * 0.8) + 1, int(n * 0.5) + 2]))  # 3 means
        d1, d2 = (int(d) for d in rng.integers(0, 7, 2))  # 3 counts of the sum 3k
        values = list(rng.permutation([k - d1, k + d2, k + d1 - d2]) / n)
        lr = round(0.001 * (s + 1), 6)
        optimizer = str(rng.choice(["sgd", "adam"]))
        exact[lr], group_of[lr] = k, optimizer
        runs += [_settings_run(f"r{s}-{i}", optimizer, lr, i, float(v))
                 for i, v in enumerate(values)]
    order = [runs[i] for i in rng.permutation(len(runs))]  # the sweep's order
    place = {lr: min(i for i, r in enumerate(order) if r.config["lr"] == lr) for lr in exact}
    means = {lr: float(np.mean([r.metric("val/acc") for r in runs if r.config["lr"] == lr]))
             for lr in exact}
    sign = -1 if goal == "maximize" else 1
    scored = sorted(runs, key=lambda r: sign * r.metric("val/acc"))  # Study.scored_runs
    ranked = stats.ranked_settings_per_group(scored, "optimizer", "val/acc", goal, order)

    def expected(lrs):
        return sorted(lrs, key=lambda lr: (sign * exact[lr], place[lr]))

    got = {group: [s.best.config["lr"] for s in settings] for group, settings in ranked.items()}
    for group, lrs in got.items():
        assert lrs == expected([lr for lr in exact if group_of[lr] == group]), group
    bests = {got[group][0]: group for group in got}
    assert list(got) == [bests[lr] for lr in expected(list(bests))]
    for group, settings in ranked.items():
        score = stats.tied_mean(settings, lambda s: np.mean(s.values("val/acc")))
        lrs = got[group]
        for count in range(1, len(lrs)):
            kept, left = stats.tied_at_cut(settings, count, score)
            tied = [lr for lr in lrs if exact[lr] == exact[lrs[count - 1]]]
            split = tied[0] in lrs[:count] and tied[-1] in lrs[count:]
            assert [s.best.config["lr"] for s in kept + left] == (tied if split else [])
    # the premise: in a group, tied settings whose float means differ against the sweep's
    # order (the float order would rank them the other way)
    assert any(means[a] != means[b] and exact[a] == exact[b] and place[a] < place[b]
               and sign * means[a] > sign * means[b] and group_of[a] == group_of[b]
               for a in exact for b in exact)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_group_rule_reads_where_real_runs_ended(tmp_path, monkeypatch):
    """Digits runs of a dense net trained here by a local sweep's agent (sgd without
    momentum at lr 5 and 100, hidden 32 and 512, 3 epochs): the wide nets' loss goes
    non-finite (the trial stops them), lr 100's narrow net ends far above ln 10, and lr 5's
    narrow net spikes past 10 x ln 10 in its first epoch and comes back to chance. That run
    was called diverged; it is stuck, its spike named, as a PyTorch or W&B user reads a
    curve that came back; the others diverged."""
    from agent.report import document
    from agent.report.study import local_study
    from agent.sweep.agent_loop import LocalAgent
    from agent.sweep.pack_size import PackSizer
    from agent.sweep.store import create_store

    monkeypatch.chdir(tmp_path)
    store = create_store(tmp_path / "data" / "sweeps" / "rule", "rule", "rule", {
        "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                       "optimizer": {"value": "sgd"}, "momentum": {"value": 0.0},
                       "batch_size": {"value": 32}, "epochs": {"value": 3},
                       "sinks": {"value": ["tensorboard"]}, "histograms": {"value": False},
                       "lr": {"values": [5.0, 100.0]}, "hidden": {"values": [32, 512]}}})
    assert LocalAgent(store, 5.0, 60.0, PackSizer(fixed=1)).run(None) == 0
    built = document.build_report(local_study(store), tmp_path / "report")
    text = built.path.read_text()
    groups = {row.split(",")[0]: row.split(",")[2]
              for row in (tmp_path / "report" / "runs.csv").read_text().splitlines()[1:]}
    bound = 10 * math.log(10)
    kinds = set()
    for stored in store.runs():
        losses = [row.get(key) for row in stored.history for key in ("train/loss", "val/loss")]
        last = stored.history[-1] if stored.history else {}
        if stored.summary.get("diverged"):
            kinds.add("non-finite")
            assert groups[stored.id] == "diverged"
        elif max(last.get("train/loss", 0), last.get("val/loss", 0)) > bound:
            kinds.add("ended above")
            assert groups[stored.id] == "diverged"
        else:
            assert max(losses) > bound  # the premise: it rose past the level, then came back
            kinds.add("came back")
            best = max(row["val/acc"] for row in stored.history)
            assert groups[stored.id] == ("stuck" if best < 0.15 else "converged")
            reason = (f"its loss spiked and came back (epoch training loss "
                      f"{max(losses):.3g} > 23.0, ended at")
            assert reason in text or f"{stored.id} (epoch training loss" in text, text
    assert kinds == {"non-finite", "ended above", "came back"}
    assert "or the run ended with its loss far above where training starts: its last " \
        "epoch's training or validation loss above 10 x ln 10 = 23.0" in text
