"""Issue 19 through the gateway: hours only for time served, and a paper certificate checked for
what it says by anyone, without an account.

The three services run in this process behind real HTTP (a threaded WSGI server each), the
volunteers service on the test's clock so that "before", "during" and "after" an activity are
known instants; the gateway (in this process, its test client) is in front of them, exactly as
deployed: routes learnt from the services' documents, public reads let through without a token,
the per-IP rate limit applied.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import pytest

from gateway.catalogue import PREFIX
from services.kernel.model import NewEvent
from services.feedback.service import DEFINITION as FEEDBACK
from services.projects.service import DEFINITION as PROJECTS
from services.volunteers.service import DEFINITION as VOLUNTEERS
from tests.support.apps import Served, container, gateway_app, service_app
from tests.support.errors import assert_error
from tests.support.projects import FlaskClient, Person, ProjectsDriver

UTC = timezone.utc
COMMUNITY = "haicang"
START = datetime(2025, 3, 8, 1, 0, tzinfo=UTC)  # 09:00 in Xiamen; the activity runs until 13:00
END = START + timedelta(hours=4)
ORG = Person("org-1", "海沧社工站", ("organiser",), COMMUNITY)
V1 = Person("v1", "李梅", ("resident",), COMMUNITY)
V2 = Person("v2", "陈强", ("resident",), COMMUNITY)
V3 = Person("v3", "王芳", ("resident",), COMMUNITY)


class Clock:
    def __init__(self) -> None:
        self.at = START - timedelta(days=3)

    def now(self) -> datetime:
        return self.at


class Public:
    """The gateway's test client with the /api/v1 prefix, in the driver's call shape."""

    def __init__(self, app) -> None:
        self.client = FlaskClient(app.test_client())

    def request(self, method, path, json_body=None, headers=None):
        return self.client.request(method, PREFIX + path, json_body, headers)


class Platform:
    def __init__(self, tmp_path) -> None:
        self.clock = Clock()
        self.volunteers = service_app(VOLUNTEERS, f"sqlite:///{tmp_path}/volunteers.db", clock=self.clock.now)
        self.store = container(self.volunteers).store
        self.servers = {"volunteers": Served(self.volunteers),
                        "projects": Served(service_app(PROJECTS, f"sqlite:///{tmp_path}/projects.db")),
                        "feedback": Served(service_app(FEEDBACK, f"sqlite:///{tmp_path}/feedback.db"))}
        self.tmp_path = tmp_path
        self.d = ProjectsDriver(Public(self.gateway("gateway")))

    def gateway(self, directory: str, **environ):
        return gateway_app(COCREATE_DATA_DIR=str(self.tmp_path / directory), GATEWAY_UPSTREAM_TIMEOUT_SECONDS="30",
                           **{f"GATEWAY_{name.upper()}_URL": server.base_url for name, server in self.servers.items()},
                           **environ)

    def refused(self, person, method, path, body=None, status=422, reason=None, headers=None) -> dict:
        """Refused in the one error shape, through the gateway, with nothing stored."""
        before = self.store.last_position()
        error = assert_error(self.d.call(person, method, path, body, headers), status, reason)
        assert self.store.last_position() == before, "a refused request stored something"
        return error

    def card(self, person: Person) -> dict:
        return self.d.get(ORG, f"/cards/{person.person_id}")

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.store.engine.dispose()


@pytest.fixture
def platform(tmp_path):
    instance = Platform(tmp_path)
    yield instance
    instance.stop()


def publish(platform: Platform, start: datetime = START, hours: int = 4, title: str = "敬老院陪伴") -> dict:
    answer = platform.d.post(ORG, "/activities", {
        "title": title, "community_id": COMMUNITY, "place": "海沧敬老院",
        "organiser": {"kind": "social_organisation", "id": "so-1", "name": "海沧社工站"},
        "starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=hours)).isoformat(),
        "capacity": 5, "planned_minutes": 180, "points_per_hour": 20}, status=201)
    return {"id": answer["created_id"], **answer["resource"]}


# -- 1. hours only for time served ------------------------------------------------------------------

def test_attendance_in_the_future_is_refused_and_nothing_can_be_approved(platform):
    """The incident: attendance recorded three days ahead and approved (180 minutes credited)."""
    d = platform.d
    for person in (V1, V2):
        d.post(person, "/cards", {}, status=201)
    activity = publish(platform)
    path = f"/activities/{activity['id']}"
    d.post(V1, f"{path}/signups", status=201)

    error = platform.refused(ORG, "POST", f"{path}/attendance", {"person_id": "v1"}, 422, "attendance_in_future")
    assert error["errors"]["now"] == "2025-03-05T01:00:00.000000Z"
    platform.refused(ORG, "POST", f"{path}/attendance", {"person_id": "v1", "start": START.isoformat(),
                                                         "end": (START + timedelta(hours=3)).isoformat()},
                     422, "attendance_in_future")
    platform.refused(ORG, "POST", f"{path}/retroactive-entries", {"person_id": "v1", "reason": "提前补录"},
                     409, "activity_not_over")
    # Approval cannot credit the refused attendance: there is no claim to approve.
    platform.refused(ORG, "POST", f"{path}/claims/v1/decision", {"decision": "approve"}, 422, "unknown_claim")
    assert (platform.card(V1)["approved_minutes"], platform.card(V1)["pending_claims"]) == (0, 0)

    # During the activity: within its time and not after now; by default from the start until now.
    platform.clock.at = START + timedelta(hours=2)
    platform.refused(ORG, "POST", f"{path}/attendance", {"person_id": "v2", "end": (START + timedelta(hours=3))
                                                         .isoformat()}, 422, "attendance_in_future")
    platform.refused(ORG, "POST", f"{path}/attendance", {"person_id": "v2", "start": (START - timedelta(hours=1))
                                                         .isoformat(), "end": START.isoformat()},
                     422, "outside_activity_time")
    platform.refused(ORG, "POST", f"{path}/attendance", {"person_id": "v2", "end": (END + timedelta(hours=1))
                                                         .isoformat()}, 422, "outside_activity_time")
    recorded = d.post(ORG, f"{path}/attendance", {"person_id": "v2"}, status=201)
    claim = recorded["recorded"][0]["data"]
    assert (claim["start"], claim["end"], claim["minutes"]) == (
        "2025-03-08T01:00:00.000000Z", "2025-03-08T03:00:00.000000Z", 120)
    approved = d.post(ORG, f"{path}/claims/v2/decision", {"decision": "approve"}, status=200)["resource"]
    assert approved["approved_minutes"] == 120

    # After it: a retroactive entry within its time is taken; one reaching past the end is not.
    platform.clock.at = END + timedelta(days=1)
    platform.refused(ORG, "POST", f"{path}/retroactive-entries", {"person_id": "v1", "reason": "漏签",
                                                                  "end": (END + timedelta(minutes=30)).isoformat()},
                     422, "outside_activity_time")
    entry = d.post(ORG, f"{path}/retroactive-entries", {"person_id": "v1", "reason": "当天系统故障，补录"}, status=201)
    assert entry["recorded"][0]["data"]["minutes"] == 180
    assert d.post(ORG, f"{path}/claims/v1/decision", {"decision": "approve"}, status=200)["resource"][
        "approved_minutes"] == 180


def test_check_in_opens_thirty_minutes_before_the_start(platform):
    d = platform.d
    d.post(V1, "/cards", {}, status=201)
    activity = publish(platform)
    path, code = f"/activities/{activity['id']}", activity["checkin_code"]
    d.post(V1, f"{path}/signups", status=201)

    platform.clock.at = START - timedelta(minutes=31)
    error = platform.refused(V1, "POST", f"{path}/check-in", {"code": code}, 409, "checkin_not_open")
    assert (error["errors"]["opens_at"], error["errors"]["opens_minutes_before"]) == (
        "2025-03-08T00:30:00.000000Z", 30)
    platform.clock.at = START - timedelta(minutes=30)
    checked_in = d.post(V1, f"{path}/check-in", {"code": code}, status=201)
    assert checked_in["recorded"][0]["data"]["at"] == "2025-03-08T00:30:00.000000Z"

    # Checking out after the end claims the activity's time only: neither the half hour before
    # the start nor the time after the end (then capped by the planned 180 minutes).
    platform.clock.at = END + timedelta(hours=1)
    out = d.post(V1, f"{path}/check-out", {"code": code}, status=201)
    claim = out["recorded"][0]["data"]
    assert (claim["start"], claim["end"], claim["attended_minutes"], claim["minutes"]) == (
        "2025-03-08T01:00:00.000000Z", "2025-03-08T05:00:00.000000Z", 240, 180)

    late = publish(platform, start=START - timedelta(days=1), title="已结束的活动")
    d.post(V1, f"/activities/{late['id']}/signups", status=409)  # over: no sign-up either
    platform.refused(V1, "POST", f"/activities/{late['id']}/check-in", {"code": late["checkin_code"]}, 409,
                     "not_signed_up")


def test_check_in_window_is_a_setting(tmp_path):
    """VOLUNTEERS_CHECKIN_OPENS_MINUTES: the window of the process (here 10 minutes)."""
    clock = Clock()
    app = service_app(VOLUNTEERS, f"sqlite:///{tmp_path}/v.db", clock=clock.now,
                      VOLUNTEERS_CHECKIN_OPENS_MINUTES="10")
    try:
        d = ProjectsDriver(FlaskClient(app.test_client()))
        d.post(V1, "/cards", {}, status=201)
        activity = d.post(ORG, "/activities", {
            "title": "巡河", "community_id": COMMUNITY, "place": "河边",
            "organiser": {"kind": "social_organisation", "id": "so-1", "name": "海沧社工站"},
            "starts_at": START.isoformat(), "ends_at": END.isoformat(), "capacity": 5, "planned_minutes": 180,
            "points_per_hour": 20}, status=201)
        path, code = f"/activities/{activity['created_id']}", activity["resource"]["checkin_code"]
        d.post(V1, f"{path}/signups", status=201)
        clock.at = START - timedelta(minutes=11)
        assert_error(d.call(V1, "POST", f"{path}/check-in", {"code": code}), 409, "checkin_not_open")
        clock.at = START - timedelta(minutes=10)
        d.post(V1, f"{path}/check-in", {"code": code}, status=201)
    finally:
        container(app).store.engine.dispose()


def test_a_claim_stored_ahead_of_time_still_loads_but_is_not_approved_before_it_happens(platform):
    """Events stored before the rule (attendance recorded days ahead) load as they were; the rule
    judges the new command: approval waits until the time has passed, rejection does not."""
    d = platform.d
    for person in (V1, V3):
        d.post(person, "/cards", {}, status=201)
    activity = publish(platform)
    card_version = platform.card(V3)["version"]
    activity_version = d.get(ORG, f"/activities/{activity['id']}")["version"]
    claim = {"person_id": "v3", "claim_id": "legacy-1", "activity_id": activity["id"], "activity_title": "敬老院陪伴",
             "community_id": COMMUNITY, "start": "2025-03-08T01:00:00.000000Z", "end": "2025-03-08T05:00:00.000000Z",
             "attended_minutes": 240, "minutes": 180, "day": "2025-03-08", "points_per_hour": 20,
             "retroactive": False, "reason": "", "recorded_by": "org-1"}
    platform.store.append("card-v3", card_version, [NewEvent("ClaimRecorded", claim)])
    platform.store.append(f"activity-{activity['id']}", activity_version, [NewEvent("AttendanceRecorded", {
        "activity_id": activity["id"], "person_id": "v3", "claim_id": "legacy-1", "retroactive": False})])

    assert platform.card(V3)["pending_claims"] == 1
    error = platform.refused(ORG, "POST", f"/activities/{activity['id']}/claims/v3/decision", {"decision": "approve"},
                             409, "attendance_in_future")
    assert error["errors"]["end"] == "2025-03-08T05:00:00.000000Z"
    assert platform.card(V3)["approved_minutes"] == 0
    platform.clock.at = END + timedelta(minutes=1)
    assert d.post(ORG, f"/activities/{activity['id']}/claims/v3/decision", {"decision": "approve"},
                  status=200)["resource"]["approved_minutes"] == 180


# -- 3. a certificate checked for what it says, by anyone ------------------------------------------

def certified(platform: Platform) -> dict:
    """V1 with 3 approved hours on 8 March and a certificate for March, issued on 1 April."""
    d = platform.d
    d.post(V1, "/cards", {}, status=201)
    activity = publish(platform)
    platform.clock.at = datetime(2025, 4, 1, 2, 0, tzinfo=UTC)
    d.post(ORG, f"/activities/{activity['id']}/attendance", {"person_id": "v1"}, status=201)
    d.post(ORG, f"/activities/{activity['id']}/claims/v1/decision", {"decision": "approve"}, status=200)
    return d.post(ORG, "/certificates", {"person_id": "v1", "period_from": "2025-03-01", "period_to": "2025-03-31",
                                         "issuing_organisation": "海沧区志愿者协会"}, status=201)["resource"]


def paper(certificate: dict, **changes) -> dict:
    """What the printed certificate says, as a third party types it in."""
    return {"value": certificate["verification"], "holder": certificate["name"],
            "card_number": certificate["card_number"], "period_from": certificate["period_from"],
            "period_to": certificate["period_to"], "issued_on": certificate["issued_on"],
            "issuing_organisation": certificate["issuing_organisation"],
            "total_hours": str(certificate["total_hours"]), "total_minutes": certificate["total_minutes"],
            "entries": ",".join(f"{e['day']}:{e['minutes'] / 60:.1f}" for e in certificate["activities"]),
            **changes}


def check(platform: Platform, number: str, presented: dict, headers=None):
    return platform.d.call(None, "GET", f"/public/certificates/{number}/verification?{urlencode(presented)}",
                           headers=headers)


def test_a_paper_certificate_is_checked_for_what_it_says_without_an_account(platform):
    certificate = certified(platform)
    number = certificate["certificate_number"]
    before = platform.store.last_position()

    genuine = check(platform, number, paper(certificate))
    assert genuine.status_code == 200, genuine.body
    assert genuine.json() == {"valid": True, "match": {part: True for part in (
        "value", "holder", "card_number", "period_from", "period_to", "issued_on", "issuing_organisation",
        "total_minutes", "total_hours", "entries")}}
    assert "ETag" not in genuine.headers

    # The paper of issue 19: 101 hours shown, the value genuine. Only the parts that differ fail.
    forged = check(platform, number, paper(certificate, total_hours="101.0", total_minutes=6060)).json()
    assert forged["valid"] is False
    assert {part for part, same in forged["match"].items() if not same} == {"total_hours", "total_minutes"}
    other_holder = check(platform, number, paper(certificate, holder="张三", card_number="YGK-0000000000")).json()
    assert {part for part, same in other_holder["match"].items() if not same} == {"holder", "card_number"}
    other_entries = check(platform, number, paper(certificate, entries="2025-03-08:3.0,2025-03-09:98.0")).json()
    assert {part for part, same in other_entries["match"].items() if not same} == {"entries"}
    other_period = check(platform, number, paper(certificate, period_to="2025-12-31")).json()
    assert {part for part, same in other_period["match"].items() if not same} == {"period_to"}
    # Only what is presented is answered, and never a stored value.
    few = check(platform, number, {"value": certificate["verification"], "total_hours": "101"}).json()
    assert few == {"valid": False, "match": {"value": True, "total_hours": False}}
    for answer in (forged, other_holder, few):
        text = str(answer)
        assert "李梅" not in text and "3.0" not in text and "180" not in text and certificate["card_number"] not in text

    # A wrong value (a digest made up for the forged paper) and an unknown number answer alike:
    # every presented part false — no oracle for which numbers exist, nor for a holder's details.
    made_up = ("0" if certificate["verification"][0] != "0" else "1") + certificate["verification"][1:]
    wrong = check(platform, number, paper(certificate, value=made_up))
    unknown = check(platform, "ZYFW-20250401-00000000", paper(certificate))
    assert (wrong.status_code, unknown.status_code) == (200, 200)
    assert wrong.json() == unknown.json() == {"valid": False, "match": {part: False for part in paper(certificate)}}
    assert wrong.body == unknown.body

    # No token is needed and one is not read (a garbage one changes nothing).
    assert check(platform, number, paper(certificate), headers={"Authorization": "Bearer nonsense"}).json() == \
        genuine.json()
    # The query is strict: the value is required, an unknown key or a malformed part is refused.
    platform.refused(None, "GET", f"/public/certificates/{number}/verification?holder=李梅", status=422)
    platform.refused(None, "GET", f"/public/certificates/{number}/verification?"
                                  f"{urlencode(paper(certificate, hours='5'))}", status=422)
    platform.refused(None, "GET", f"/public/certificates/{number}/verification?"
                                  f"{urlencode(paper(certificate, entries='8 March: 3 hours'))}", status=422)
    platform.refused(None, "GET", f"/public/certificates/{number}/verification?value=abc", status=422)
    # The token routes still need one.
    platform.refused(None, "POST", f"/certificates/{number}/verification", {}, 401, "unauthenticated")
    platform.refused(None, "GET", f"/certificates/{number}", None, 401, "unauthenticated")
    assert platform.store.last_position() == before, "checking a certificate stored something"


def test_the_public_check_is_rate_limited_per_address(platform):
    certificate = certified(platform)
    limited = ProjectsDriver(Public(platform.gateway("limited", GATEWAY_RATE_LIMIT_PER_IP="3")))
    path = (f"/public/certificates/{certificate['certificate_number']}/verification?"
            f"{urlencode({'value': certificate['verification'], 'total_hours': '101.0'})}")
    for _ in range(3):
        assert limited.call(None, "GET", path).status_code == 200
    refused = limited.call(None, "GET", path)
    assert_error(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1


def test_the_web_client_prints_the_check_and_offers_it_to_visitors(platform, tmp_path):
    """The certificate page prints the public check's address and value; a visitor without an
    account checks a paper at /certificates/verify (the web client, on the gateway's public read)."""
    from web import config as web_config
    from web.app import create_app as create_web

    certificate = certified(platform)
    number = certificate["certificate_number"]
    gateway = Served(platform.gateway("web-gateway"))
    web = create_web(web_config.load({
        "WEB_SECRET_KEY": "s" * 40, "WEB_GATEWAY_URL": gateway.base_url, "WEB_DATA_DIR": str(tmp_path / "web"),
        "WEB_COOKIE_SECURE": "false", "WEB_UPSTREAM_TIMEOUT_SECONDS": "10"}))
    try:
        with web.test_request_context():
            import flask
            rendered = flask.render_template(
                "volunteer/certificate.html", certificate=certificate, stars={}, claim_status={},
                activity_status={}, organiser_kinds={}, sources={}, can_organise=False, tab="certificates",
                check_url=f"http://localhost/certificates/verify?number={number}",
                api_path=f"/api/v1/public/certificates/{number}/verification")
        assert f"/certificates/verify?number={number}" in rendered
        assert f"GET /api/v1/public/certificates/{number}/verification?value={certificate['verification']}" in rendered
        assert certificate["verification"] in rendered

        client = web.test_client()
        page = client.get(f"/certificates/verify?{urlencode(paper(certificate, total_hours='101.0'))}&number={number}",
                          headers={"Accept-Language": "en"})
        assert page.status_code == 200, page.get_data(as_text=True)[:500]
        html = page.get_data(as_text=True)
        assert 'id="check-result"' in html
        # In Chinese whatever the browser asks (the web client's rule): 不一致 = does not match.
        assert "不一致" in html.split('id="match-total_hours"')[1].split("</li>")[0]
        assert "不一致" not in html.split('id="match-holder"')[1].split("</li>")[0]
        genuine = client.get(f"/certificates/verify?{urlencode(paper(certificate))}&number={number}",
                             headers={"Accept-Language": "en"}).get_data(as_text=True)
        assert "不一致" not in genuine.split('id="check-result"')[1].split("</section>")[0]
        assert client.get("/certificates/verify").status_code == 200  # the empty form
    finally:
        with web.app_context():
            web.extensions["sqlalchemy"].engine.dispose()
        gateway.stop()
