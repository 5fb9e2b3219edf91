"""A local HTTP test double of the parts of Azure Resource Manager's storage provider the
collection uses.

There is no emulator for Azure Resource Manager (Azurite serves the data plane only), so
lifecycle_policy (mode management_policy) and container_protection are tested against this: an
http.server on 127.0.0.1 (a random port unless given) that serves, under
/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{account}:

    GET|PUT|DELETE  /managementPolicies/default                        lifecycle policy
    GET|PUT         /blobServices/default                              versioning, soft delete (merged)
    GET             /blobServices/default/containers/{c}               immutability state of a container
    PUT             /blobServices/default/containers/{c}/immutabilityPolicies/default
    POST            /blobServices/default/containers/{c}/immutabilityPolicies/default/lock|extend
    POST            /blobServices/default/containers/{c}/migrate       202 + Location, polled

like Azure does (ARM error bodies, 404s, ETags and If-Match, a long-running migration), records
every request, and checks what it receives: the bearer token, the api-version, and every body
against Azure's documented rules for the fields the collection sends - the management policy
schema (rule names, filters, actions of base blobs, snapshots and versions, day conditions and
their order), soft delete 1-365 days and no allowPermanentDelete on containers, retention 1 to
146,000 days, a locked policy only extended (at most five times) and never replaced, the lock
and the extension only with the current ETag, the migration only with versioning on, a container
policy in place and no legal hold. Read-only fields must not be sent. Two rules are the double's
reading of the documentation where it states no error: versioning cannot be turned off, and
permanent delete cannot be allowed, while a container has version-level immutability.

A request that breaks a rule is answered like Azure (400/404/409/412) and recorded in `rejected`;
the tests assert it stays empty unless they provoke a refusal. It checks what Azure documents,
not everything Azure checks: a real account remains the final test.
"""

import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ACCOUNT_RE = (
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Storage/"
    r"storageAccounts/(?P<account>[a-z0-9]{3,24})"
)
CONTAINER = r"/blobServices/default/containers/(?P<container>[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9])"
ROUTES = [
    ("policy", re.compile(ACCOUNT_RE + r"/managementPolicies/default$")),
    ("service", re.compile(ACCOUNT_RE + r"/blobServices/default$")),
    ("container", re.compile(ACCOUNT_RE + CONTAINER + r"$")),
    ("immutability", re.compile(ACCOUNT_RE + CONTAINER + r"/immutabilityPolicies/default$")),
    ("lock", re.compile(ACCOUNT_RE + CONTAINER + r"/immutabilityPolicies/default/lock$")),
    ("extend", re.compile(ACCOUNT_RE + CONTAINER + r"/immutabilityPolicies/default/extend$")),
    ("migrate", re.compile(ACCOUNT_RE + CONTAINER + r"/migrate$")),
    (
        "operation",
        re.compile(
            r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Storage/locations/[a-z]+/"
            r"asyncoperations/(?P<operation>[0-9a-f-]+)$"
        ),
    ),
]
BLOB_TYPES = {"blockBlob", "appendBlob"}
TIER_ACTIONS = {"tierToCool", "tierToCold", "tierToHot", "tierToArchive", "delete"}
BASE_BLOB_ACTIONS = TIER_ACTIONS | {"enableAutoTierToHotFromCool"}
CONDITIONS = {
    "daysAfterModificationGreaterThan",
    "daysAfterLastAccessTimeGreaterThan",
    "daysAfterLastTierChangeGreaterThan",
    "daysAfterCreationGreaterThan",
}
# Snapshots and versions count from their creation.
VERSION_CONDITIONS = {"daysAfterCreationGreaterThan", "daysAfterLastTierChangeGreaterThan"}
ORDER = ["tierToCool", "tierToCold", "tierToArchive", "delete"]
SERVICE_WRITABLE = {
    "cors",
    "defaultServiceVersion",
    "deleteRetentionPolicy",
    "isVersioningEnabled",
    "automaticSnapshotPolicyEnabled",
    "changeFeed",
    "restorePolicy",
    "containerDeleteRetentionPolicy",
    "lastAccessTimeTrackingPolicy",
}
POLICY_WRITABLE = {
    "immutabilityPeriodSinceCreationInDays",
    "allowProtectedAppendWrites",
    "allowProtectedAppendWritesAll",
}
MAX_EXTENSIONS = 5


