"""W&B's sweep engine's own schema (sweeps/config/schema.json), read once for the tests that
generate their cases from it: every distribution, every method."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from sweeps.config.schema import sweep_config_jsonschema as SCHEMA


def schema_distributions() -> list[str]:
    """Every `distribution` the schema's parameter definitions allow, sorted."""
    found: set[str] = set()

    def collect(node):
        if isinstance(node, dict):
            found.update(node.get("properties", {}).get("distribution", {}).get("enum", []))
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    for ref in SCHEMA["definitions"]["parameter"]["anyOf"]:
        collect(SCHEMA["definitions"][ref["$ref"].split("/")[-1]])
    return sorted(found)
