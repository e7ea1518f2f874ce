"""Approval policy: for each tool call, allow, ask the user, or deny.

Rules come from the conversation (`params.toolPolicy`) first, then the config; the first match wins.
A rule matches a tool name glob and, optionally, a regular expression searched in the call's
arguments (as JSON), so "deny run_command when arguments match `rm -rf`" holds. Without a match:
side-effecting tools ask, others are allowed.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Literal

import msgspec

Action = Literal["allow", "ask", "deny"]


class Rule(msgspec.Struct, forbid_unknown_fields=True):
    tool: str
    action: Action
    arguments: str | None = None


def parse_rules(raw: Any) -> list[Rule]:
    """Rules from JSON/TOML: a list of {tool, action, arguments?} or a {glob: action} table."""
    if raw is None:
        return []
    if isinstance(raw, dict):
        raw = [{"tool": k, "action": v} for k, v in raw.items()]
    rules = msgspec.convert(raw, list[Rule])
    for rule in rules:
        if rule.arguments is not None:
            re.compile(rule.arguments)
    return rules


def decide(tool_name: str, side_effects: bool, arguments: dict[str, Any], *rule_sets: list[Rule]) -> Action:
    encoded: str | None = None
    for rules in rule_sets:
        for rule in rules:
            if not fnmatch.fnmatchcase(tool_name, rule.tool):
                continue
            if rule.arguments is not None:
                if encoded is None:
                    encoded = msgspec.json.encode(arguments).decode()
                if not re.search(rule.arguments, encoded):
                    continue
            return rule.action
    return "ask" if side_effects else "allow"
