"""Request parameters the way Stripe's API takes them, and their types.

Bodies are form-encoded with Stripe's nested keys (`metadata[order_id]=6735`,
`payment_method_types[]=card`, `payment_method_types[0]=card`, `created[gte]=1700000000`) or
JSON; GET parameters come in the query string, encoded the same way. A list may also be sent
the way OpenAPI's form style does, by repeating its name (`expand=a&expand=b`). `parse_pairs`
turns the pairs into nested dicts (an indexed key stays a dict with digit keys until a list type
reads it); each operation declares its `Param`s, and `validate` refuses unknown names
(`parameter_unknown`, naming the parameter, as Stripe does), missing required ones and
values of the wrong type, and returns Python values. Text the database cannot store (NUL
characters, lone UTF-16 surrogates) and integers beyond 64 bits are refused here, as 400s.
Each type also describes itself as an OpenAPI schema, so the published document is generated
from the same declarations.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from payments.intents import METADATA_KEYS
from portal.api.errors import ApiError

_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART_RE = re.compile(r"\[([^\[\]]*)\]")
_INT_RE = re.compile(r"^-?\d{1,400}$")  # longer is no integer of ours, nor worth converting
INT64 = (-(2**63), 2**63 - 1)  # PostgreSQL's BIGINT
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def invalid(message: str, param: str, code: str | None = None) -> ApiError:
    return ApiError(message, param=param, code=code)


def malformed(message: str) -> ApiError:
    return ApiError(message, code="parameter_invalid")


def unstorable(text: str) -> str | None:
    """Why the database cannot store `text` (PostgreSQL refuses NUL in text and JSON, and a lone
    surrogate is not Unicode), or None."""
    if "\x00" in text:
        return "must not contain NUL (\\u0000) characters"
    if _SURROGATE_RE.search(text):
        return "must be valid Unicode (it contains a lone surrogate)"
    return None


def checked_text(value: str, name: str) -> str:
    problem = unstorable(value)
    if problem:
        raise invalid(f"Invalid string: {name} {problem}.", name)
    return value


class Repeated(list):
    """A plain name given more than once (`expand=a&expand=b`): a list for a list parameter, its
    last value for any other."""


# --- parsing ------------------------------------------------------------------------------------


def parse_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """`[("metadata[a]", "1"), ("types[]", "card")]` -> `{"metadata": {"a": "1"}, "types": ["card"]}`.

    A repeated plain key is `Repeated` (its values in order). A key given both as a value and as
    an object, and `[]` anywhere but at the end, are malformed (400)."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY_RE.match(key)
        if not match:
            raise malformed(f"Invalid parameter name: {key!r}.")
        path = [match.group(1), *_PART_RE.findall(match.group(2))]
        if "" in path[:-1]:
            raise malformed(f"Invalid parameter name: {key!r} ('[]' may only end a name).")
        if len(path) == 1:
            previous = root.get(key)
            if isinstance(previous, Repeated):
                previous.append(value)
                continue
            if isinstance(previous, str):
                root[key] = Repeated([previous, value])
                continue
        node: Any = root
        for index, part in enumerate(path[:-1]):
            wants_list = path[index + 1] == ""
            child = node.get(part)
            if child is None:
                child = [] if wants_list else {}
                node[part] = child
            elif not isinstance(child, list | dict) or isinstance(child, list) != wants_list:
                raise malformed(f"Invalid parameter {key!r}: it conflicts with another parameter of the same name.")
            node = child
        last = path[-1]
        if last == "":
            node.append(value)
        else:
            if isinstance(node.get(last), list | dict):
                raise malformed(f"Invalid parameter {key!r}: it conflicts with another parameter of the same name.")
            node[last] = value
    return root


