"""threads="auto": the choice rule on a fake clock (no real timing is asserted), the Predictor and the server."""

import numpy as np
import pytest

from runtime import threads as thread_choice
from runtime.threads import AUTO, candidate_threads, fastest


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FakeSession:
    """A session whose run takes ``ms`` on the fake clock."""

    def __init__(self, clock, ms, calls):
        self.clock, self.ms, self.calls = clock, ms, calls

    def run(self):
        self.calls.append(self)
        self.clock.now += self.ms / 1e3


def _trial(costs, **kwargs):
    clock, calls = FakeClock(), []
    sessions = {t: FakeSession(clock, ms, calls) for t, ms in costs.items()}
    return fastest(sessions, lambda s: s.run(), clock=clock, **kwargs), sessions, calls


@pytest.mark.parametrize("costs, chosen", [
    ({1: 10.0, 2: 6.0, 4: 5.9}, 2),   # 4 threads are faster by less than the margin: the core is not worth it
    ({1: 10.0, 2: 12.0}, 1),           # a second thread that slows the model down is never chosen
    ({1: 10.0, 2: 9.8}, 1),            # a gain inside the margin is noise
    ({1: 10.0, 2: 8.0, 4: 4.0}, 4),
])
def test_the_fewest_threads_within_the_margin_of_the_fastest_win(costs, chosen):
    trial, _, _ = _trial(costs, runs=5, warmup=1)
    assert trial.threads == chosen
    assert trial.p50_ms == pytest.approx(costs) and trial.runs == 5
    assert trial.to_dict()["p50_ms"] == {str(t): round(ms, 3) for t, ms in costs.items()}


def test_candidates_are_timed_interleaved_after_their_warmup():
    trial, sessions, calls = _trial({1: 3.0, 2: 2.0}, runs=4, warmup=2)
    warm, timed = calls[:4], calls[4:]
    assert warm == [sessions[1]] * 2 + [sessions[2]] * 2
    assert timed == [sessions[1], sessions[2]] * 4


def test_a_slow_outlier_run_does_not_decide():
    clock = FakeClock()
    costs = iter([10.0] * 3 + [1.0] * 3 + [10.0, 1.0, 10.0, 50.0, 10.0, 1.0, 10.0, 1.0, 10.0, 1.0])
    session = type("S", (), {"run": lambda self: setattr(clock, "now", clock.now + next(costs) / 1e3)})
    trial = fastest({1: session(), 2: session()}, lambda s: s.run(), runs=5, warmup=3, clock=clock)
    assert trial.threads == 2 and trial.p50_ms[2] == pytest.approx(1.0)


@pytest.mark.parametrize("ms, runs", [(5.0, 40), (50.0, 20), (400.0, 10)])
def test_runs_fit_the_budget_of_the_slowest_candidate(ms, runs):
    trial, _, calls = _trial({1: ms, 2: ms / 2}, warmup=1)
    assert trial.runs == runs and len(calls) == 2 * (1 + runs)


def test_one_candidate_is_not_timed():
    trial, _, calls = _trial({1: 5.0})
    assert trial.threads == 1 and trial.p50_ms == {} and calls == []
    with pytest.raises(ValueError):
        fastest({}, lambda s: None)


@pytest.mark.parametrize("cores, workers, expected", [(1, 1, [1]), (2, 1, [1, 2]), (2, 2, [1]), (8, 1, [1, 2, 4]),
                                                      (8, 2, [1, 2, 4]), (6, 2, [1, 2]), (64, 1, [1, 2, 4])])
def test_candidates_share_the_cores_among_workers(cores, workers, expected):
    assert candidate_threads(workers, cores=cores) == expected


def test_predictor_auto_keeps_the_session_it_timed_fastest(host_export_int8):
    from runtime.predictor import Predictor, PredictorOptionError

    texts = ["a gripping, funny film", "dull and far too long", "the plot makes no sense at all"]
    fixed = Predictor(host_export_int8, threads=1)
    auto = Predictor(host_export_int8, threads=AUTO, thread_candidates=[2, 1])
    assert auto.threads in (1, 2) and set(auto.thread_trial.p50_ms) == {1, 2}
    assert auto.session.get_session_options().intra_op_num_threads == auto.threads
    np.testing.assert_allclose(auto.logits(texts), fixed.logits(texts), atol=1e-5, rtol=1e-5)
    assert auto.summary()["runtime"]["thread_trial"]["threads"] == auto.threads
    assert "thread_trial" not in fixed.summary()["runtime"]
    single = Predictor(host_export_int8, threads=AUTO, thread_candidates=[1])
    assert single.threads == 1 and single.thread_trial is None
    for bad in (dict(threads="fast"), dict(threads=True), dict(threads=AUTO, thread_candidates=[0, 1]),
                dict(threads=AUTO, thread_candidates=[])):
        with pytest.raises(PredictorOptionError, match="thread"):
            Predictor(host_export_int8, **bad)


def test_the_server_times_threads_by_default_within_its_share_of_the_cores(host_export_int8, monkeypatch):
    from fastapi.testclient import TestClient

    from runtime.serve import ServeConfig, ServeConfigError, create_app

    assert ServeConfig("m").threads == AUTO and ServeConfig("m", threads="3").threads == 3
    for bad in ("0", "x", 0, -1):
        with pytest.raises(ServeConfigError, match="threads"):
            ServeConfig("m", threads=bad)
    monkeypatch.setattr(thread_choice, "usable_cores", lambda: 4)
    app = create_app(ServeConfig(str(host_export_int8), workers=2, self_check=False))
    with TestClient(app) as client:
        runtime = client.get("/v1/model").json()["runtime"]
    assert set(runtime["thread_trial"]["p50_ms"]) == {"1", "2"} and runtime["threads"] in (1, 2)
    monkeypatch.setattr(thread_choice, "usable_cores", lambda: 2)
    app = create_app(ServeConfig(str(host_export_int8), workers=2, self_check=False))
    with TestClient(app) as client:
        runtime = client.get("/v1/model").json()["runtime"]
    assert runtime["threads"] == 1 and "thread_trial" not in runtime  # one core each: nothing to time
