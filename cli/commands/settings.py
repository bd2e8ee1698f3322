"""``vsearch settings``: every setting, its variable, default, value in effect and meaning.

Read from the one declaration (``search.config.Settings``, section by section), so the list is
never out of date.
"""

from __future__ import annotations

import argparse

from search.config import ENV_PREFIX, Settings, setting_fields
from search.options import public_name

from ..main import EXIT_OK
from .output import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "settings",
        help="list every setting: its VSEARCH_ variable, default and the value in effect",
        description="Every setting with its environment variable (and flag where a command "
        "offers one), its default, the value in effect here (environment applied) and what "
        "it means.",
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON on stdout")
    p.set_defaults(handler=run)


SECRET = {"token"}  # never printed


def rows(settings: Settings) -> list[dict[str, object]]:
    out = []
    defaults, values = Settings().flat(), settings.flat()
    for section, f in setting_fields():
        name = public_name(f)
        value = values[f.name]
        out.append(
            {
                "setting": f.name,
                "section": section,
                "variable": ENV_PREFIX + name.upper(),
                "flag": "--" + name.replace("_", "-") if f.metadata.get("flag", True) else "",
                "default": defaults[f.name],
                "value": "***" if f.name in SECRET and value else value,
                "help": f.metadata.get("help", ""),
            }
        )
    return out


def run(args: argparse.Namespace) -> int:
    table = rows(Settings.from_env())
    if args.json:
        print_json(table)
        return EXIT_OK
    section = None
    for row in table:
        if row["section"] != section:
            section = row["section"]
            print(f"[{section}]")
        flag = f" / {row['flag']}" if row["flag"] else ""
        changed = "" if row["value"] == row["default"] else f" (default {row['default']!r})"
        print(f"{row['variable']}{flag} = {row['value']!r}{changed}")
        if row["help"]:
            print(f"    {row['help']}")
    return EXIT_OK
