"""Running one model reply's tool calls: policy, approval, concurrent execution, results.

Every call gets exactly one result, whatever happens (unknown tool, bad arguments, denial, timeout,
exception, a client that went away), so history never holds an unanswered call. Calls and results are
published as `chat/toolCall` and `chat/toolResult` as they happen.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Protocol

import msgspec

from chatd import protocol as p
from chatd.tools import Tool, ToolContext, ToolError
from chatd.tools.policy import Rule, decide

MAX_OUTPUT_BYTES = 64 * 1024


class Approver(Protocol):
    async def approve(self, conv_id: int, origin: Any, request: p.ToolApproveParams,
                      timeout: float) -> tuple[bool, str]:
        """Ask the clients attached to the conversation; (approved, who or why)."""
        ...


class CallSite(msgspec.Struct):
    """Where the calls come from: for notifications, approvals and tool contexts."""

    conv_id: int
    conversation: str
    turn_id: str
    origin: Any
    workspace: str | None


async def run_calls(
    calls: list[p.ToolCallPart],
    tools: dict[str, Tool],
    site: CallSite,
    *,
    rules: tuple[list[Rule], ...],
    approver: Approver,
    publish: Callable[[int, str, Any, Any], None],
    approval_timeout: float = 120.0,
) -> list[p.ToolResultPart]:
    """Run the calls concurrently; results come back in call order."""
    return list(await asyncio.gather(*(
        _run_one(call, tools, site, rules, approver, publish, approval_timeout) for call in calls)))


def not_run(calls: list[p.ToolCallPart], why: str) -> list[p.ToolResultPart]:
    """Results for calls that will not run (the loop reached maxRounds): each call is still answered."""
    return [p.ToolResultPart(call_id=c.id, name=c.name, output=f"not run: {why}", is_error=True) for c in calls]


async def _run_one(call: p.ToolCallPart, tools: dict[str, Tool], site: CallSite, rules: tuple[list[Rule], ...],
                   approver: Approver, publish: Callable[..., None], approval_timeout: float) -> p.ToolResultPart:
    publish(site.conv_id, p.CHAT_TOOL_CALL, p.ToolCallNote(
        conversation=site.conversation, turn_id=site.turn_id, call_id=call.id, tool=call.name,
        arguments=call.arguments), site.origin)
    decision = "allow"
    tool = tools.get(call.name)
    if tool is None:
        output, is_error, decision = f"unknown tool {call.name!r}: it was not offered for this turn", True, "not run"
    else:
        action = decide(tool.name, tool.side_effects, call.arguments, *rules)
        if action == "ask":
            approved, who = await approver.approve(site.conv_id, site.origin, p.ToolApproveParams(
                conversation=site.conversation, turn_id=site.turn_id, call_id=call.id, tool=call.name,
                arguments=call.arguments), approval_timeout)
            action = "allow" if approved else "deny"
            decision = "approved" if approved else "denied"
            denial = f"the user did not approve this call ({who})"
        else:
            denial = "denied by policy"
            decision = "allow" if action == "allow" else "denied"
        if action == "deny":
            output, is_error = f"not run: {denial}", True
        else:
            output, is_error = await _execute(tool, call, site)
    publish(site.conv_id, p.CHAT_TOOL_RESULT, p.ToolResultNote(
        conversation=site.conversation, turn_id=site.turn_id, call_id=call.id, tool=call.name, output=output,
        is_error=is_error, decision=decision), site.origin)
    return p.ToolResultPart(call_id=call.id, name=call.name, output=output, is_error=is_error)


async def _execute(tool: Tool, call: p.ToolCallPart, site: CallSite) -> tuple[Any, bool]:
    ctx = ToolContext(conversation=site.conversation, turn_id=site.turn_id, call_id=call.id,
                      workspace=site.workspace)
    try:
        output = await asyncio.wait_for(tool.run(call.arguments, ctx), tool.timeout_s)
    except ToolError as exc:
        return str(exc), True
    except asyncio.TimeoutError:
        return f"the tool did not answer within {tool.timeout_s:g}s", True
    except ConnectionError as exc:
        return f"the tool is gone: {exc}", True
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a tool's own exception goes back to the model as an error result
        return f"{type(exc).__name__}: {exc}", True
    return _bounded(output), False


def _bounded(output: Any) -> Any:
    try:
        encoded = msgspec.json.encode(output)
    except (TypeError, msgspec.EncodeError):
        output = str(output)
        encoded = msgspec.json.encode(output)
    if len(encoded) <= MAX_OUTPUT_BYTES:
        return output
    text = output if isinstance(output, str) else encoded.decode("utf-8", "replace")
    return text[:MAX_OUTPUT_BYTES] + f"\n[truncated: the tool returned {len(encoded)} bytes]"