def _as_list(value: Any, name: str) -> list[Any]:
    """A list given as a JSON array, as `name[]=…`, as `name[0]=…&name[1]=…`, or in OpenAPI's form
    style as `name=…` once per item (once: a list of one); '' is the empty list."""
    if value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and all(k.isdigit() for k in value):
        return [value[k] for k in sorted(value, key=int)]
    raise invalid(f"Invalid array: {name} must be a list.", name)


# --- types --------------------------------------------------------------------------------------


class Type(abc.ABC):
    """How a parameter's value is read and how it is described in the OpenAPI document."""

    style: str | None = None  # how a form body or query string encodes it: "deepObject" or "form" (repeated name)
    takes_list = False  # a list parameter: a repeated name gives its items

    @abc.abstractmethod
    def coerce(self, value: Any, name: str) -> Any: ...

    @abc.abstractmethod
    def schema(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class String(Type):
    enum: tuple[str, ...] = ()
    max_length: int = 5000

    def coerce(self, value: Any, name: str) -> str:
        if not isinstance(value, str):
            raise invalid(f"Invalid string: {name} must be a string.", name)
        checked_text(value, name)
        if len(value) > self.max_length:
            raise invalid(f"Invalid string: {name} must be at most {self.max_length} characters.", name)
        if self.enum and value not in self.enum:
            raise invalid(f"Invalid {name}: must be one of {', '.join(self.enum)}", name)
        return value

    def schema(self) -> dict[str, Any]:
        if self.enum:
            return {"type": "string", "enum": list(self.enum)}
        return {"type": "string", "maxLength": self.max_length}


@dataclass(frozen=True)
class Integer(Type):
    """A whole number that fits PostgreSQL's BIGINT (beyond it is a 400 here). `minimum` and
    `maximum` are the range the use case accepts (it refuses others with its own message, e.g.
    an amount's), declared in the document."""

    minimum: int = INT64[0]
    maximum: int = INT64[1]

    def coerce(self, value: Any, name: str) -> int:
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and _INT_RE.match(value.strip()):
            number = int(value.strip())
        if number is None:
            raise invalid(f"Invalid integer: {value}", name, code="parameter_invalid_integer")
        if not INT64[0] <= number <= INT64[1]:
            raise invalid(
                f"Invalid integer: {name} must be between {INT64[0]} and {INT64[1]}.",
                name,
                code="parameter_invalid_integer",
            )
        return number

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "format": "int64", "minimum": self.minimum, "maximum": self.maximum}


@dataclass(frozen=True)
class Boolean(Type):
    def coerce(self, value: Any, name: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value in ("true", "false"):
            return value == "true"
        raise invalid(f"Invalid boolean: {value}", name)

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True)
class StringList(Type):
    items: String = field(default_factory=String)
    style = "form"
    takes_list = True

    def coerce(self, value: Any, name: str) -> list[str]:
        return [self.items.coerce(item, f"{name}[{i}]") for i, item in enumerate(_as_list(value, name))]

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "items": self.items.schema()}


@dataclass(frozen=True)
class Metadata(Type):
    """Stripe's metadata: string keys and values; a key set to '' is removed, '' removes all."""

    style = "deepObject"

    def coerce(self, value: Any, name: str) -> dict[str, str] | str:
        if value == "":
            return ""
        if not isinstance(value, dict):
            raise invalid(f"Invalid {name}: pass an object of string keys and values.", name)
        out = {}
        for key, item in value.items():
            if isinstance(item, bool) or item is None:
                item = "" if item is None else str(item).lower()
            if isinstance(item, int | float):
                item = str(item)
            if not isinstance(item, str):
                raise invalid(f"Invalid {name}[{key}]: metadata values must be strings.", f"{name}[{key}]")
            key = str(key)
            problem = unstorable(key) or unstorable(item)
            if problem:
                raise invalid(f"Invalid {name}: its keys and values {problem}.", name)
            out[key] = item
        return out

    def schema(self) -> dict[str, Any]:
        return {
            "anyOf": [
                {
                    "type": "object",
                    "additionalProperties": {"type": "string", "maxLength": 500},
                    "maxProperties": METADATA_KEYS,
                },
                {"type": "string", "enum": [""]},
            ],
            "description": "Set of key-value pairs; a key set to '' is removed, '' removes them all. At most "
            f"{METADATA_KEYS} keys (after merging), keys of up to 40 characters, values of up to 500.",
        }