def _days_problems(where, action, condition, allowed):
    if not isinstance(condition, dict) or not condition or set(condition) - allowed:
        return ["%s: %s needs day conditions among %s" % (where, action, sorted(allowed))]
    return [
        "%s: %s.%s must be 0..99999" % (where, action, key)
        for key, value in condition.items()
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 99999
    ]


def _base_blob_problems(where, base_blob):
    problems = []
    if set(base_blob) - BASE_BLOB_ACTIONS:
        problems.append("%s: unknown actions %s" % (where, sorted(set(base_blob) - BASE_BLOB_ACTIONS)))
    for action, condition in base_blob.items():
        if action == "enableAutoTierToHotFromCool":
            continue
        problems += _days_problems(where, action, condition, CONDITIONS)
        if (
            isinstance(condition, dict)
            and "daysAfterLastTierChangeGreaterThan" in condition
            and (action != "tierToArchive" or "daysAfterModificationGreaterThan" not in condition)
        ):
            problems.append(
                "%s: daysAfterLastTierChangeGreaterThan goes with tierToArchive and "
                "daysAfterModificationGreaterThan only" % where
            )
    days = [
        base_blob[a]["daysAfterModificationGreaterThan"]
        for a in ORDER
        if isinstance(base_blob.get(a), dict) and "daysAfterModificationGreaterThan" in base_blob[a]
    ]
    if days != sorted(set(days)):
        problems.append("%s: days must grow from tierToCool to tierToCold, tierToArchive and delete" % where)
    return problems


def _rule_problems(rule):
    name = rule.get("name")
    where = "rule %r" % (name,)
    problems = []
    if set(rule) - {"name", "enabled", "type", "definition"}:
        problems.append(
            "%s has unknown keys %s" % (where, sorted(set(rule) - {"name", "enabled", "type", "definition"}))
        )
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9]{1,256}$", name):
        problems.append("%s: a name is 1-256 letters and digits" % where)
    if not isinstance(rule.get("enabled", True), bool) or rule.get("type") != "Lifecycle":
        problems.append("%s: enabled must be a bool and type 'Lifecycle'" % where)
    definition = rule.get("definition") or {}
    filters = definition.get("filters") or {}
    blob_types = filters.get("blobTypes")
    if not isinstance(blob_types, list) or not blob_types or set(blob_types) - BLOB_TYPES:
        problems.append("%s: filters.blobTypes must list blockBlob and/or appendBlob" % where)
    prefixes = filters.get("prefixMatch", [])
    if not isinstance(prefixes, list) or len(prefixes) > 10:
        problems.append("%s: filters.prefixMatch is a list of at most 10 prefixes" % where)
    for prefix in prefixes if isinstance(prefixes, list) else []:
        if not isinstance(prefix, str) or not re.match(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9](/|$)", prefix):
            problems.append("%s: prefix %r must start with a container name" % (where, prefix))
    actions = definition.get("actions") or {}
    if set(actions) - {"baseBlob", "snapshot", "version"}:
        problems.append("%s: actions are baseBlob, snapshot and version" % where)
    if not any(isinstance(actions.get(p), dict) and actions[p] for p in ("baseBlob", "snapshot", "version")):
        return problems + ["%s: actions must hold at least one action" % where]
    if isinstance(actions.get("baseBlob"), dict):
        problems += _base_blob_problems(where, actions["baseBlob"])
    for part in ("snapshot", "version"):
        for action, condition in (actions.get(part) or {}).items():
            if action not in TIER_ACTIONS:
                problems.append("%s: unknown %s action %s" % (where, part, action))
            problems += _days_problems(where, "%s.%s" % (part, action), condition, VERSION_CONDITIONS)
    return problems


def policy_problems(body):
    """What is wrong with a management policy PUT body, as a list of strings (empty: acceptable)."""
    if not isinstance(body, dict) or set(body) - {"properties"}:
        return ["the body must be {'properties': {'policy': ...}} (read-only fields are not sent)"]
    policy = (body.get("properties") or {}).get("policy")
    rules = policy.get("rules") if isinstance(policy, dict) else None
    if not isinstance(rules, list) or not 1 <= len(rules) <= 100:
        return ["properties.policy.rules must be a list of 1 to 100 rules"]
    names = [r.get("name") for r in rules if isinstance(r, dict)]
    problems = [] if len(set(names)) == len(names) else ["rule names must be unique"]
    for rule in rules:
        problems += _rule_problems(rule)
    return problems


