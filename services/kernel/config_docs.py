"""The configuration reference, generated from the settings' own docs.

``python -m services.kernel.config_docs`` prints it; ``--write`` puts it into
``docs/configuration.md`` between the ``settings`` markers. A test checks that the page holds what
this module generates, so the page cannot drift from the code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from services.kernel.config import GatewaySettings, ServiceSettings
from services.kernel.settings import describe
from web import config as web_config  # the web client reads its own settings (it imports no service code)

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def _default(value: str) -> str:
    if value in ("", "()"):
        return "—"
    return f"`{value.lower() if value in ('True', 'False') else value}`"


def _table(title: str, rows) -> list[str]:
    lines = [f"### {title}", "", "| variable (own prefix / platform-wide / alias) | default | meaning |",
             "| --- | --- | --- |"]
    for names, default, doc in rows:
        variables = " / ".join(f"`{name}`" for name in names.split(" / "))
        lines.append(f"| {variables} | {_default(default)} | {doc.replace('|', '/')} |")
    return lines + [""]


def render() -> str:
    lines = _table("Services and their workers (`<SERVICE>` is `PROJECTS`, `VOLUNTEERS` or `FEEDBACK`)",
                   describe(ServiceSettings, "<SERVICE>"))
    lines += _table("The gateway and its feed worker", describe(GatewaySettings, "GATEWAY"))
    lines += _table("The web client", web_config.describe())
    return "\n".join(lines).rstrip() + "\n"


def write(page: Path = PAGE) -> None:
    text = page.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _old, tail = rest.split(END, 1)
    page.write_text(f"{head}{START}\n{render()}{END}{tail}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write it into {PAGE.relative_to(PAGE.parents[1])}")
    if parser.parse_args().write:
        write()
    else:
        print(render(), end="")


if __name__ == "__main__":
    main()
