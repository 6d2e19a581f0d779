"""The job API's bodies are the proto's own JSON mapping (protobuf's canonical JSON): parsing with errors that
name the field, printing, and the JSON Schema of a message for the OpenAPI document, derived from the proto's
descriptors so that the document cannot drift from what the routes parse and print."""

from __future__ import annotations

import json
import re

from fastapi.responses import Response
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.http.errors import ApiError

_AT_PATH = re.compile(r' at "?([\w.]+)"?')
_NO_FIELD = re.compile(r'has no field named "([^"]+)"')
_FAILED_FIELD = re.compile(r"Failed to parse (\w+) field")
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


def _find(data, leaf: str, path: tuple[str, ...] = ()) -> str | None:
    """The path of the first key named ``leaf`` (in either naming) in a parsed JSON body."""
    if isinstance(data, dict):
        for key, value in data.items():
            here = (*path, _snake(key))
            if _snake(key) == leaf:
                return ".".join(here)
            found = _find(value, leaf, here)
            if found:
                return found
    return None


def _param(message: str, data: dict) -> str | None:
    """The field a json_format.ParseError is about, as the proto names it ("text_to_image.sprint.keep_ratio")."""
    at = _AT_PATH.search(message)
    path = [_snake(part) for part in at.group(1).rstrip(".").split(".")[1:]] if at else []
    missing = _NO_FIELD.search(message)
    if missing:
        return ".".join([*path, _snake(missing.group(1))])
    if path:
        return ".".join(path)
    failed = _FAILED_FIELD.search(message)  # names only the leaf: look for it in the body
    return (_find(data, _snake(failed.group(1))) or _snake(failed.group(1))) if failed else None


def parse_body(body: bytes, message_type: type[Message]) -> Message:
    try:
        data = json.loads(body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"the body is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the body must be a JSON object ({message_type.DESCRIPTOR.name})")
    try:
        return json_format.ParseDict(data, message_type())
    except json_format.ParseError as err:
        text = str(err).split("\n")[0]
        param = _param(text, data)
        raise ApiError(400, f"{param}: {text}" if param else text, param=param) from None


def to_json(message: Message) -> str:
    return json_format.MessageToJson(message, indent=None)


def proto_response(message: Message, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(to_json(message), status_code=status_code, headers=headers, media_type="application/json")


# ---------------------------------------------------------------- JSON Schema (OpenAPI 3.1) from descriptors

_SCALARS = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"}, FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int32", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int32", "minimum": 0},
    # 64-bit integers print as strings (JavaScript's numbers cannot hold them); numbers are accepted too.
    FieldDescriptor.TYPE_INT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": ["string", "integer"], "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": ["string", "integer"], "format": "uint64"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Struct": {"type": "object"},
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _field_schema(field: FieldDescriptor, schemas: dict[str, dict]) -> dict:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": _field_schema(value, schemas)}
        item = message_schemas(field.message_type, schemas)
    elif field.type == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        if enum.name not in schemas:
            schemas[enum.name] = {"type": "string", "enum": [value.name for value in enum.values]}
        item = _ref(enum.name)
    else:
        item = dict(_SCALARS[field.type])
    if field.is_repeated:
        return {"type": "array", "items": item}
    return item


def message_schemas(descriptor: Descriptor, schemas: dict[str, dict]) -> dict:
    """Adds ``descriptor``'s schema (and those it refers to) to ``schemas``; returns a reference to it."""
    if descriptor.full_name in _WELL_KNOWN:
        return dict(_WELL_KNOWN[descriptor.full_name])
    if descriptor.name not in schemas:
        schemas[descriptor.name] = {}  # placed first: a message that refers to itself stops here
        properties = {field.json_name: _field_schema(field, schemas) for field in descriptor.fields}
        # Parsing also takes the proto's own field names (snake_case); printing uses these (lowerCamelCase).
        schemas[descriptor.name] = {"type": "object", "properties": properties}
    return _ref(descriptor.name)
