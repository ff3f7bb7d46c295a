"""Living through a broker or database outage: jittered backoff and what librdkafka says about the brokers.

The engines never exit because Kafka or the database went away: they report not-ready, wait with a
bounded, jittered backoff, and resume. ``KafkaWatch`` turns librdkafka's ``error_cb`` reports into a
flag the engine's own thread acts upon; the callback runs inside ``poll``/``consume`` of the client
that reports it, i.e. in the engine's thread, and it touches no client (a client is only ever called
from the thread that owns it).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

log = structlog.get_logger("foldline.outage")

# What librdkafka reports when it cannot reach the cluster (it keeps retrying by itself meanwhile).
_DOWN = (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE, KafkaError._TIMED_OUT)

_STALE = 2.0
#: Seconds without a record after which an engine that believes Kafka is up asks the broker itself.
#: librdkafka reports a lost connection once (it suppresses repeats of the same error), so a report lost
#: in the stale window above would otherwise leave an idle engine ready through a whole outage.
QUIET_CHECK_S = 5.0
#: Seconds an engine's own client may fail to reach the cluster before a new client is asked too: one that
#: answers means the engine's client is stranded (see ``broker_answers``) and must be replaced.
STRANDED_S = 30.0
#: Seconds after which an engine's loop that has not turned is stuck in a client call: not ready.
#: librdkafka 2.16's send_offsets_to_transaction can wait past its own timeout while the coordinator is
#: away (rd_kafka_txn_op_req0 in an untimed cnd_wait, its issues #5456 and #5511); often it returns once the
#: broker is back, but after some restarts it never did (docs/reliability.md). Readiness is all that can
#: say so (no error callback runs meanwhile: they are served by the consumer's poll); liveness, after
#: longer, has the process restarted.
STALLED_S = 30.0


class Backoff:
    """Exponential backoff from ``first`` up to ``cap`` seconds, each wait drawn in [d/2, d] ("equal jitter"):
    bounded, never zero, and replicas that lost the broker together do not come back in lockstep."""

    def __init__(self, first: float = 0.5, cap: float = 10.0, rng: Callable[[], float] = random.random) -> None:
        self.first = first
        self.cap = cap
        self._rng = rng
        self._attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.first * 2.0 ** min(self._attempt, 30))
        self._attempt += 1
        return ceiling / 2 + self._rng() * ceiling / 2

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt


class KafkaWatch:
    """Whether the Kafka cluster answered lately, as seen by one engine.

    ``on_error`` is the ``error_cb`` of the engine's clients: a report that the brokers are down marks
    Kafka away. Only the engine marks it back, after a request of its own succeeded (``mark_up``). An engine
    that hears nothing for ``QUIET_CHECK_S`` (``check_due``) asks the broker itself.
    """

    def __init__(self, name: str, quiet_check: float = QUIET_CHECK_S) -> None:
        self.name = name
        self.down_since: float | None = None
        self.reason = ""
        self._up_at = 0.0
        self._quiet_check = quiet_check
        self._heard = time.monotonic()
        self._next_probe = 0.0
        self._unanswered = 0  # the engine's requests left unanswered since Kafka was reported away

    def heard(self) -> None:
        """Kafka answered: records came, or a metadata request of the engine's own did."""
        self._heard = time.monotonic()

    def check_due(self) -> bool:
        """Whether Kafka seems up but has been quiet long enough that the engine should ask (once per quiet
        period: the clock restarts here)."""
        now = time.monotonic()
        if self.down_since is None and now - self._heard >= self._quiet_check:
            self._heard = now
            return True
        return False

    def after_poll(self, got_records: bool, client: Consumer, topic: str) -> None:
        """Called by the engine after each poll of its consumer: records are news from Kafka; a quiet spell
        past ``QUIET_CHECK_S`` is answered with a bounded metadata request from ``client`` (the engine's
        thread owns it), and no answer marks Kafka away. A topic-level error still means the broker answered."""
        if got_records:
            self.heard()
        elif self.check_due():
            try:
                client.list_topics(topic, timeout=5.0)
            except (KafkaException, RuntimeError) as exc:
                self.mark_down(f"no answer to a metadata request: {exc}")
            else:
                self.heard()

    def probe(self, client: Consumer, topic: str) -> bool:
        """Whether the broker answers a metadata request for ``topic`` from ``client`` (bounded; from the
        thread that owns the client); an answer marks Kafka up."""
        try:
            meta = client.list_topics(topic, timeout=5.0)
            ok = bool(meta.brokers) and meta.topics[topic].error is None
        except (KafkaException, KeyError, RuntimeError):
            ok = False
        if ok:
            self.mark_up()
        return ok

    @property
    def up(self) -> bool:
        return self.down_since is None

    def recheck(
        self,
        backoff: Backoff,
        probe: Callable[[], bool],
        new_client_answers: Callable[[], bool],
        renew_after_outage: bool = True,
    ) -> str | None:
        """While Kafka is away, ask again whenever ``backoff`` allows: ``probe`` is the engine's bounded request
        from its own client (an answer marks Kafka up). Returns why the engine must replace its clients, or None.

        - Stranded: unanswered for ``STRANDED_S`` while a new client is answered (``stranded``).
        - Back after an outage (``renew_after_outage``, for engines with a transactional producer): librdkafka
          2.16 now and then never returns from the next send_offsets_to_transaction after a broker restart
          (a coordinator it still has cached; docs/reliability.md), so an outage ends with new clients. A
          report answered at the first request (a connection the broker closed while idle) was no outage.
        """
        if self.up:  # every turn of the engine's loop: nothing more to do while Kafka answers
            return None
        now = time.monotonic()
        if now < self._next_probe:
            return None
        self._next_probe = now + backoff.next()
        away, unanswered = self.reason, self._unanswered
        if probe():
            backoff.reset()
            return f"the broker is back after an outage ({away})" if renew_after_outage and unanswered else None
        self._unanswered += 1
        if self.stranded(new_client_answers):
            return f"the clients of {self.name} cannot reach the broker, a new client can"
        return None

    def stranded(self, new_client_answers: Callable[[], bool]) -> bool:
        """Kafka has been away from the engine's own clients for ``STRANDED_S``, yet a new client is answered
        (``new_client_answers``, the engine's ``broker_answers``): its clients are stranded and must be replaced."""
        away = self.down_since is not None and time.monotonic() - self.down_since > STRANDED_S
        return away and new_client_answers()

    def on_error(self, error: KafkaError) -> None:
        # Reports queued before the engine's own request succeeded arrive just after it: not news.
        if error.code() in _DOWN and time.monotonic() - self._up_at > _STALE:
            self.mark_down(error.str())

    def mark_down(self, reason: str) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self._next_probe = 0.0  # the first recheck asks at once
            log.warning("kafka unavailable", engine=self.name, reason=reason)
        self.reason = reason

    def mark_up(self) -> None:
        if self.down_since is not None:
            log.info(
                "kafka available again", engine=self.name, away_seconds=round(time.monotonic() - self.down_since, 1)
            )
        self.down_since = None
        self.reason = ""
        self._unanswered = 0
        self._up_at = self._heard = time.monotonic()


def wait_for_broker(
    stop: threading.Event, backoff: Backoff, answers: Callable[[], bool], beat: Callable[[], None]
) -> bool:
    """Wait out an outage: sleep ``backoff``'s next delay, then ask ``answers``, until it says yes (True) or
    ``stop`` is set (False). ``beat`` runs every round: an engine waiting on purpose is not a hung loop."""
    while not stop.is_set():
        beat()
        stop.wait(backoff.next())
        if not stop.is_set() and answers():
            return True
    return False


def broker_answers(client_config: dict[str, Any], topic: str, timeout: float = 5.0) -> bool:
    """Whether the cluster answers a metadata request from a new client of its own (made and dropped here).

    It tells a broker that is away from an engine's client that is stranded: after the one broker of the
    outage tests came back, librdkafka 2.16 clients now and then had no thread for it any more (gdb) and
    never connected again - a projector stayed not-ready for minutes, a test's producer held its records
    for good - while new clients reached the broker at once.
    """
    try:
        meta = AdminClient(dict(client_config)).list_topics(topic, timeout=timeout)
    except (KafkaException, RuntimeError):
        return False
    return bool(meta.brokers) and topic in meta.topics
