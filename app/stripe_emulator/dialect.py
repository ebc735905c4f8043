"""Stripe's REST dialect: bracketed form params, typed param readers, pagination and ``expand``."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from app.stripe_emulator.errors import StripeError, invalid, missing_param, unknown_param

Params = dict[str, Any]

_TOKEN = re.compile(r"\[([^\]]*)\]")


def _tokens(key: str) -> list[str]:
    head, _, rest = key.partition("[")
    return [head, *_TOKEN.findall("[" + rest)] if rest else [head]


def _listify(node: Any) -> Any:
    """Dicts keyed only by integers (``items[0][price]``) become lists, as Stripe reads them."""
    if isinstance(node, dict):
        fixed = {k: _listify(v) for k, v in node.items()}
        if fixed and all(k.isdigit() for k in fixed):
            return [fixed[k] for k in sorted(fixed, key=int)]
        return fixed
    if isinstance(node, list):
        return [_listify(v) for v in node]
    return node


def parse_form(raw: str) -> Params:
    """Parse ``a[b][0][c]=x&expand[]=y`` into nested dicts/lists; values stay strings."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        parts = _tokens(key)
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt_is_append = not last and parts[i + 1] == ""
            if part == "":
                if not isinstance(node, list):
                    raise invalid(f"Invalid array: {key}", parts[0], "parameter_invalid_array")
                if last:
                    node.append(value)
                else:
                    node.append({})
                    node = node[-1]
                continue
            if not isinstance(node, dict):
                raise invalid(f"Invalid hash: {key}", parts[0])
            if last:
                node[part] = value
            else:
                default: Any = [] if nxt_is_append else {}
                if part not in node or not isinstance(node[part], (dict, list)):
                    node[part] = default
                node = node[part]
    result = _listify(root)
    assert isinstance(result, dict)
    return result


def check_params(params: Params, allowed: Iterable[str], nested: dict[str, Iterable[str]] | None = None) -> None:
    """Reject parameters the endpoint does not know, exactly like Stripe (``parameter_unknown``)."""
    allowed_set = set(allowed)
    for key in params:
        if key not in allowed_set:
            raise unknown_param(key)
    for key, sub_allowed in (nested or {}).items():
        value = params.get(key)
        if isinstance(value, dict):
            sub_set = set(sub_allowed)
            for sub in value:
                if sub not in sub_set:
                    raise unknown_param(f"{key}[{sub}]")


def get_str(params: Params, name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise missing_param(name)
        return None
    if not isinstance(value, str):
        raise invalid(f"Invalid string: {name}", name)
    if value == "" and required:
        raise missing_param(name)
    return value or None


def get_int(params: Params, name: str, *, required: bool = False, minimum: int | None = None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise missing_param(name)
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise invalid(f"Invalid integer: {value}", name, "parameter_invalid_integer") from None
    if minimum is not None and number < minimum:
        raise invalid(f"This value must be greater than or equal to {minimum}.", name, "parameter_invalid_integer")
    return number


def get_bool(params: Params, name: str) -> bool | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return bool(value)
    if value in ("true", "false"):
        return bool(value == "true")
    raise invalid(f"Invalid boolean: {value}", name, "parameter_invalid_boolean")


def get_dict(params: Params, name: str) -> dict[str, Any] | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, dict):
        raise invalid(f"Invalid hash: {name}", name)
    return value


def get_list(params: Params, name: str) -> list[Any] | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, dict):  # sparse indexes like items[1]
        return list(value.values())
    if not isinstance(value, list):
        raise invalid(f"Invalid array: {name}", name, "parameter_invalid_array")
    return value


def get_enum(params: Params, name: str, choices: Iterable[str], *, required: bool = False) -> str | None:
    value = get_str(params, name, required=required)
    options = list(choices)
    if value is not None and value not in options:
        raise invalid(f"Invalid {name}: must be one of {', '.join(options)}", name, "parameter_invalid_string")
    return value


def apply_metadata(current: dict[str, str], params: Params) -> dict[str, str]:
    """Stripe metadata semantics: ``metadata=`` clears, ``metadata[k]=`` unsets one key."""
    if "metadata" not in params:
        return current
    raw = params["metadata"]
    if raw == "":
        return {}
    if not isinstance(raw, dict):
        raise invalid("Invalid hash: metadata", "metadata")
    merged = dict(current)
    for key, value in raw.items():
        if not isinstance(value, str):
            raise invalid(f"Invalid metadata value for {key}", f"metadata[{key}]")
        if value == "":
            merged.pop(key, None)
        else:
            if len(key) > 40:
                raise invalid("Metadata keys can have a maximum length of 40 characters.", f"metadata[{key}]")
            merged[key] = value
    if len(merged) > 50:
        raise invalid("You can have up to 50 metadata keys.", "metadata")
    return merged


# --- pagination -----------------------------------------------------------------------------------

LIST_PARAMS = ("limit", "starting_after", "ending_before", "expand")


def created_filter(params: Params, name: str = "created") -> Callable[[int], bool]:
    """``created=123`` or ``created[gte]=...`` style range filters."""
    value = params.get(name)
    if value is None or value == "":
        return lambda _ts: True
    if isinstance(value, str):
        exact = get_int(params, name)
        return lambda ts: ts == exact
    if not isinstance(value, dict):
        raise invalid(f"Invalid {name}", name)
    bounds: dict[str, int] = {}
    for op, raw in value.items():
        if op not in ("gt", "gte", "lt", "lte"):
            raise unknown_param(f"{name}[{op}]")
        try:
            bounds[op] = int(raw)
        except ValueError:
            raise invalid(f"Invalid integer: {raw}", f"{name}[{op}]", "parameter_invalid_integer") from None

    def check(ts: int) -> bool:
        return (
            ("gt" not in bounds or ts > bounds["gt"])
            and ("gte" not in bounds or ts >= bounds["gte"])
            and ("lt" not in bounds or ts < bounds["lt"])
            and ("lte" not in bounds or ts <= bounds["lte"])
        )

    return check


