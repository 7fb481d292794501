"""Answers kept at a version (services.kernel.cache): a new version or another database is a new answer."""

import sqlalchemy as sa

from services.kernel.cache import AtVersion


def test_an_answer_is_made_once_per_key_and_version_and_database():
    cache: AtVersion[dict] = AtVersion("test", size=2)
    first, second = sa.create_engine("sqlite://"), sa.create_engine("sqlite://")
    made = []

    def make(label):
        def go():
            made.append(label)
            return {"label": label}
        return go

    with first.connect() as a, second.connect() as b:
        assert cache.get(a, "p1", 3, make("p1@3")) == {"label": "p1@3"}
        assert cache.get(a, "p1", 3, make("again")) == {"label": "p1@3"}  # kept
        assert cache.get(a, "p1", 4, make("p1@4")) == {"label": "p1@4"}  # a new version: made
        assert cache.get(b, "p1", 3, make("other db")) == {"label": "other db"}  # another database
        assert cache.get(a, "p2", 1, make("p2@1")) == {"label": "p2@1"}  # size 2: p1@3 dropped
        assert cache.get(a, "p1", 3, make("p1@3 again")) == {"label": "p1@3 again"}
    assert made == ["p1@3", "p1@4", "other db", "p2@1", "p1@3 again"]


def test_an_answer_made_in_a_commands_transaction_is_kept_for_the_readers_after_it():
    cache: AtVersion[dict] = AtVersion("test", size=2)
    engine = sa.create_engine("sqlite://")
    cache.keep(engine, "p1", 5, {"label": "answered"})
    with engine.connect() as connection:
        assert cache.get(connection, "p1", 5, lambda: {"label": "made"}) == {"label": "answered"}
        assert cache.get(connection, "p1", 6, lambda: {"label": "made"}) == {"label": "made"}
    cache.keep(engine, "p2", 1, {"label": "p2"})  # size 2: the least recently used (p1@5) goes
    with engine.connect() as connection:
        assert cache.get(connection, "p1", 5, lambda: {"label": "again"}) == {"label": "again"}


def test_kept_gives_only_what_was_kept_at_that_version_and_makes_nothing():
    cache: AtVersion[dict] = AtVersion("test", size=2)
    first, second = sa.create_engine("sqlite://"), sa.create_engine("sqlite://")
    assert cache.kept(first, "p1", 3) is None  # nothing kept for this database yet
    cache.keep(first, "p1", 3, {"label": "p1@3"})
    assert cache.kept(first, "p1", 3) == {"label": "p1@3"}
    assert cache.kept(first, "p1", 4) is None  # a new version: not the answer kept
    assert cache.kept(second, "p1", 3) is None  # another database
    cache.keep(first, "p2", 1, {"label": "p2"})
    assert cache.kept(first, "p1", 3) == {"label": "p1@3"}  # looked up: now the most recently used
    cache.keep(first, "p3", 1, {"label": "p3"})  # size 2: p2 goes, not p1@3
    assert cache.kept(first, "p2", 1) is None
    assert cache.kept(first, "p1", 3) == {"label": "p1@3"}


def test_lookups_reach_the_metric_within_a_second_or_256_lookups_and_none_is_lost(monkeypatch):
    from services.kernel import cache as cache_module
    from services.kernel import metrics

    now = [1000.0]
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: now[0])
    cache: AtVersion[dict] = AtVersion("test-counted", size=4)
    hits, misses = (metrics.CACHE_LOOKUPS.labels("test-counted", kind) for kind in ("hit", "miss"))
    engine = sa.create_engine("sqlite://")
    with engine.connect() as connection:
        cache.get(connection, "p1", 1, lambda: {"made": 1})  # the first lookup is counted at once
        assert (hits._value.get(), misses._value.get()) == (0, 1)
        for _ in range(10):
            cache.get(connection, "p1", 1, lambda: {"made": 2})
        assert cache.kept(engine, "p1", 1) == {"made": 1}
        assert hits._value.get() == 0  # held: not a second yet, 11 lookups
        now[0] += 1.0
        cache.kept(engine, "p1", 2)  # a miss of kept counts nothing (its caller's get will)
        assert (hits._value.get(), misses._value.get()) == (11, 1)
        for _ in range(256):
            cache.kept(engine, "p1", 1)
        assert hits._value.get() == 11 + 256  # 256 held: added without waiting for the second