def _retention_problems(key, policy, permanent_delete):
    if not isinstance(policy, dict) or not isinstance(policy.get("enabled"), bool):
        return ["%s needs enabled (a bool)" % key]
    allowed = {"enabled", "days", "allowPermanentDelete"} if permanent_delete else {"enabled", "days"}
    problems = (
        ["%s: unknown or read-only keys %s" % (key, sorted(set(policy) - allowed))] if set(policy) - allowed else []
    )
    days = policy.get("days")
    if policy["enabled"] and (isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365):
        problems.append("%s.days must be 1 to 365 when enabled" % key)
    return problems


def service_problems(body, worm_containers):
    """What is wrong with a blob service properties PUT body."""
    if not isinstance(body, dict) or set(body) - {"properties"} or not isinstance(body.get("properties"), dict):
        return ["the body must be {'properties': {...}} (read-only fields such as sku are not sent)"]
    props = body["properties"]
    problems = []
    if set(props) - SERVICE_WRITABLE:
        problems.append("unknown or read-only blob service properties %s" % sorted(set(props) - SERVICE_WRITABLE))
    if "isVersioningEnabled" in props and not isinstance(props["isVersioningEnabled"], bool):
        problems.append("isVersioningEnabled must be a bool")
    if "deleteRetentionPolicy" in props:
        problems += _retention_problems("deleteRetentionPolicy", props["deleteRetentionPolicy"], True)
    if "containerDeleteRetentionPolicy" in props:
        problems += _retention_problems(
            "containerDeleteRetentionPolicy", props["containerDeleteRetentionPolicy"], False
        )
    if worm_containers and props.get("isVersioningEnabled") is False:
        problems.append(
            "versioning cannot be turned off: containers %s have version-level immutability" % worm_containers
        )
    if worm_containers and (props.get("deleteRetentionPolicy") or {}).get("allowPermanentDelete"):
        problems.append("permanent delete cannot be allowed with version-level immutability")
    return problems


def immutability_problems(body, version_level):
    """What is wrong with an immutability policy PUT or extend body."""
    if not isinstance(body, dict) or set(body) - {"properties"} or not isinstance(body.get("properties"), dict):
        return ["the body must be {'properties': {...}} (etag, state and id are read-only)"]
    props = body["properties"]
    problems = []
    if set(props) - POLICY_WRITABLE:
        problems.append("unknown or read-only immutability policy properties %s" % sorted(set(props) - POLICY_WRITABLE))
    days = props.get("immutabilityPeriodSinceCreationInDays")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 146000:
        problems.append("immutabilityPeriodSinceCreationInDays must be 1 to 146000")
    if version_level and (props.get("allowProtectedAppendWrites") or props.get("allowProtectedAppendWritesAll")):
        problems.append("allowProtectedAppendWrites is for container-level policies only")
    return problems


