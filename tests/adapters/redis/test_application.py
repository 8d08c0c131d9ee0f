"""An eventsourcing Application on PERSISTENCE_MODULE=flowweaver_redis, and racing writers."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError, StoredEvent
from flowweaver_redis import RedisApplicationRecorder, RedisDatastore

from tests.adapters.redis.support import REDIS_URL, list_keys

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]


class Dog(Aggregate):
    """An aggregate with one event: it is registered."""

    @event("Registered")
    def __init__(self, name: str) -> None:
        self.name = name


class Tally(Aggregate):
    """An aggregate that counts, for racing saves."""

    def __init__(self) -> None:
        self.count = 0

    @event("Counted")
    def add_one(self) -> None:
        self.count += 1


class Kennel(Application[UUID]):
    """A tiny application that registers dogs."""

    def register(self, name: str) -> UUID:
        dog = Dog(name)
        self.save(dog)
        return dog.id

    def name_of(self, dog_id: UUID) -> str:
        dog: Dog = self.repository.get(dog_id)
        return dog.name


@pytest.fixture
def redis_env(monkeypatch: pytest.MonkeyPatch, key_prefix: str) -> str:
    """Point eventsourcing at this module through the process environment."""
    monkeypatch.setenv("PERSISTENCE_MODULE", "flowweaver_redis")
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("REDIS_KEY_PREFIX", key_prefix)
    return key_prefix


def test_application_records_and_reads_back_through_redis(redis_env: str) -> None:
    """An Application saves, reloads, snapshots and lists its events in Redis."""
    app = Kennel(env={"IS_SNAPSHOTTING_ENABLED": "y"})
    try:
        assert isinstance(app.recorder, RedisApplicationRecorder)
        rex = app.register("Rex")
        fido = app.register("Fido")
        app.take_snapshot(rex)

        again = Kennel()  # another instance, as another process would be
        try:
            assert again.name_of(rex) == "Rex"
            assert again.name_of(fido) == "Fido"
        finally:
            again.close()

        notifications = app.notification_log.select(start=1, limit=10)
        assert [(n.id, n.originator_id, n.originator_version) for n in notifications] == [
            (1, rex, 1),
            (2, fido, 1),
        ]
        assert notifications[0].topic.endswith("Dog.Registered")
        assert app.snapshots is not None
        assert [s.originator_version for s in app.snapshots.get(rex)] == [1]
        assert list_keys(redis_env) == {
            "kennel:events:log",
            "kennel:events:seq",
            f"kennel:events:v:{rex}",
            f"kennel:events:v:{fido}",
            f"kennel:snapshots:e:{rex}",
        }
    finally:
        app.close()


def _race(*actions: Any) -> list[BaseException | None]:
    """Run the actions at the same moment on their own threads; return what each raised."""
    barrier = threading.Barrier(len(actions))
    outcomes: list[BaseException | None] = [None] * len(actions)

    def run(i: int) -> None:
        barrier.wait()
        try:
            actions[i]()
        except BaseException as e:
            outcomes[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return outcomes


def test_two_threads_appending_the_same_version_one_wins(datastore: RedisDatastore) -> None:
    """Of two threads appending version N of one aggregate, exactly one succeeds."""
    recorders = [
        RedisApplicationRecorder(datastore, events_name="app:events"),
        RedisApplicationRecorder(
            RedisDatastore(REDIS_URL, key_prefix=datastore.key_prefix), events_name="app:events"
        ),
    ]
    try:
        for version in range(1, 51):
            dog = uuid4()
            if version > 1:
                recorders[0].insert_events(
                    [StoredEvent(dog, v, "t", b"{}") for v in range(1, version)]
                )
            outcomes = _race(
                *(
                    lambda r=r, i=i, dog=dog, version=version: r.insert_events(
                        [StoredEvent(dog, version, "t", b"writer%d" % i)]
                    )
                    for i, r in enumerate(recorders)
                )
            )
            errors = [e for e in outcomes if e is not None]
            assert len(errors) == 1
            assert isinstance(errors[0], IntegrityError)
            winner = outcomes.index(None)
            stored = recorders[1].select_events(dog, gt=version - 1)
            assert [(e.originator_version, e.state) for e in stored] == [
                (version, b"writer%d" % winner)
            ]
        assert recorders[0].max_notification_id() == sum(range(1, 51))
    finally:
        recorders[1].datastore.close()


def test_two_applications_saving_the_same_aggregate_version_one_wins(redis_env: str) -> None:
    """Two application instances that both change an aggregate at version 1: one save fails."""
    apps = [Kennel(), Kennel()]
    try:
        tally = Tally()
        apps[0].save(tally)
        copies: list[Tally] = [app.repository.get(tally.id) for app in apps]
        for copy in copies:
            copy.add_one()  # version 2 on both copies

        outcomes = _race(*(lambda a=a, c=c: a.save(c) for a, c in zip(apps, copies, strict=True)))

        assert sum(e is None for e in outcomes) == 1
        assert all(isinstance(e, IntegrityError) for e in outcomes if e is not None)
        stored: Tally = apps[1].repository.get(tally.id)
        assert (stored.version, stored.count) == (2, 1)
        assert apps[0].recorder.max_notification_id() == 2
    finally:
        for app in apps:
            app.close()
