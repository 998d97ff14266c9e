"""schemathesis hooks for tests/openapi.rs (loaded through SCHEMATHESIS_HOOKS).

`GET /api/v1/events?wait=N` is a long poll: with no event after `after_seq` it holds the answer
for up to N seconds (at most 60, as documented). schemathesis generates many valid `wait` values,
and each could hold a case for a minute, so a valid wait above one second is sent as one second
(in the same form, `1` or `1s`): the long poll still runs and its answer is still checked, the
run stays short. Invalid values are sent as generated, so the bound itself (61, `1m`, ...) is
still checked to be refused.
"""

import re

import schemathesis

VALID_WAIT = re.compile(r"^0*([0-9]|[1-5][0-9]|60)s?$")
LONGEST_WAIT = 1


@schemathesis.hook
def before_call(context, case, kwargs):
    if not isinstance(case.query, dict):
        return
    if case.operation.path == "/api/v1/proofs/consistency":
        in_order(case.query)
    if case.operation.path == "/api/v1/verify":
        # `key` and `checkpoints` are a verifier key and notes it signed: no string a schema
        # can describe is one, so a generated pair is always refused (400). They are dropped
        # here; tests/api/evidence.rs sends real ones.
        case.query.pop("key", None)
        case.query.pop("checkpoints", None)
    if case.operation.path != "/api/v1/events":
        return
    wait = case.query.get("wait")
    if isinstance(wait, str) and VALID_WAIT.match(wait) and int(wait.rstrip("s")) > LONGEST_WAIT:
        case.query["wait"] = f"{LONGEST_WAIT}s" if wait.endswith("s") else str(LONGEST_WAIT)


def in_order(query):
    """A consistency proof runs from the older tree to the newer: `old <= new`, which the
    document states but a JSON schema cannot (it spans two parameters). A valid pair given the
    other way round is sent in order, so the route's answers are still checked; a pair with an
    invalid member is sent as generated, so refusals are checked too."""
    old, new = whole(query.get("old")), whole(query.get("new"))
    if old is not None and new is not None and 1 <= new < old:
        query["old"], query["new"] = query["new"], query["old"]


def whole(value):
    """A parameter's value as a whole number, whether generated as one or as its text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


@schemathesis.hook
def before_add_examples(context, examples):
    """The export in each format with no filter, so the whole log (allowed and refused operations)
    is exported and the JSON one checked record by record: generated filters mostly select
    nothing, and the documented examples combined (an `until` in the past) always do."""
    if context.operation is None or context.operation.path != "/api/v1/export":
        return
    for export_format in ("jsonl", "csv", "directory-audit", "ocsf"):
        examples.append(context.operation.Case(query={"format": export_format}))

