"""Generated pages of the docs: never typed twice, always read from the source.

    python docs/gen_reference.py recipe|cli|results     # print one as Markdown

- recipe: every field of the recipe's dataclasses in hvdkit/config.py (type, default and the
  docstring written under it), read with `ast` for the docstrings and `dataclasses` for the
  defaults;
- cli: every command and option of `hvdkit` from hvdkit.cli.build_parser();
- results: the tables benchmarks record in benchmarks/results/*.json (benchmarks/results.py).

docs/hooks.py puts them into the pages at build time (`<!-- generate: NAME -->`).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "hvdkit" / "config.py"
RESULTS = ROOT / "benchmarks" / "results"


def _attribute_docs(path: Path) -> dict[str, dict[str, tuple[str, str]]]:
    """class -> field -> (annotation as written, the docstring under it), in source order."""
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields: dict[str, tuple[str, str]] = {}
        body = node.body
        for i, stmt in enumerate(body):
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            doc = ""
            if i + 1 < len(body):
                nxt = body[i + 1]
                if (isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                        and isinstance(nxt.value.value, str)):
                    doc = " ".join(nxt.value.value.split())
            fields[stmt.target.id] = (ast.unparse(stmt.annotation), doc)
        out[node.name] = fields
    return out


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    """Text for a table cell: `|` escaped; `<` and `>` outside code spans made literal."""
    parts = text.replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def recipe_reference() -> str:
    from hvdkit import config

    docs = _attribute_docs(CONFIG)
    recipe_fields = {f.name: f for f in dataclasses.fields(config.Recipe)}
    lines: list[str] = []
    top = [name for name, f in recipe_fields.items()
           if not (isinstance(f.type, str) and f.type.endswith("Config"))]
    lines += ["## Top level", "", "| field | type | default | meaning |", "|---|---|---|---|"]
    for name in top:
        annotation, doc = docs["Recipe"][name]
        lines.append(f"| `{name}` | `{_cell(annotation)}` | {_default(recipe_fields[name])} "
                     f"| {_cell(doc)} |")
    for name in recipe_fields:
        if name in top:
            continue
        cls = getattr(config, docs["Recipe"][name][0])
        lines += ["", f"## `{name}`", ""]
        if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
            lines += [" ".join(cls.__doc__.split()), ""]
        lines += ["| field | type | default | meaning |", "|---|---|---|---|"]
        for sub in dataclasses.fields(cls):
            annotation, doc = docs[cls.__name__].get(sub.name, ("", ""))
            if not doc:  # the reference is the docstrings: a field without one fails the build
                raise ValueError(f"hvdkit/config.py: {cls.__name__}.{sub.name} has no docstring")
            lines.append(f"| `{name}.{sub.name}` | `{_cell(annotation)}` | {_default(sub)} "
                         f"| {_cell(doc)} |")
    return "\n".join(lines) + "\n"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help_of(parser: argparse.ArgumentParser, name: str) -> str:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name:
                    return choice.help or ""
    return ""


def _options(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | default | meaning |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
        if action.choices and not isinstance(action.choices, dict):
            name += " {" + ",".join(map(str, action.choices)) + "}"
        default = action.default
        flag = action.nargs == 0  # store_true/false, const, version: no value to default
        shown = ("" if flag or default in (None, argparse.SUPPRESS, [], "")
                 or not action.option_strings else f"`{default}`")
        rows.append(f"| {name} | {shown} | {_cell(action.help or '')} |")
    return rows if len(rows) > 2 else []


def _command(prefix: str, parser: argparse.ArgumentParser, help_: str, out: list[str]) -> None:
    out += ["", f"## `{prefix}`", ""]
    if help_:
        out += [help_[0].upper() + help_[1:] + ".", ""]
    out += ["```", parser.format_usage().strip().removeprefix("usage: "), "```", ""]
    out += _options(parser)
    for name, sub in _subcommands(parser).items():
        _command(f"{prefix} {name}", sub, _help_of(parser, name), out)


def cli_reference() -> str:
    from hvdkit.cli import build_parser

    parser = build_parser()
    out = ["Generated from `hvdkit.cli.build_parser()`; `hvdkit COMMAND --help` prints the same."]
    out += ["", "```", parser.format_usage().strip().removeprefix("usage: "), "```", ""]
    out += _options(parser)
    for name, sub in _subcommands(parser).items():
        _command(f"hvdkit {name}", sub, _help_of(parser, name), out)
    return "\n".join(out) + "\n"


def results_tables() -> str:
    """Every recorded benchmark table, each with where and when it was measured."""
    files = sorted(RESULTS.glob("*.json"))
    if not files:
        return ("*No benchmark has recorded a result in `benchmarks/results/` yet; the tables "
                "below were measured by hand, on the machine and date each one names.*\n")
    out: list[str] = []
    for path in files:
        r = json.loads(path.read_text())
        host = r.get("host", {})
        out += [f"### {r['benchmark']}: {r.get('title', '')}".rstrip(": "), "",
                f"Measured {r['date']} at commit `{r['commit'][:10]}` on {host.get('cpu', '?')}"
                f" ({host.get('cores', '?')} cores; GPU: {host.get('gpu') or 'none'}; load "
                f"average {host.get('load', '?')} at the start). Recorded in "
                f"`benchmarks/results/{path.name}`.", ""]
        columns = r["columns"]
        out += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in r["rows"]:
            out.append("| " + " | ".join(_cell(_fmt(row.get(c, ""))) for c in columns) + " |")
        if r.get("note"):
            out += ["", r["note"]]
        out.append("")
    return "\n".join(out)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def resumable_fields() -> str:
    """The fields a resumed run may change, from hvdkit.training.checkpoint's own list."""
    from hvdkit.training.checkpoint import RESUMABLE_CHANGES

    return ", ".join(f"`{name}`" for name in RESUMABLE_CHANGES)


GENERATORS = {"recipe": recipe_reference, "cli": cli_reference, "results": results_tables,
              "resumable": resumable_fields}

if __name__ == "__main__":
    sys.stdout.write(GENERATORS[sys.argv[1]]())
