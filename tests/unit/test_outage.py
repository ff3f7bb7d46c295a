"""The backoff the engines wait with during an outage, and how librdkafka's reports mark Kafka away."""

from __future__ import annotations

import threading
import time

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