class Refused(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class ArmDouble:
    def __init__(
        self,
        token="arm-double-token",  # noqa: S107 - the double's own test token
        subscription="sub-0001",
        resource_group="rg-backups",
        account="insabackups",
        containers=("tsdb-backups",),
        port=0,
        on_request=None,
    ):
        self.token = token
        self.port = port  # 0: a free one
        self.on_request = on_request  # called with the double after every request (molecule/production)
        self.expected = {"sub": subscription, "rg": resource_group, "account": account}
        self.policy = None  # the stored body: {"properties": {"policy": {"rules": [...]}}}
        self.service = {
            "cors": {"corsRules": []},
            "deleteRetentionPolicy": {"enabled": False},
            "containerDeleteRetentionPolicy": {"enabled": False},
            "isVersioningEnabled": False,
        }
        self.containers = {}
        for name in containers:
            self.add_container(name)
        self.migration_polls = 0  # how many polls a migration answers 202 before it is done
        self.operations = {}
        self.requests = []
        self.rejected = []
        self._etags = itertools.count(1)
        self._server = None
        self._thread = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    def methods(self):
        return [r["method"] for r in self.requests]

    def writes(self):
        """(method, route) of every request that is not a GET."""
        return [(r["method"], r["route"]) for r in self.requests if r["method"] != "GET"]

    def add_container(self, name, legal_hold=False):
        self.containers[name] = {"policy": None, "worm": None, "legal_hold": legal_hold, "extensions": 0}

    def _etag(self):
        return '"8d%013x"' % next(self._etags)

    def rules(self):
        return (self.policy or {}).get("properties", {}).get("policy", {}).get("rules")

    def start(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status, body=None, headers=None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-ms-request-id", "arm-double")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                try:
                    return self._answer()
                finally:
                    if double.on_request is not None:
                        double.on_request(double)

            def _answer(self):
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                route, match = next(((n, r.match(url.path)) for n, r in ROUTES if r.match(url.path)), (None, None))
                record = {
                    "method": self.command,
                    "route": route,
                    "path": url.path,
                    "query": parse_qs(url.query),
                    "body": body,
                    "if_match": self.headers.get("If-Match"),
                }
                double.requests.append(record)
                try:
                    status, reply, headers = double.answer(self.headers, record, match)
                except Refused as e:
                    double.rejected.append(
                        {
                            "method": self.command,
                            "route": route,
                            "status": e.status,
                            "code": e.code,
                            "message": e.message,
                        }
                    )
                    status, reply, headers = e.status, {"error": {"code": e.code, "message": e.message}}, {}
                self._reply(status, reply, headers)

            do_GET = do_PUT = do_DELETE = do_POST = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- answers: (status, body, headers) or Refused

    def answer(self, headers, request, match):
        if headers.get("Authorization") != "Bearer " + self.token:
            raise Refused(401, "InvalidAuthenticationToken", "The access token is invalid.")
        if not request["query"].get("api-version"):
            raise Refused(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
        if match is None:
            raise Refused(404, "InvalidResourceType", "No route for %s" % request["path"])
        found = match.groupdict()
        if request["route"] == "operation":
            return self._operation(found["operation"])
        if {k: found[k] for k in self.expected} != self.expected:
            raise Refused(404, "ResourceNotFound", "The storage account %s was not found." % found["account"])
        handler = getattr(self, "_%s_%s" % (request["route"], request["method"].lower()), None)
        if handler is None:
            raise Refused(405, "MethodNotAllowed", request["method"])
        if "container" in found:
            if found["container"] not in self.containers:
                raise Refused(404, "ContainerNotFound", "The specified container does not exist.")
            return handler(request, found["container"])
        return handler(request)

    def _resource(self, request, kind, name):
        return {"id": request["path"], "name": name, "type": "Microsoft.Storage/storageAccounts/" + kind}

    def _policy_get(self, request):
        if self.policy is None:  # an answer, not a refusal: the account has no policy yet
            error = {"code": "ManagementPolicyNotFound", "message": "No ManagementPolicy found for account"}
            return 404, {"error": error}, {}
        return 200, dict(self._resource(request, "managementPolicies", "DefaultManagementPolicy"), **self.policy), {}

    def _policy_put(self, request):
        problems = policy_problems(request["body"])
        if problems:
            raise Refused(400, "InvalidManagementPolicyRule", "; ".join(problems))
        self.policy = {
            "properties": {
                "policy": request["body"]["properties"]["policy"],
                "lastModifiedTime": "2026-11-27T02:00:00Z",
            }
        }
        return 200, dict(self._resource(request, "managementPolicies", "DefaultManagementPolicy"), **self.policy), {}

    def _policy_delete(self, request):
        existed = self.policy is not None
        self.policy = None
        return (200 if existed else 204), None, {}

    def _service_get(self, request):
        body = self._resource(request, "blobServices", "default")
        body.update(sku={"name": "Standard_RAGRS", "tier": "Standard"}, properties=json.loads(json.dumps(self.service)))
        return 200, body, {}

    def _service_put(self, request):
        worm = sorted(n for n, c in self.containers.items() if (c["worm"] or {}).get("enabled"))
        problems = service_problems(request["body"], worm)
        if problems:
            raise Refused(400, "InvalidBlobServiceProperties", "; ".join(problems))
        self.service.update(request["body"]["properties"])
        return self._service_get(request)

    def container_properties(self, name):
        c = self.containers[name]
        props = {
            "publicAccess": "None",
            "hasImmutabilityPolicy": c["policy"] is not None,
            "hasLegalHold": c["legal_hold"],
            "legalHold": {"hasLegalHold": c["legal_hold"], "tags": []},
        }
        if c["policy"] is not None:
            props["immutabilityPolicy"] = {
                "etag": c["policy"]["etag"],
                "properties": {k: v for k, v in c["policy"].items() if k != "etag"},
                "updateHistory": [],
            }
        if c["worm"] is not None:
            props["immutableStorageWithVersioning"] = dict(c["worm"])
        return props

    def _container_get(self, request, name):
        body = dict(self._resource(request, "blobServices/containers", name), etag='"0x8DCONTAINER"')
        body["properties"] = self.container_properties(name)
        return 200, body, {}

    def _policy_reply(self, request, name):
        policy = self.containers[name]["policy"]
        body = self._resource(request, "blobServices/containers/immutabilityPolicies", "default")
        body.update(etag=policy["etag"], properties={k: v for k, v in policy.items() if k != "etag"})
        return 200, body, {"ETag": policy["etag"]}

    def _check_etag(self, request, name, required):
        policy = self.containers[name]["policy"]
        if required and not request["if_match"]:
            raise Refused(400, "MissingRequiredHeader", "The If-Match header is required for this operation.")
        if request["if_match"] and (policy is None or request["if_match"] != policy["etag"]):
            raise Refused(
                412, "ConditionNotMet", "The condition specified using HTTP conditional header(s) is not met."
            )
        if required and policy is None:
            raise Refused(404, "ImmutabilityPolicyNotFound", "The container has no immutability policy.")
        return policy

    def _immutability_put(self, request, name):
        container = self.containers[name]
        policy = self._check_etag(request, name, required=False)
        if policy is not None and policy["state"] == "Locked":
            raise Refused(409, "ContainerImmutabilityPolicyFailure", "A locked policy can only be extended.")
        problems = immutability_problems(request["body"], bool((container["worm"] or {}).get("enabled")))
        if problems:
            raise Refused(400, "InvalidImmutabilityPolicy", "; ".join(problems))
        container["policy"] = dict(request["body"]["properties"], state="Unlocked", etag=self._etag())
        return self._policy_reply(request, name)

    def _lock_post(self, request, name):
        policy = self._check_etag(request, name, required=True)
        if policy["state"] == "Locked":
            raise Refused(409, "ContainerImmutabilityPolicyFailure", "The policy is locked already.")
        policy.update(state="Locked", etag=self._etag())
        return self._policy_reply(request, name)

    def _extend_post(self, request, name):
        container = self.containers[name]
        policy = self._check_etag(request, name, required=True)
        problems = immutability_problems(request["body"], bool((container["worm"] or {}).get("enabled")))
        if problems:
            raise Refused(400, "InvalidImmutabilityPolicy", "; ".join(problems))
        days = request["body"]["properties"]["immutabilityPeriodSinceCreationInDays"]
        if policy["state"] != "Locked":
            raise Refused(409, "ContainerImmutabilityPolicyFailure", "Only a locked policy is extended.")
        if days <= policy["immutabilityPeriodSinceCreationInDays"]:
            raise Refused(400, "InvalidImmutabilityPolicy", "A locked policy's period can only grow.")
        if container["extensions"] >= MAX_EXTENSIONS:
            raise Refused(409, "ContainerImmutabilityPolicyFailure", "A locked policy is extended five times at most.")
        container["extensions"] += 1
        policy.update(immutabilityPeriodSinceCreationInDays=days, etag=self._etag())
        return self._policy_reply(request, name)

    def _migrate_post(self, request, name):
        container = self.containers[name]
        if (container["worm"] or {}).get("enabled") or (container["worm"] or {}).get("migrationState") == "InProgress":
            raise Refused(
                409, "ContainerAlreadyMigrated", "The container has or is getting version-level immutability."
            )
        if not self.service.get("isVersioningEnabled"):
            raise Refused(409, "VersioningNotEnabled", "Blob versioning must be enabled on the account.")
        if container["policy"] is None:
            raise Refused(409, "ImmutabilityPolicyNotFound", "The container needs an immutability policy to migrate.")
        if container["legal_hold"]:
            raise Refused(409, "ContainerHasLegalHold", "A container with a legal hold cannot be migrated.")
        operation = "%08x-0000-4000-8000-000000000000" % len(self.operations)
        self.operations[operation] = {"container": name, "polls": self.migration_polls}
        container["worm"] = {"enabled": False, "migrationState": "InProgress"}
        return 202, None, self._operation_headers(operation)

    def _operation_headers(self, operation):
        location = "%s/subscriptions/%s/providers/Microsoft.Storage/locations/westeurope/asyncoperations/%s" % (
            self.url,
            self.expected["sub"],
            operation,
        )
        return {"Location": location + "?monitor=true&api-version=2026-09-01", "Retry-After": "0"}

    def _operation(self, operation):
        state = self.operations.get(operation)
        if state is None:
            raise Refused(404, "OperationNotFound", operation)
        if state["polls"] > 0:
            state["polls"] -= 1
            return 202, None, dict(self._operation_headers(operation), **{"Retry-After": "1"})
        self.containers[state["container"]]["worm"] = {
            "enabled": True,
            "migrationState": "Completed",
            "timeStamp": "2026-11-27T02:00:00Z",
        }
        return 200, None, {}
