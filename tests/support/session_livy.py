"""Livy's interactive-session API (``/sessions``) in memory, as the provider hook's ``run_method``
sees it: what the session path of warm execution runs against in unit tests (no Livy, no Spark)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

OK = {"status": "ok", "data": {"text/plain": "SPOTLAKE_EXIT: 0"}}


@dataclass
class Response:
    status_code: int
    body: Any = None

    @property
    def text(self) -> str:
        return "" if self.body is None else json.dumps(self.body)

    def json(self) -> Any:
        return self.body


@dataclass
class FakeLivy:
    """Livy's /sessions API in memory: a new session is 'starting' for one poll, then 'idle'; a
    statement is 'running' for ``statement_polls`` polls, then 'available' with ``output`` (by
    default an ok one); ``log`` is every session's log (its driver's output)."""

    statement_polls: int = 0
    output: dict[str, Any] = field(default_factory=lambda: dict(OK))
    log: list[str] = field(default_factory=list)
    sessions: dict[int, dict[str, Any]] = field(default_factory=dict)
    created: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)

    def run_method(self, endpoint: str, method: str = "GET", data: Any = None, headers: Any = None) -> Response:
        parts = endpoint.strip("/").split("/")
        body = json.loads(data) if isinstance(data, str) else data
        if parts == ["sessions"] and method == "POST":
            sid = len(self.created)
            self.created.append(body)
            self.sessions[sid] = {"state": "starting", "polls": 0, "statements": []}
            return Response(201, {"id": sid, "state": "starting"})
        sid = int(parts[1])
        session = self.sessions.get(sid)
        if session is None:
            return Response(404, {"msg": f"Session '{sid}' not found."})
        if parts[2:] == ["log"]:
            # Livy: from < 0 is the last `size` lines
            size = int(body["size"])
            start = max(0, len(self.log) - size) if int(body["from"]) < 0 else int(body["from"])
            return Response(200, {"id": sid, "from": start, "total": len(self.log), "log": self.log[start : start + size]})
        if len(parts) == 2:
            if method == "DELETE":
                self.deleted.append(sid)
                del self.sessions[sid]
                return Response(200, {"msg": "deleted"})
            session["polls"] += 1
            if session["state"] == "starting" and session["polls"] > 1:
                session["state"] = "idle"
            return Response(200, {"id": sid, "state": session["state"]})
        statements = session["statements"]
        if len(parts) == 3 and method == "POST":
            statements.append({"id": len(statements), "code": body["code"], "state": "running", "polls": 0})
            return Response(201, {"id": len(statements) - 1, "state": "running"})
        statement = statements[int(parts[3])]
        if len(parts) == 5:  # cancel
            statement["state"] = "cancelled"
            return Response(200, {"msg": "canceled"})
        statement["polls"] += 1
        if statement["state"] == "running" and statement["polls"] > self.statement_polls:
            statement["state"] = "available"
            # the session's first statement loads the job code: it always ends well
            output = OK if "_spotlake_prepare" in statement["code"] else self.output
            statement["output"] = {**output, "execution_count": statement["id"]}
        return Response(200, {k: v for k, v in statement.items() if k != "polls"})

    def window_statements(self, sid: int) -> list[dict[str, Any]]:
        return [s for s in self.sessions[sid]["statements"] if "_spotlake_run" in s["code"]]

    def loads(self, sid: int) -> int:
        return sum("_spotlake_prepare" in s["code"] for s in self.sessions[sid]["statements"])
