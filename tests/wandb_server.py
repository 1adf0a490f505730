"""A W&B server on loopback, for the online path's end-to-end tests: what `wandb` (the
client and its wandb-core service) asks of api.wandb.ai when an agent serves a sweep and its
runs log online, answered from memory over real HTTP.

It answers the GraphQL operations seen on the wire (wandb 0.31): Viewer, GetDefaultEntity,
GetSweep (the sweep's config as the YAML text the server keeps), CreateAgent, Heartbeat
(hands the sweep's proposals to agents, as W&B's scheduler does), UpsertBucket (a run's
config, group and sweep), CreateRunFiles (upload URLs on this server) and the organization
query; and a run's file stream (`/files/<entity>/<project>/<run>/file_stream`: history lines,
summary, exit code) and file uploads (PUT). Anything else is recorded in `unknown`, so a test
sees what a newer wandb asks that this server does not answer.

A test can also play what W&B's server does to a running sweep: stop a run (`stop`: the
sweep's early_terminate, through the run's agent's heartbeat, as wandb's agents read a `stop`
command; or a user in the UI, through the run's file stream answering `stopped`, as wandb-core
reads it, core/internal/filestream), fail a GraphQL operation with an HTTP status (`fail`),
delete the sweep (`delete_sweep`: 404 to its agents' heartbeats, the status wandb's client
turns into SweepNotFoundError), refuse a key (`api_key`: 401 to any other), and go away and
come back on the same port (`down`, `up`).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


@dataclass
class ServedRun:
    """One run as the server knows it: its upserted fields and what its file stream sent."""
    name: str
    agent: str = ""
    upserts: list[dict] = field(default_factory=list)  # each UpsertBucket's variables
    history: list[dict] = field(default_factory=list)  # wandb-history.jsonl rows, in order
    summary: dict = field(default_factory=dict)  # the last wandb-summary.json sent
    exit_code: int | None = None  # from the stream's `complete` message
    preempting: bool = False  # the stream said the run is preempted (wandb.mark_preempting)
    uploads: dict[str, bytes] = field(default_factory=dict)  # file name -> bytes PUT
    args: dict = field(default_factory=dict)  # the parameters it was handed out with
    handed: int = 0  # times handed to an agent (`run`, then `resume` after a preemption)

    @property
    def config(self) -> dict:
        """{name: value} of the run's config, as its last upsert with a config sent it."""
        for upsert in reversed(self.upserts):
            if upsert.get("config"):
                return {k: v["value"] for k, v in json.loads(upsert["config"]).items()
                        if isinstance(v, dict) and "value" in v}
        return {}

    def upserted(self, key: str):
        """The last non-empty value of an UpsertBucket variable (`sweep`, `groupName`, ...)."""
        values = [u.get(key) for u in self.upserts if u.get(key)]
        return values[-1] if values else None