def paginate(items: list[dict[str, Any]], params: Params, url: str) -> dict[str, Any]:
    """Cursor pagination over ``items`` (already newest first), as Stripe's list endpoints do."""
    limit = get_int(params, "limit")
    if limit is None:
        limit = 10
    if not 1 <= limit <= 100:
        raise invalid("Invalid limit: must be between 1 and 100", "limit", "parameter_invalid_integer")
    after = get_str(params, "starting_after")
    before = get_str(params, "ending_before")
    if after and before:
        raise invalid("You may only specify one of these parameters: ending_before, starting_after.", "ending_before")
    ids = [item["id"] for item in items]
    if after:
        if after not in ids:
            raise StripeError(f"No such object: '{after}'", status=404, code="resource_missing", param="starting_after")
        rest = items[ids.index(after) + 1 :]
        page, has_more = rest[:limit], len(rest) > limit
    elif before:
        if before not in ids:
            raise StripeError(f"No such object: '{before}'", status=404, code="resource_missing", param="ending_before")
        prior = items[: ids.index(before)]
        page, has_more = prior[-limit:], len(prior) > limit
    else:
        page, has_more = items[:limit], len(items) > limit
    return {"object": "list", "data": [copy.deepcopy(i) for i in page], "has_more": has_more, "url": url}


def paginate_kind(
    state: Any, kind: str, wanted: Callable[[dict[str, Any]], bool], params: Params, url: str
) -> dict[str, Any]:
    """``paginate`` over every object of one type that ``wanted`` accepts, newest first, walking the type's index
    from the cursor instead of materialising the whole list (what makes 100k-object histories page quickly)."""
    limit = get_int(params, "limit")
    if limit is None:
        limit = 10
    if not 1 <= limit <= 100:
        raise invalid("Invalid limit: must be between 1 and 100", "limit", "parameter_invalid_integer")
    after = get_str(params, "starting_after")
    before = get_str(params, "ending_before")
    if after and before:
        raise invalid("You may only specify one of these parameters: ending_before, starting_after.", "ending_before")
    ids, pos = state.kind_index(kind)
    objects = state.objects

    def walk(indices: range) -> tuple[list[dict[str, Any]], bool]:
        found: list[dict[str, Any]] = []
        for i in indices:
            obj = objects.get(ids[i])
            if obj is None or obj.get("object") != kind or not wanted(obj):
                continue
            if len(found) == limit:
                return found, True
            found.append(obj)
        return found, False

    for cursor, param in ((after, "starting_after"), (before, "ending_before")):
        if cursor and (cursor not in pos or objects.get(cursor) is None):
            raise StripeError(f"No such object: '{cursor}'", status=404, code="resource_missing", param=param)
    if after:
        page, has_more = walk(range(pos[after] - 1, -1, -1))  # older than the cursor
    elif before:
        newer, has_more = walk(range(pos[before] + 1, len(ids)))  # newer than the cursor, nearest first
        page = list(reversed(newer))
    else:
        page, has_more = walk(range(len(ids) - 1, -1, -1))
    # Not copied here: every caller renders the page with ``ctx.render``, which copies.
    return {"object": "list", "data": page, "has_more": has_more, "url": url}


# --- expand ---------------------------------------------------------------------------------------

Resolver = Callable[[str], dict[str, Any] | None]


def expand_paths(params: Params) -> list[str]:
    raw = params.get("expand")
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, dict):
        raw = list(raw.values())
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise invalid("Invalid array: expand", "expand", "parameter_invalid_array")
    return list(raw)


def expand(obj: dict[str, Any], paths: list[str], resolve: Resolver) -> dict[str, Any]:
    for path in paths:
        _expand_one(obj, path.split("."), resolve, path)
    return obj


# Includable fields Stripe expands to null when the object has none (an invoice with nothing to pay).
NULLABLE_INCLUDABLES = frozenset({"confirmation_secret"})


def _expand_one(node: Any, parts: list[str], resolve: Resolver, full: str) -> None:
    if not parts:
        return
    head, rest = parts[0], parts[1:]
    if isinstance(node, list):
        for item in node:
            _expand_one(item, parts, resolve, full)
        return
    if isinstance(node, dict) and head not in node and isinstance(node.get("id"), str):
        # "Includable" fields (e.g. invoice.confirmation_secret) only appear when expanded.
        included = resolve(f"{node['id']}#{head}")
        if included is not None:
            node[head] = copy.deepcopy(included)
        elif head in NULLABLE_INCLUDABLES:
            node[head] = None  # e.g. a $0 (trial) invoice: nothing to pay, so Stripe expands it to null
            return
    if not isinstance(node, dict) or head not in node:
        raise invalid(f"This property cannot be expanded ({full}).", "expand", "parameter_invalid_string")
    value = node[head]
    if isinstance(value, str):
        target = resolve(value)
        if target is None:
            raise invalid(f"This property cannot be expanded ({full}).", "expand")
        node[head] = value = copy.deepcopy(target)
    if value is None:
        return
    _expand_one(value, rest, resolve, full)
