"""What the OpenAPI schema must say that drf-spectacular can't be told field by field: hooks
run on the whole generated schema (``SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]``)."""

from __future__ import annotations

from typing import Any


def empty_query_values_allowed(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Mark every query parameter ``allowEmptyValue``: given empty, each is as if not given
    (``QuerySerializer``). The strings' schemas admit "" already, but not those of the numbers,
    booleans and times (``limit=``, ``unreadable=``, ``created_after=``), so a client or test
    tool that checks requests against the schema took those for invalid."""
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query":
                    parameter["allowEmptyValue"] = True
    return result