class LoopbackWandb:
    """`with LoopbackWandb(sweep_config, proposals) as server:` serves one sweep,
    `entity/project/sweep_id`, at `server.url` (give it to the client as WANDB_BASE_URL).

    Each agent that has no run outstanding (handed out, not completed on its file stream,
    and listed alive in the agent's heartbeat) gets a run its agent left preempted as a `resume`
    command, else the next proposal as a `run` command; once
    the proposals are gone and its runs are done, `exit` (with `hold`, nothing: the agent
    waits, as for a bayes sweep's next proposal)."""

    def __init__(self, sweep_config: dict, proposals: list[dict], *, entity: str = "team",
                 project: str = "study", sweep_id: str = "sw001", hold: bool = False,
                 api_key: str | None = None):
        self.sweep_yaml = yaml.safe_dump(sweep_config, sort_keys=False)
        self.entity, self.project, self.sweep_id = entity, project, sweep_id
        self.proposals = [(f"wbrun{i:03d}", params) for i, params in enumerate(proposals)]
        self.hold = hold  # once the proposals are gone: no command (agents wait), not exit
        self.program = sweep_config.get("program")  # a `run` command names it, as W&B's does
        self.api_key = api_key  # when set, a request with another key is answered 401
        self.operations: list[str] = []  # every GraphQL operation's name, in order
        self.failures: dict[str, list[int]] = {}  # operation -> HTTP statuses to answer next
        self.stalls: dict[str, list[float]] = {}  # operation -> seconds to wait before answering
        self.started_stalls: dict[str, float] = {}  # see stall_once_started
        self.deleted = False  # delete_sweep(): heartbeats 404, GetSweep finds nothing
        self.stopping: dict[str, str] = {}  # run -> "sweep" or "ui", see stop()
        self.agents: list[dict] = []  # CreateAgent's variables, one per agent
        self.runs: dict[str, ServedRun] = {}
        self.heartbeats: list[tuple[str, dict]] = []  # (agent id, runState)
        self.unknown: list[str] = []
        self.artifacts: list[dict] = []  # CreateArtifact inputs
        self.committed: list[str] = []  # artifact ids committed
        self.artifact_files: dict[str, bytes] = {}  # <artifact id>/<name> -> bytes PUT
        self.lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._http.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackWandb:
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> None:
        """Serve (again, after `down`, on the same port)."""
        if self._http is None:
            self._http = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def down(self) -> None:
        """Go away: the port refuses connections until `up`."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def stop(self, run_name: str, via: str = "sweep") -> None:
        """Stop a run as W&B does: `sweep` (early_terminate) answers its agent's next
        heartbeat with a `stop` command; `ui` (a user's Stop button) answers its file
        stream with `stopped: true`."""
        with self.lock:
            self.stopping[run_name] = via

    def fail(self, operation: str, *statuses: int) -> None:
        """Answer the next requests of GraphQL `operation` (Heartbeat, CreateAgent, ...)
        with these HTTP statuses, one each, before answering it again."""
        with self.lock:
            self.failures.setdefault(operation, []).extend(statuses)

    def stall(self, operation: str, *seconds: float) -> None:
        """Answer the next requests of GraphQL `operation` only after these many seconds
        each (a server too slow for the client's timeout)."""
        with self.lock:
            self.stalls.setdefault(operation, []).extend(seconds)

    def stall_once_started(self, operation: str, seconds: float) -> None:
        """Answer every request of GraphQL `operation` made after a run's first UpsertBucket
        (its wandb.init under way) only after `seconds`: the server slow from then on,
        whenever the run happens to ask."""
        with self.lock:
            self.started_stalls[operation] = seconds

    def delete_sweep(self) -> None:
        with self.lock:
            self.deleted = True

    @property
    def path(self) -> str:
        return f"{self.entity}/{self.project}/{self.sweep_id}"

    # -- GraphQL ---------------------------------------------------------------------------

    def answer_status(self, query: str) -> int:
        """The HTTP status this request of `query` gets: a failure `fail` queued for its
        operation, 404 for a deleted sweep's heartbeats, else 200 (after its `stall`)."""
        found = re.search(r"\b(?:query|mutation)\s+(\w+)", query)
        operation = found.group(1) if found else ""
        with self.lock:
            self.operations.append(operation)
            stall = (self.stalls.get(operation) or [0.0]).pop(0)
            if any(run.upserts for run in self.runs.values()):
                stall = max(stall, self.started_stalls.get(operation, 0.0))
        time.sleep(stall)
        with self.lock:
            queued = self.failures.get(operation)
            if queued:
                return queued.pop(0)
            if self.deleted and operation in ("Heartbeat", "CreateAgent"):
                return 404
        return 200

    def graphql(self, query: str, variables: dict) -> dict:
        if "createAgent" in query:
            with self.lock:
                agent_id = f"agent{len(self.agents):03d}"
                self.agents.append({**variables, "id": agent_id})
            return {"createAgent": {"agent": {"id": agent_id}}}
        if "agentHeartbeat" in query:
            return {"agentHeartbeat": {"agent": {"id": variables["id"]}, "commands": json.dumps(
                self._commands(variables["id"], json.loads(variables.get("runState") or "{}")))}}
        if "upsertBucket" in query:
            return {"upsertBucket": self._upsert(variables)}
        if "createRunFiles" in query:
            run = variables["run"]
            return {"createRunFiles": {"runID": run, "uploadHeaders": [], "files": [
                {"name": name, "uploadUrl": f"{self.url}/upload/{run}/{name}"}
                for name in variables["files"]]}}
        if "GetSweep" in query:
            if variables.get("name") != self.sweep_id or self.deleted:
                return {"project": None}
            return {"project": {"sweep": {
                "id": "U3dlZXA6MQ==", "name": self.sweep_id, "displayName": self.sweep_id,
                "state": "RUNNING", "bestLoss": None, "config": self.sweep_yaml,
                "createdAt": "2026-11-30T00:00:00", "updatedAt": None, "runCount": 0,
                "runCountExpected": None,
                "runs": {"edges": [], "pageInfo": {"hasNextPage": False, "endCursor": None}}}}}
        if "query SweepWithRuns" in query:  # wandb's command-line agent reads the command
            if variables.get("sweep") != self.sweep_id or self.deleted:
                return {"project": None}
            return {"project": {"sweep": {
                "id": "U3dlZXA6MQ==", "name": self.sweep_id, "method": "grid",
                "state": "RUNNING", "description": None, "config": self.sweep_yaml,
                "createdAt": "2026-11-30T00:00:00", "heartbeatAt": None, "updatedAt": None,
                "earlyStopJobRunning": False, "bestLoss": None, "controller": None,
                "scheduler": None, "runs": {"edges": []}}}}
        if "viewer" in query:
            return {"viewer": {"id": "VXNlcjox", "entity": self.entity, "username": "student",
                               "email": None, "flags": "{}", "teams": {"edges": []}}}
        if "query ArtifactType" in query:  # asked before a table is logged: none yet
            return {"project": None}
        if "query RunResumeStatus" in query:  # wandb.init(resume="allow") asks first
            return {"model": {"id": "UHJvamVjdDox", "name": self.project,
                              "entity": {"id": "RW50aXR5OjE=", "name": self.entity},
                              "bucket": self._resume_status(variables["name"])}}
        if "ServerFeaturesQuery" in query:
            return {"serverInfo": {"features": []}}
        if "createArtifact(" in query:  # a logged table is saved as an artifact
            with self.lock:
                self.artifacts.append(variables["input"])
                artifact_id = f"artifact{len(self.artifacts):03d}"
            return {"createArtifact": {"artifact": {
                "id": artifact_id, "state": "PENDING",
                "artifactSequence": {"latestArtifact": None}}}}
        if "createArtifactManifest(" in query:
            name = f"{variables['artifactID']}/{variables['name']}"
            return {"createArtifactManifest": {"artifactManifest": {
                "id": f"manifest-{variables['artifactID']}",
                "file": {"id": name, "uploadUrl": f"{self.url}/artifacts/{name}",
                         "uploadHeaders": []}}}}
        if "createArtifactFiles(" in query:
            edges = []
            for file in variables["input"]["artifactFiles"]:
                path = f"{file['artifactID']}/{file['name']}"
                edges.append({"node": {
                    "storagePath": path, "uploadUrl": f"{self.url}/artifacts/{path}",
                    "uploadHeaders": [], "uploadMultipartUrls": None,
                    "artifact": {"id": file["artifactID"]}}})
            return {"createArtifactFiles": {"files": {"edges": edges}}}
        if "commitArtifact(" in query:
            with self.lock:
                self.committed.append(variables["artifactID"])
            return {"commitArtifact": {"artifact": {"id": variables["artifactID"],
                                                    "digest": ""}}}
        if "coreWeaveOrganizationId" in query:
            return {"entity": {"organization": None}}
        with self.lock:
            self.unknown.append(query.strip().splitlines()[0])
        return {}

    def _commands(self, agent_id: str, run_state: dict) -> list[dict]:
        with self.lock:
            self.heartbeats.append((agent_id, run_state))
            # a run is the agent's until its heartbeats stop listing it alive (W&B's agents
            # list the runs they have alive and drop a run once its process or thread ended)
            outstanding = [r for r in self.runs.values() if r.agent == agent_id
                           and r.exit_code is None and run_state.get(r.name)]
            stops = [{"type": "stop", "run_id": r.name} for r in outstanding
                     if self.stopping.get(r.name) == "sweep"]
            if outstanding:
                return stops
            for run in self.runs.values():  # W&B hands a preempted run out again
                if run.preempting and run.exit_code is not None:
                    run.preempting, run.exit_code, run.agent = False, None, agent_id
                    run.handed += 1
                    return [{"type": "resume", "run_id": run.name, "program": self.program,
                             "args": run.args}]
            if not self.proposals:
                return [] if self.hold else [{"type": "exit"}]
            run_id, params = self.proposals.pop(0)
            args = {k: {"value": v} for k, v in params.items()}
            self.runs[run_id] = ServedRun(run_id, agent=agent_id, args=args, handed=1)
            return [{"type": "run", "run_id": run_id, "program": self.program, "args": args}]

    def _upsert(self, variables: dict) -> dict:
        with self.lock:
            run = self.runs.setdefault(variables["name"], ServedRun(variables["name"]))
            run.upserts.append(variables)
        return {"inserted": len(run.upserts) == 1, "bucket": {
            "id": f"UnVuOnt{run.name}", "name": run.name,
            "displayName": variables.get("displayName") or run.name,
            "description": None, "config": variables.get("config") or "{}",
            "sweepName": variables.get("sweep"), "historyLineCount": 0,
            "project": {"id": "UHJvamVjdDox", "name": self.project,
                        "entity": {"id": "RW50aXR5OjE=", "name": self.entity}}}}

    def _resume_status(self, name: str) -> dict | None:
        """What the server knows of run `name` for a client resuming it (None: no such run):
        its history's line count and last line (where the client's steps and stream go
        on), summary and config, as JSON text."""
        with self.lock:
            run = self.runs.get(name)
            if run is None or not run.upserts:
                return None
            return {"id": f"UnVuOnt{name}", "name": name, "displayName": name,
                    "summaryMetrics": json.dumps(run.summary),
                    "logLineCount": 0, "historyLineCount": len(run.history),
                    "eventsLineCount": 0, "eventsTail": "[]",
                    "historyTail": json.dumps([json.dumps(row) for row in run.history[-1:]]),
                    "config": run.upserted("config") or "{}", "tags": [], "notes": None,
                    # "t" (the client's telemetry) marks a run a client has started
                    "wandbConfig": json.dumps({"t": {}})}

    # -- the file stream and uploads -------------------------------------------------------

    def file_stream(self, run_name: str, message: dict) -> dict:
        """Keeps what the stream sent; the answer (`stopped` once a user stopped it)."""
        with self.lock:
            run = self.runs.setdefault(run_name, ServedRun(run_name))
            files = message.get("files") or {}
            chunk = files.get("wandb-history.jsonl") or {}
            # lines from `offset` on, as W&B's server keeps them: a run restarted without
            # resuming writes over its earlier history from line 0
            offset = chunk.get("offset", len(run.history))
            lines = [json.loads(line) for line in chunk.get("content", [])]
            run.history[offset:offset + len(lines)] = lines
            for line in (files.get("wandb-summary.json") or {}).get("content", []):
                run.summary = json.loads(line)
            if message.get("preempting"):
                run.preempting = True
            if message.get("complete"):
                run.exit_code = message.get("exitcode")
            return {"stopped": True} if self.stopping.get(run_name) == "ui" else {}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, body: dict, status: int = 200) -> None:
                out = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def _key(self) -> str | None:
                """The API key of the request's basic authorization (user `api`)."""
                scheme, _, encoded = (self.headers.get("Authorization") or "").partition(" ")
                if scheme.lower() != "basic":
                    return None
                return base64.b64decode(encoded).decode().partition(":")[2]

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self._body()
                parts = self.path.strip("/").split("/")
                if server.api_key is not None and self._key() != server.api_key:
                    self._reply({"errors": [{"message": "user is not logged in"}]}, 401)
                elif self.path == "/graphql":
                    request = json.loads(body)
                    status = server.answer_status(request["query"])
                    if status != 200:  # as W&B's server fails: a status, an error body
                        self._reply({"errors": [{"message": f"HTTP {status}"}]}, status)
                        return
                    self._reply({"data": server.graphql(request["query"],
                                                        request.get("variables") or {})})
                elif len(parts) == 5 and parts[0] == "files" and parts[4] == "file_stream":
                    self._reply(server.file_stream(parts[3], json.loads(body)))
                else:  # wandb-core's own telemetry (/sdk/otel/...): accepted, not kept
                    self._reply({})

            def do_PUT(self):  # noqa: N802
                body = self._body()
                parts = self.path.strip("/").split("/", 2)
                if parts[0] == "artifacts":
                    with server.lock:
                        server.artifact_files[self.path.strip("/").split("/", 1)[1]] = body
                elif len(parts) == 3 and parts[0] == "upload":
                    with server.lock:
                        server.runs.setdefault(parts[1], ServedRun(parts[1])) \
                            .uploads[parts[2]] = body
                self._reply({})

            def log_message(self, *args):  # quiet
                pass

        return Handler
