"""The one result pipeline: every tool answer, every `get_run` page, every error leaves through here.

A tool returns its full result (`ToolOutput.structured`) and names its pageable lists. The
pipeline redacts what it shows (every string, recursively, before anything is measured or
clipped), sizes the result once, and when it does not fit the output budget stores the full
result once in a run (the tool's own run, or a new one) and cuts it once (`output.cut`). The cut
is kept with the run, so `get_run(summary)` answers it again without cutting anew; `get_run`
pages the same stored result (`output.page_items`, `output.page_text`), redacting each page.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import mcp_types as types

from mcp_server.errors import Busy
from mcp_server.output import Cut, cut
from mcp_server.runs import NOT_KEPT as NOT_KEPT  # the answer's note when the rest could not be kept

if TYPE_CHECKING:
    from mcp_server.api import AppState, ToolContext, ToolOutput
    from mcp_server.runs import RunContext


@dataclass
class _Prepared:
    """What the pipeline worked out once for a run's stored result."""

    source: dict[str, Any]
    summary: dict[str, Any]
    texts: dict[str, str] = field(default_factory=dict)
    """Redacted long strings of the result, by section, for paging by character offset."""


_prepared: weakref.WeakKeyDictionary[RunContext, _Prepared] = weakref.WeakKeyDictionary()


def _answer(c: Cut, run: RunContext | None) -> dict[str, Any]:
    answer = dict(c.value)
    if run is not None:
        answer["run_id"] = run.run_id
    if c.truncated:
        answer["truncated"] = True
    else:
        answer.setdefault("truncated", False)
    return answer


def _same(full: dict[str, Any], stored: dict[str, Any]) -> bool:
    """`full` is the stored result (or a shallow copy of it): no need to cut it twice."""
    return full is stored or (full.keys() == stored.keys() and all(full[k] is stored[k] for k in full))


def stored_summary(app: AppState, run: RunContext, pageable: tuple[str, ...] = ()) -> dict[str, Any]:
    """The run's stored result, redacted and cut to the budget: computed once per stored result."""
    assert run.result is not None
    prepared = _prepared.get(run)
    if prepared is None or prepared.source is not run.result:
        c = cut(run.result, app.settings.output_budget, pageable=pageable, redact=app.redactor.redact_value)
        prepared = _Prepared(run.result, _answer(c, run))
        _prepared[run] = prepared
    return dict(prepared.summary)


def stored_text(app: AppState, run: RunContext, section: str, value: str) -> str:
    """A long string of the run's result, redacted once (pages of it are cut from this)."""
    prepared = _prepared.get(run)
    if prepared is None or run.result is None or prepared.source is not run.result:
        stored_summary(app, run)
        prepared = _prepared[run]
    text = prepared.texts.get(section)
    if text is None:
        text = prepared.texts[section] = app.redactor.redact_string(value)
    return text


def _keep(tctx: ToolContext, full: dict[str, Any], c: Cut) -> RunContext | None:
    """Keep the full result in a new run of the caller for `get_run`; None when the caller's caps
    (or the server's) leave no room: the answer is still the cut first page, `truncated`, with
    no `run_id` and a `not_kept` note saying why (never an error instead of an answer)."""
    app = tctx.app
    try:
        run = tctx.new_run()
        app.runs.finish(run)  # finished first, so storing measures the big result only once
        app.runs.store(run, summary=None, result=full, whole=True)  # whole or nothing: the answer is cut
    except Busy as exc:
        why = app.redactor.redact(str(exc))
        c.value[NOT_KEPT] = f"only the first page is shown: the rest could not be kept for get_run ({why})"
        return None
    _prepared[run] = _Prepared(full, _answer(c, run))
    return run


def finish(tctx: ToolContext, output: ToolOutput) -> types.CallToolResult:
    """The answer to a tool call: redacted, within the budget; the rest kept in a run."""
    app = tctx.app
    budget = app.settings.output_budget
    redact = app.redactor.redact_value
    run = output.run
    full = output.structured
    pageable = tuple(output.pageable)
    if run is not None and run.result is not None and _same(full, run.result):
        answer = stored_summary(app, run, pageable)
    else:
        shown = {k: v for k, v in full.items() if k not in output.run_only} if output.run_only else full
        c = cut(shown, budget, pageable=pageable, redact=redact)
        if c.truncated and run is None and not output.view:
            run = _keep(tctx, full, c)
        answer = _answer(c, run)
        if run is not None and not output.view and run.result is not None and NOT_KEPT in run.result:
            answer.setdefault(NOT_KEPT, redact(run.result[NOT_KEPT]))  # the tool's run was kept cut: say so
    if output.text is not None:
        text = app.redactor.redact(output.text)
    else:
        text = json.dumps(answer, separators=(",", ":"), default=str, ensure_ascii=False)
    if len(text) > budget:
        if NOT_KEPT in answer:
            where = "the rest could not be kept"
        elif run is not None:
            where = f"get_run({run.run_id}) has the rest"
        else:
            where = "the structured result has the rest"
        text = text[: budget - 80] + f"\n…[truncated; {where}]"
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=answer,
        is_error=output.is_error,
    )


def error_result(app: AppState | None, message: str) -> types.CallToolResult:
    """A tool error as a result with isError (redacted: it may quote project output)."""
    if app is not None:
        message = app.redactor.redact(message)
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)