def test_the_newest_value_of_a_key_is_grown_to_a_later_version_and_an_older_one_is_made_alone():
    from services.kernel.cache import Newest

    cache: Newest[list] = Newest("test-newest", size=2)
    first, second = sa.create_engine("sqlite://"), sa.create_engine("sqlite://")
    calls = []

    def make(label):
        def go():
            calls.append(("make", label))
            return [label]
        return go

    def grow(label):
        def go(kept, since):
            calls.append(("grow", label, since))
            return [*kept, label]
        return go

    with first.connect() as a, second.connect() as b:
        assert cache.get(a, "p1", 3, make("p1@3"), grow("-")) == ["p1@3"]  # nothing kept: made
        assert cache.get(a, "p1", 3, make("-"), grow("-")) == ["p1@3"]  # the version kept
        assert cache.get(a, "p1", 5, make("-"), grow("p1@5")) == ["p1@3", "p1@5"]  # grown from 3, kept
        assert cache.get(a, "p1", 4, make("p1@4"), grow("-")) == ["p1@4"]  # older: made alone, not kept
        assert cache.get(a, "p1", 6, make("-"), grow("p1@6")) == ["p1@3", "p1@5", "p1@6"]  # from 5, not 4
        assert cache.get(b, "p1", 6, make("other db"), grow("-")) == ["other db"]  # another database
        cache.get(a, "p2", 1, make("p2@1"), grow("-"))
        cache.get(a, "p3", 1, make("p3@1"), grow("-"))  # size 2: p1 (least recently used) goes
        assert cache.get(a, "p1", 7, make("p1@7"), grow("-")) == ["p1@7"]
    assert calls == [("make", "p1@3"), ("grow", "p1@5", 3), ("make", "p1@4"), ("grow", "p1@6", 5),
                     ("make", "other db"), ("make", "p2@1"), ("make", "p3@1"), ("make", "p1@7")]


def test_a_grown_value_leaves_the_kept_one_as_it_was_and_the_lookups_are_counted_by_result(monkeypatch):
    from services.kernel import cache as cache_module
    from services.kernel import metrics
    from services.kernel.cache import Newest

    monkeypatch.setattr(cache_module.time, "monotonic", lambda: 1000.0)  # the first lookup is counted at once
    cache: Newest[list] = Newest("test-newest-counted", size=4)
    hit, grown, miss = (metrics.CACHE_LOOKUPS.labels("test-newest-counted", kind) for kind in ("hit", "grown", "miss"))
    engine = sa.create_engine("sqlite://")
    with engine.connect() as connection:
        kept = cache.get(connection, "p", 1, lambda: ["a"], lambda value, since: value)
        assert (hit._value.get(), grown._value.get(), miss._value.get()) == (0, 0, 1)
        later = cache.get(connection, "p", 2, lambda: ["made"], lambda value, since: [*value, "b"])
        assert (kept, later) == (["a"], ["a", "b"])
        assert cache.get(connection, "p", 2, lambda: ["made"], lambda value, since: ["grown again"]) is later
        monkeypatch.setattr(cache_module.time, "monotonic", lambda: 1001.0)
        cache.get(connection, "p", 2, lambda: ["made"], lambda value, since: ["grown again"])
    assert (hit._value.get(), grown._value.get(), miss._value.get()) == (2, 1, 1)


def test_encoded_objects_are_joined_into_one_holding_every_member_in_order():
    import json

    from services.kernel.cache import joined_objects
    from services.kernel.events import dumps

    page = dumps({"cosigners": [{"name": "张三"}], "vote": {"yes": 3}}).encode()
    mine = dumps({"my_actions": ["cast_ballot"]}).encode()
    joined = joined_objects(page, mine)
    assert json.loads(joined) == {"cosigners": [{"name": "张三"}], "vote": {"yes": 3}, "my_actions": ["cast_ballot"]}
    assert list(json.loads(joined)) == ["cosigners", "vote", "my_actions"]
    # an empty object adds no member (no stray comma), and a single object comes back as it was
    assert joined_objects(b"{}", page, b"{}") is page
    assert joined_objects(b"{}", b"{}") == b"{}" and joined_objects() == b"{}"
    assert json.loads(joined_objects(b'{"a":1}', b"{}", b'{"b":"}{"}')) == {"a": 1, "b": "}{"}
