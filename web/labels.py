"""What the pages call things: stages, categories, satisfaction levels and the like, translated.

The API speaks in codes (``co_plan``, ``elderly_care``, level ``2``); these are their names on a
page, in English here and in Chinese in the message catalogue.
"""

from __future__ import annotations

from datetime import timedelta, timezone

from flask_babel import lazy_gettext as _l

CHINA = timezone(timedelta(hours=8), "CST")  # the communities' clock: China Standard Time, no daylight saving

STAGES = {
    "co_plan": _l("Co-planning"), "co_build": _l("Co-building"), "co_manage": _l("Co-managing"),
    "co_evaluate": _l("Co-evaluating"), "co_share": _l("Co-sharing"),
    "rejected": _l("Rejected by the council"), "withdrawn": _l("Withdrawn"),
}
FIVE_STAGES = ("co_plan", "co_build", "co_manage", "co_evaluate", "co_share")
PHASES = {
    "collecting_cosigners": _l("Collecting co-signers"), "deliberation": _l("Deliberation"),
    "voting": _l("Council vote"), "building": _l("Building"), "maintaining": _l("Maintaining"),
    "evaluating": _l("Evaluating"), "results_pending": _l("Results pending"),
    "published": _l("Results published"), "ended": _l("Ended"),
}
CATEGORIES = {
    "environment": _l("Environment"), "facilities": _l("Public facilities"), "greening": _l("Greening"),
    "elderly_care": _l("Elderly care"), "children": _l("Children"), "culture": _l("Culture"),
    "safety": _l("Safety"), "parking": _l("Parking and traffic"), "other": _l("Other"),
}
LEVELS = {5: _l("Very satisfied"), 4: _l("Satisfied"), 3: _l("Basically satisfied"), 2: _l("Dissatisfied"),
          1: _l("Very dissatisfied")}
STANCES = {"support": _l("Support"), "oppose": _l("Oppose"), "neutral": _l("Neutral")}
CHOICES = {"yes": _l("Yes"), "no": _l("No"), "abstain": _l("Abstain")}
CONTRIBUTIONS = {"labour": _l("Labour"), "money": _l("Money"), "materials": _l("Materials"),
                 "skills": _l("Skills")}
SUBJECT_KINDS = {"cadre": _l("Cadres"), "grid_worker": _l("Grid workers"), "unit": _l("Units"),
                 "service": _l("Services"), "project": _l("Projects")}
CASE_STATUS = {"open": _l("Open"), "contacted": _l("Contacted"), "rectifying": _l("Rectifying"),
               "closed": _l("Closed"), "resolved": _l("Resolved"), "escalated": _l("Escalated"),
               "overdue": _l("Overdue")}
FUND_ENTRIES = {"credit": _l("Credit"), "reservation": _l("Reserved for a project"), "release": _l("Released"),
                "spending": _l("Spent"), "reward": _l("Reward"),
                "transfer": _l("Moved from a budgeting round to a project")}


def label(table: dict, code) -> str:
    """The name of ``code`` in ``table``, or the code itself when the API has a newer one."""
    return str(table.get(code, code if code is not None else "—"))


def yuan(fen) -> str:
    """Integer fen shown as yuan with two decimals (¥1,234.50)."""
    if fen is None:
        return "—"
    sign = "-" if fen < 0 else ""
    fen = abs(int(fen))
    return f"{sign}¥{fen // 100:,}.{fen % 100:02d}"

# The volunteer card's star levels (the volunteers service's own label mixes both languages).
STARS = {0: _l("No star yet"), 1: _l("One star"), 2: _l("Two stars"), 3: _l("Three stars"),
         4: _l("Four stars"), 5: _l("Five stars")}
