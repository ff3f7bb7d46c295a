"""The backoff the engines wait with during an outage, and how librdkafka's reports mark Kafka away."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaError

from foldline.outage import Backoff, KafkaWatch, wait_for_broker


def test_backoff_doubles_up_to_its_cap_and_jitters_within_the_upper_half():
    low = Backoff(first=0.5, cap=10.0, rng=lambda: 0.0)
    high = Backoff(first=0.5, cap=10.0, rng=lambda: 1.0)
    lows = [low.next() for _ in range(10)]
    highs = [high.next() for _ in range(10)]
    assert highs[:6] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0] and set(highs[5:]) == {10.0}
    assert lows == [h / 2 for h in highs]  # never zero: replicas do not retry in a tight loop
    high.reset()
    assert high.next() == 0.5 and high.attempts == 1


def test_backoff_never_overflows_after_many_attempts():
    backoff = Backoff(first=0.5, cap=3.0)
    waits = [backoff.next() for _ in range(5000)]
    assert all(0.25 <= w <= 3.0 for w in waits) and all(w >= 1.5 for w in waits[3:])


def up(watch: KafkaWatch) -> bool:
    return watch.up  # read fresh each time (mypy would narrow a repeated ``watch.up``)


def test_watch_marks_kafka_away_on_brokers_down_and_back_only_when_told():
    watch = KafkaWatch("test")
    watch.on_error(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))  # not about reaching the cluster
    assert up(watch)
    watch.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    assert not up(watch) and watch.down_since is not None
    watch.on_error(KafkaError(KafkaError._TRANSPORT))
    assert not up(watch)
    watch.mark_up()
    assert up(watch)
    watch.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))  # queued before the probe succeeded: stale
    assert up(watch)


def test_watch_takes_a_report_after_the_grace_period():
    watch = KafkaWatch("test")
    watch.mark_up()
    watch._up_at = time.monotonic() - 5.0  # as if the probe succeeded five seconds ago
    watch.on_error(KafkaError(KafkaError._TRANSPORT))
    assert not up(watch)


def test_a_quiet_watch_asks_once_per_quiet_period_and_never_while_kafka_is_away():
    watch = KafkaWatch("test", quiet_check=0.05)
    assert not watch.check_due()  # just made: news is fresh
    time.sleep(0.06)
    assert watch.check_due()
    assert not watch.check_due()  # the clock restarted: one question per quiet period
    time.sleep(0.06)
    watch.heard()  # records came meanwhile
    assert not watch.check_due()
    watch.mark_down("gone")
    time.sleep(0.06)
    assert not watch.check_due()  # away: the engine's own probe with backoff asks instead
    watch.mark_up()
    assert not watch.check_due()


def test_wait_for_broker_asks_after_each_delay_until_answered_and_gives_up_when_stopped():
    stop = threading.Event()
    answers = iter([False, False, True])
    asked: list[int] = []
    beats: list[int] = []

    def ask() -> bool:
        asked.append(1)
        return next(answers)

    quick = Backoff(first=0.001, cap=0.002)
    assert wait_for_broker(stop, quick, ask, lambda: beats.append(1))
    assert len(asked) == 3 and len(beats) == 3  # a beat each round: the waiting engine stays live

    stop.set()
    assert not wait_for_broker(stop, quick, ask, lambda: beats.append(1))
    assert len(asked) == 3  # stopped: nothing asked any more


def test_recheck_asks_only_while_away_and_as_often_as_the_backoff_allows():
    watch = KafkaWatch("test")
    asked: list[int] = []

    def unanswered() -> bool:
        asked.append(1)
        return False

    backoff = Backoff(first=60.0)
    assert watch.recheck(backoff, unanswered, lambda: True) is None and asked == []  # Kafka is up: no question
    watch.mark_down("gone")
    assert watch.recheck(backoff, unanswered, lambda: True) is None and asked == [1]  # the first asks at once
    assert watch.recheck(backoff, unanswered, lambda: True) is None and asked == [1]  # then it waits


def answering(watch: KafkaWatch):
    """A probe the broker answers (which, like ``KafkaWatch.probe``, marks Kafka up)."""

    def probe() -> bool:
        watch.mark_up()
        return True

    return probe


def test_a_report_answered_at_the_first_request_keeps_the_clients():
    watch = KafkaWatch("test")
    watch.mark_down("connection closed while idle")
    assert watch.recheck(Backoff(), answering(watch), lambda: False) is None
    assert up(watch)


@pytest.mark.parametrize(
    ("renew", "expected"), [(True, "the broker is back after an outage (all brokers down)"), (False, None)]
)
def test_an_outage_ends_with_new_clients_for_transactional_engines_only(renew, expected):
    watch = KafkaWatch("test")
    backoff = Backoff(first=0.001)
    watch.mark_down("all brokers down")
    assert watch.recheck(backoff, lambda: False, lambda: False, renew) is None  # unanswered
    time.sleep(0.01)
    assert watch.recheck(backoff, answering(watch), lambda: False, renew) == expected
    assert up(watch) and backoff.attempts == 0
    # The count went with the outage: the next report, answered at once, is no outage.
    watch._up_at -= 5.0
    watch.on_error(KafkaError(KafkaError._TRANSPORT))
    assert watch.recheck(backoff, answering(watch), lambda: False, renew) is None


def test_clients_away_for_long_while_a_new_client_is_answered_are_stranded():
    watch = KafkaWatch("handler inv")
    watch.mark_down("all brokers down")
    assert watch.recheck(Backoff(first=0.001), lambda: False, lambda: True) is None  # not away for long yet
    watch.down_since = time.monotonic() - 31.0
    time.sleep(0.01)
    assert watch.recheck(Backoff(first=0.001), lambda: False, lambda: False) is None  # an outage: nobody answers
    time.sleep(0.01)
    renew = watch.recheck(Backoff(first=0.001), lambda: False, lambda: True)
    assert renew == "the clients of handler inv cannot reach the broker, a new client can"
