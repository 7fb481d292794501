"""Personal fields sealed with a key per person and purpose (services.kernel.personal): what opens,
what a corrected, shredded or erased key leaves — on a key store in SQLite and in PostgreSQL."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from services.kernel.events import StoredEvent, utc_now
from services.kernel.personal import MARK, PLACEHOLDER, KeyStore, PersonErased, Sealer, is_sealed


@pytest.fixture()
def keys_url(database_url) -> str:
    return database_url


@pytest.fixture()
def keys(keys_url) -> KeyStore:
    store = KeyStore(keys_url, cache_seconds=0)
    store.create_schema()
    return store


def test_a_sealed_field_opens_with_its_key_and_shows_nothing_of_the_value(keys):
    sealer = Sealer(keys)
    phone = sealer.seal("13800138000", "p-1", "contact")
    # No run of six of the number's digits anywhere in the token (its key id and ciphertext are
    # random: a shorter run, such as "138", turns up in them by chance about once in seventy).
    runs = {"13800138000"[i:i + 6] for i in range(len("13800138000") - 5)}
    assert is_sealed(phone) and not any(run in phone for run in runs)
    assert phone != sealer.seal("13800138000", "p-1", "contact")
    assert sealer.open(phone) == "13800138000"
    assert sealer.seal(phone, "p-2", "content") == phone  # sealed already: passed on as it is
    assert sealer.seal("", "p-1", "content") == "" and sealer.seal(None, "p-1", "content") is None
    assert sealer.open("plain text") == "plain text"


def test_each_person_and_purpose_has_its_own_key(keys):
    sealer = Sealer(keys)
    kid = lambda token: token.split(".")[1]  # noqa: E731
    name, comment, other = (sealer.seal("王芳", "p-1", "name"), sealer.seal("路灯坏了", "p-1", "content"),
                            sealer.seal("王芳", "p-2", "name"))
    assert len({kid(name), kid(comment), kid(other)}) == 3
    assert kid(sealer.seal("王芳芳", "p-1", "name")) == kid(name)  # the active key is used again
    with pytest.raises(ValueError):
        keys.active_key("p-1", "diary")


def test_a_token_moved_to_another_key_or_tampered_with_does_not_open(keys):
    sealer = Sealer(keys)
    mine, theirs = sealer.seal("王芳", "p-1", "name"), sealer.seal("李雷", "p-2", "name")
    swapped = f"pii1.{theirs.split('.')[1]}.{mine.split('.')[2]}"
    flipped = mine[:-2] + ("A" if mine[-2] != "A" else "B") + mine[-1]
    assert sealer.open(swapped) == PLACEHOLDER and sealer.open(flipped) == PLACEHOLDER


def test_documents_and_answers_open_with_one_lookup(keys):
    sealer = Sealer(keys)
    comment = sealer.seal('说"路灯"\\坏了', "p-1", "content")
    document = {"items": [{"comment": comment, "level": 2}, {"comment": ""}], "by": sealer.seal("王芳", "p-1", "name")}
    assert sealer.open_all(document) == {"items": [{"comment": '说"路灯"\\坏了', "level": 2}, {"comment": ""}],
                                         "by": "王芳"}
    body = json.dumps(document, ensure_ascii=False).encode()
    assert json.loads(sealer.open_json(body)) == sealer.open_all(document)


def test_a_correction_retires_the_key_and_shredding_it_leaves_the_placeholder(keys):
    sealer = Sealer(keys)
    old_phone, old_comment = sealer.seal("13800138000", "p-1", "contact"), sealer.seal("很满意", "p-1", "content")
    retired = keys.rotate("p-1", "contact")
    new_phone = sealer.seal("13900139000", "p-1", "contact")
    assert sealer.open(old_phone) == "13800138000"  # until the correction has committed
    assert keys.shred(retired, "corrected") == 1
    assert (sealer.open(old_phone), sealer.open(new_phone), sealer.open(old_comment)) == (
        PLACEHOLDER, "13900139000", "很满意")


def test_an_erasure_deletes_every_key_of_the_person_once_and_refuses_new_seals(keys):
    sealer = Sealer(keys)
    phone, name = sealer.seal("13800138000", "p-1", "contact"), sealer.seal("王芳", "p-1", "name")
    kept = sealer.seal("李雷", "p-2", "name")
    assert keys.erase("p-1", reason="withdrawn_consent", requested_at_us=1, confirmed_by="cadre-1")
    assert not keys.erase("p-1", reason="other", requested_at_us=2, confirmed_by="cadre-2")  # once
    assert (sealer.open(phone), sealer.open(name), sealer.open(kept)) == (PLACEHOLDER, PLACEHOLDER, "李雷")
    assert keys.is_erased("p-1") and not keys.is_erased("p-2")
    assert [(e["person_id"], e["reason"], e["confirmed_by"]) for e in keys.erased()] == [
        ("p-1", "withdrawn_consent", "cadre-1")]
    with pytest.raises(PersonErased) as refused:
        sealer.seal("13700137000", "p-1", "contact")
    assert refused.value.status == 409 and refused.value.reason == "person_erased"
    # nothing of the person's keys is left in the key store
    with keys.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM person_keys WHERE person_id = 'p-1'")).scalar() == 0


def test_a_process_that_kept_a_key_forgets_it_when_its_time_is_up(keys_url):
    keys = KeyStore(keys_url, cache_seconds=3600)
    keys.create_schema()
    other = KeyStore(keys_url, cache_seconds=3600)  # another process
    token = Sealer(keys).seal("王芳", "p-1", "name")
    assert Sealer(other).open(token) == "王芳"
    keys.erase("p-1", reason="withdrawn_consent", requested_at_us=1, confirmed_by="cadre-1")
    assert Sealer(keys).open(token) == PLACEHOLDER  # the eraser forgets at once
    other.forget_cached()
    assert Sealer(other).open(token) == PLACEHOLDER


def test_texts_opened_with_a_kept_key_are_kept_with_it_and_go_with_it(keys_url, monkeypatch):
    """A process that keeps a key keeps what it opened with it (tokens, and whole answers): reading
    the same tokens again decrypts nothing, for as long as the key is kept — and no longer:
    shredding the key, erasing its person, forgetting, or the key's time running out each make the
    tokens open afresh."""
    from services.kernel import personal

    decrypted: list[bytes] = []
    real = personal.AESGCM

    class Counting:
        def __init__(self, key):
            self.aead = real(key)

        def encrypt(self, nonce, data, associated_data):
            return self.aead.encrypt(nonce, data, associated_data)

        def decrypt(self, nonce, data, associated_data):
            decrypted.append(nonce)
            return self.aead.decrypt(nonce, data, associated_data)

        generate_key = staticmethod(real.generate_key)

    monkeypatch.setattr(personal, "AESGCM", Counting)
    clock = [1000.0]
    monkeypatch.setattr(personal.time, "monotonic", lambda: clock[0])
    keys = KeyStore(keys_url, cache_seconds=5)
    keys.create_schema()
    sealer = Sealer(keys)
    name, phone = sealer.seal("王芳", "p-1", "name"), sealer.seal("13800138000", "p-1", "contact")
    masked = "pii1m." + phone[len("pii1."):]
    body = json.dumps({"by": name, "phone": masked, "again": name}, ensure_ascii=False).encode()
    opened = {"by": "王芳", "phone": "138****8000", "again": "王芳"}
    assert json.loads(sealer.open_json(body)) == opened and len(decrypted) == 2
    assert json.loads(sealer.open_json(body)) == opened and sealer.open(name) == "王芳"
    assert len(decrypted) == 2  # kept: nothing decrypted again
    clock[0] += 5.1  # the key's time is up: read again, found unchanged, so its texts are still good
    assert json.loads(sealer.open_json(body)) == opened and len(decrypted) == 2
    keys.rotate("p-1", "name")
    keys.shred([name.split(".")[1]], "corrected")
    assert sealer.open(name) == PLACEHOLDER  # shredded here: its kept text went with it
    assert json.loads(sealer.open_json(body))["phone"] == "138****8000" and len(decrypted) == 2
    keys.forget_cached()
    assert sealer.open(phone) == "13800138000" and len(decrypted) == 3
    assert json.loads(sealer.open_json(body)) == {**opened, "by": PLACEHOLDER, "again": PLACEHOLDER}
    assert sealer.open_json(body) == sealer.open_json(body) and len(decrypted) == 4  # the answer kept whole
    keys.erase("p-1", reason="withdrawn_consent", requested_at_us=1, confirmed_by="cadre-1")
    assert sealer.open(phone) == PLACEHOLDER and sealer.open(masked) == PLACEHOLDER
    assert set(json.loads(sealer.open_json(body)).values()) == {PLACEHOLDER}  # erased here: the kept answer too
    no_keeping = KeyStore(keys_url, cache_seconds=0)  # keeps no key, so no text either
    token = Sealer(no_keeping).seal("李雷", "p-2", "name")
    assert [Sealer(no_keeping).open(token) for _ in range(2)] == ["李雷", "李雷"] and len(decrypted) == 6
    answer = json.dumps({"by": token}).encode()
    assert [Sealer(no_keeping).open_json(answer) for _ in range(2)] == ['{"by": "李雷"}'.encode()] * 2
    assert len(decrypted) == 8


def test_a_key_shredded_by_another_process_takes_its_kept_texts_when_read_again(keys_url, monkeypatch):
    """Texts kept with a key outlive the key's re-reading only while the key is unchanged: once
    another process has shredded it, the first read after the key's time is up finds it gone and
    its tokens open to the placeholder — and a person's many tokens are kept up to the bound, the
    oldest going first, not all at once."""
    from services.kernel import personal

    clock = [1000.0]
    monkeypatch.setattr(personal.time, "monotonic", lambda: clock[0])
    keys, other = KeyStore(keys_url, cache_seconds=5), KeyStore(keys_url, cache_seconds=5)
    keys.create_schema()
    sealer = Sealer(keys)
    names = [sealer.seal(f"王芳{i}", "p-1", "name") for i in range(3)]
    assert [sealer.open(token) for token in names] == ["王芳0", "王芳1", "王芳2"]
    monkeypatch.setattr(KeyStore, "TEXTS_PER_KEY", 2)
    kid = names[0].split(".")[1]
    keys.forget_cached()
    assert [sealer.open(token) for token in names] == ["王芳0", "王芳1", "王芳2"]
    assert list(keys._kept[kid][2]) == names[1:]  # the oldest went, the others stayed
    other.rotate("p-1", "name")
    other.shred([kid], "corrected")  # in another process
    assert sealer.open(names[2]) == "王芳2"  # kept here until the key's time is up …
    clock[0] += 5.1
    assert [sealer.open(token) for token in names] == [PLACEHOLDER] * 3  # … then read again: gone
    assert keys._kept[kid][2] == {} and keys._texts == 0


def test_the_texts_of_all_keys_together_are_bounded(keys_url, monkeypatch):
    """Past ``TEXTS_KEPT`` texts over all keys, every key's texts go at once (memory stays bounded
    however many people a process reads), and the count starts again from the one just opened."""
    keys = KeyStore(keys_url, cache_seconds=3600)
    keys.create_schema()
    sealer = Sealer(keys)
    tokens = [sealer.seal("王芳", "p-1", "name"), sealer.seal("李雷", "p-2", "name"), sealer.seal("韩梅", "p-3", "name")]
    monkeypatch.setattr(KeyStore, "TEXTS_KEPT", 2)
    assert [sealer.open(token) for token in tokens[:2]] == ["王芳", "李雷"] and keys._texts == 2
    assert sealer.open(tokens[2]) == "韩梅"
    assert keys._texts == 1 and [len(kept[2]) for kept in keys._kept.values()] == [0, 0, 1]


def test_a_kept_answer_is_opened_as_it_leaves_when_it_was_found_to_hold_a_token(keys):
    """A kept answer (services.kernel.cache.EncodedAnswer) is searched for tokens once, when it is
    made: one that holds a token — masked or not, or in the caller's keys added to it — is opened
    on every answer, and reads the placeholder once its key is erased; one that holds none is
    given byte for byte."""
    import flask

    from services.kernel.cache import EncodedAnswer
    from services.kernel.model import mask_phone
    from services.kernel.web import encoded_answer, etagged_encoded, open_personal_fields

    sealer = Sealer(keys)
    name, phone = sealer.seal("王芳", "p-1", "name"), sealer.seal("13800138000", "p-1", "contact")
    clean = EncodedAnswer.of(json.dumps({"ranked": [{"name": "环卫所", "score": 4.5}]}, ensure_ascii=False).encode())
    sealed = EncodedAnswer.of(json.dumps({"by": name}).encode())
    masked = EncodedAnswer.of(json.dumps({"phone": mask_phone(phone)}).encode())
    assert (clean.sealed, sealed.sealed, masked.sealed) == (False, True, True)
    app = flask.Flask("kept")
    open_personal_fields(app, sealer)
    app.add_url_rule("/clean", "clean", lambda: encoded_answer(clean))
    app.add_url_rule("/sealed", "sealed", lambda: encoded_answer(sealed))
    app.add_url_rule("/masked", "masked", lambda: encoded_answer(masked))
    app.add_url_rule("/added", "added", lambda: etagged_encoded(clean, {"my_name": name}, 7))
    client = app.test_client()
    assert client.get("/clean").get_data() == clean.body
    assert client.get("/sealed").get_json() == {"by": "王芳"}
    assert client.get("/masked").get_json() == {"phone": "138****8000"}
    added = client.get("/added")
    assert added.get_json() == {"ranked": [{"name": "环卫所", "score": 4.5}], "my_name": "王芳"}
    assert added.headers["ETag"] == '"7"'
    assert keys.erase("p-1", reason="withdrawn_consent", requested_at_us=1, confirmed_by="cadre-1")
    assert client.get("/sealed").get_json() == {"by": PLACEHOLDER}
    assert client.get("/masked").get_json() == {"phone": PLACEHOLDER}
    assert client.get("/added").get_json()["my_name"] == PLACEHOLDER


def test_a_command_answer_in_parts_is_opened_part_by_part_and_a_kept_part_reads_an_erasure(keys_url):
    """``command_answer_parts``: the resource's parts (JSON objects) and the caller's keys added, the
    events recorded and the id created make one answer with every token opened; a part given again
    byte for byte is found opened among the kept bodies, until its key is erased: then the next
    answer reads the placeholder. The answer holds no token for the hook to search."""
    import flask

    from services.kernel.web import command_answer_parts, open_personal_fields

    keys = KeyStore(keys_url, cache_seconds=3600)  # as a service keeps its keys (for seconds), and so what it opened
    keys.create_schema()
    sealer = Sealer(keys)
    name, other = sealer.seal("王芳", "p-1", "name"), sealer.seal("李雷", "p-2", "name")
    listed = json.dumps({"cosigners": [{"name": name, "person_id": "p-1"}]}, ensure_ascii=False).encode()
    recorded = [StoredEvent.of_row("e1", "ProjectCosigned", 1, "project-x", 3, 9, utc_now(), {"name": other}, {})]
    app = flask.Flask("parts")
    open_personal_fields(app, sealer)
    found: list[tuple[bytes, bool]] = []  # what kept_body was asked for, and whether it had it
    plain = keys.kept_body
    keys.kept_body = lambda body: (opened := plain(body), found.append((body, opened is not None)))[0]

    @app.post("/answer/<int:version>")
    def answer(version):
        stated = json.dumps({"version": version, "proposer_name": other}).encode()
        return command_answer_parts("project", [listed, stated], {"my_actions": ["cosign"]}, version, recorded, 201,
                                    "c-1")

    client = app.test_client()
    first = client.post("/answer/3")
    assert first.status_code == 201 and first.headers["ETag"] == '"3"'
    assert first.get_json() == {
        "project": {"cosigners": [{"name": "王芳", "person_id": "p-1"}], "version": 3, "proposer_name": "李雷",
                    "my_actions": ["cosign"]},
        "recorded": [{"event_type": "ProjectCosigned", "stream_id": "project-x", "version": 3, "position": 9,
                      "data": {"name": "李雷"}}],
        "created_id": "c-1"}
    assert MARK not in first.get_data() and (listed, False) in found
    found.clear()
    second = client.post("/answer/4")
    assert second.get_json()["project"]["cosigners"][0]["name"] == "王芳"
    assert (listed, True) in found  # the same part, found opened among the kept bodies
    assert keys.erase("p-1", reason="withdrawn_consent", requested_at_us=1, confirmed_by="cadre-1")
    third = client.post("/answer/5").get_json()
    assert third["project"]["cosigners"][0]["name"] == PLACEHOLDER
    assert third["project"]["proposer_name"] == "李雷" and third["recorded"][0]["data"]["name"] == "李雷"


def test_a_command_answer_in_parts_without_a_sealer_is_the_parts_joined():
    """Without sealing (no Sealer installed) the parts are joined as they are, an empty one left out."""
    import flask

    from services.kernel.web import command_answer_parts

    app = flask.Flask("plain")
    app.add_url_rule("/a", "a", lambda: command_answer_parts("resource", [b'{"a":1}', b"{}", b'{"b":[2]}'], {}, 7, []))
    answer = app.test_client().get("/a")
    assert answer.status_code == 200 and answer.headers["ETag"] == '"7"'
    assert json.loads(answer.get_data()) == {"resource": {"a": 1, "b": [2]}, "recorded": [], "created_id": None}
