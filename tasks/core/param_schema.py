"""A params record's JSON schema, one field at a time, as Airflow's ``Param`` takes it (the DAG's trigger form).

The records are the one source of truth: titles, descriptions, defaults, bounds and sections are written on
their fields; this flattens what pydantic writes (``anyOf`` with null, ``$ref`` to ``$defs``) into the
self-contained per-field schemas Airflow validates and renders.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """``schema`` with every ``$ref`` replaced by its definition (Airflow validates each Param on its own)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        return {key: _inline(value, defs) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    return schema


def _nullable(schema: dict) -> dict:
    """``anyOf: [X, {type: null}]`` as ``X`` with ``type: [X's type, "null"]``, which the trigger form renders."""
    options = schema.get("anyOf")
    if not options or {"type": "null"} not in options or len(options) != 2:
        return schema
    other = next(o for o in options if o != {"type": "null"})
    merged = {**{k: v for k, v in schema.items() if k != "anyOf"}, **other}
    merged["type"] = [other.get("type", "object"), "null"] if "type" in other else ["null", "object"]
    if "enum" in merged:  # a choice that may be left empty
        merged["enum"] = [*merged["enum"], None]
    return merged


def field_schemas(model: type[BaseModel], extra: dict[str, dict] | None = None) -> dict[str, dict[str, Any]]:
    """``{field: schema}`` with ``default`` included; ``extra`` adds per-field keys known only at run time
    (e.g. the enum of registered targets)."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    fields: dict[str, dict[str, Any]] = {}
    for name, prop in schema["properties"].items():
        prop = _nullable(_inline(prop, defs))
        for key, value in (extra or {}).get(name, {}).items():
            prop[key] = {**prop.get(key, {}), **value} if isinstance(value, dict) else value
        field = model.model_fields[name]
        if "default" not in prop and field.default_factory is not None:
            prop["default"] = field.default_factory()
        prop.setdefault("default", None)
        fields[name] = prop
    return fields