@dataclass(frozen=True)
class Object(Type):
    fields: Mapping[str, Param]
    style = "deepObject"

    def coerce(self, value: Any, name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise invalid(f"Invalid object: {name} must be an object.", name)
        return validate(self.fields, value, prefix=name)

    def schema(self) -> dict[str, Any]:
        return object_schema(self.fields)


@dataclass(frozen=True)
class ObjectList(Type):
    """A list of objects: `line_items[0][price]=…&line_items[0][quantity]=2` or a JSON array."""

    fields: Mapping[str, Param]
    max_items: int = 100
    style = "deepObject"  # line_items[0][quantity]=2, as Stripe's OpenAPI document declares it
    takes_list = True

    def coerce(self, value: Any, name: str) -> list[dict[str, Any]]:
        items = _as_list(value, name)
        if len(items) > self.max_items:
            raise invalid(f"Invalid array: {name} can have at most {self.max_items} items.", name)
        return [Object(self.fields).coerce(item, f"{name}[{i}]") for i, item in enumerate(items)]

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "items": object_schema(self.fields), "maxItems": self.max_items}


@dataclass(frozen=True)
class Range(Type):
    """A timestamp filter: `created=<unix>` or `created[gte]=…&created[lt]=…`."""

    style = "deepObject"
    bounds = ("gt", "gte", "lt", "lte")

    def coerce(self, value: Any, name: str) -> dict[str, int]:
        if not isinstance(value, dict):
            return {"eq": Integer().coerce(value, name)}
        unknown = [k for k in value if k not in self.bounds]
        if unknown:
            raise unknown_parameters([f"{name}[{k}]" for k in unknown])
        return {k: Integer().coerce(v, f"{name}[{k}]") for k, v in value.items()}

    def schema(self) -> dict[str, Any]:
        return {
            "anyOf": [
                Integer().schema(),
                {
                    "type": "object",
                    "properties": {bound: Integer().schema() for bound in self.bounds},
                    "additionalProperties": False,
                },
            ]
        }


@dataclass(frozen=True)
class Param:
    type: Type
    required: bool = False
    description: str = ""
    example: Any = None  # a working value, shown in the document


def unknown_parameters(names: list[str]) -> ApiError:
    label = "parameter" if len(names) == 1 else "parameters"
    return invalid(f"Received unknown {label}: {', '.join(names)}", names[0], code="parameter_unknown")


def validate(params: Mapping[str, Param], raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Typed values of `raw` by the declarations in `params`; JSON nulls count as not given."""

    def full(name: str) -> str:
        return f"{prefix}[{name}]" if prefix else name

    unknown = [full(name) for name in raw if name not in params]
    if unknown:
        raise unknown_parameters(unknown)
    out = {}
    for name, value in raw.items():
        if isinstance(value, Repeated) and not params[name].type.takes_list:
            value = value[-1]
        if value is not None:
            out[name] = params[name].type.coerce(value, full(name))
    for name, param in params.items():
        if param.required and name not in out:
            raise invalid(f"Missing required param: {full(name)}.", full(name), code="parameter_missing")
    return out


def object_schema(params: Mapping[str, Param]) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {name: describe(param) for name, param in params.items()},
        "additionalProperties": False,
    }
    required = [name for name, param in params.items() if param.required]
    if required:
        schema["required"] = required
    return schema


def describe(param: Param) -> dict[str, Any]:
    schema = param.type.schema()
    if param.description and "description" not in schema:
        schema = {**schema, "description": param.description}
    if param.example is not None:
        schema = {**schema, "example": param.example}
    return schema
