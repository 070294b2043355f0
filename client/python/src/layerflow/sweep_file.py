"""Sweep files (YAML) to ``layerflow.v1.SweepSpec``, as strict as the CLI.

The fields are read off the SweepSpec message itself, so a field added to
proto/layerflow/v1/experiment.proto is understood here as soon as the package
is rebuilt. The rules are those of ``layerflow submit`` (docs/sweep-file.md):

* every key must be a field of the message: an unknown or repeated key is an
  error naming the field, with a suggestion for a near miss;
* a single value stands for a one-element list (``models: pythia-70m``);
* a single name stands for a message whose first field is that name
  (``datasets: [kvpr]``, ``probe: kvpr``);
* integers, numbers and booleans are parsed strictly from the text:
  ``8.5`` or ``8 prompts`` for ``num_prompts`` is an error, not a rounding.

Errors are ``LayerflowError(INVALID_ARGUMENT, "SOURCE:LINE:COL: field
'seeds[1]': expected a non-negative integer, got 'abc'")``; nothing is sent.
"""

import math
import os
import re

import grpc
import yaml
from google.protobuf import descriptor as _descriptor

from layerflow.errors import LayerflowError
from layerflow.v1 import experiment_pb2

_FD = _descriptor.FieldDescriptor
_INT32 = (_FD.TYPE_INT32, _FD.TYPE_SINT32, _FD.TYPE_SFIXED32)
_INT64 = (_FD.TYPE_INT64, _FD.TYPE_SINT64, _FD.TYPE_SFIXED64)
_UINT = (_FD.TYPE_UINT32, _FD.TYPE_FIXED32, _FD.TYPE_UINT64, _FD.TYPE_FIXED64)
_FLOAT = (_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT)
# Integer fields that may be negative (every other one is >= 0).
_SIGNED_FIELDS = {"priority"}
_NULL_TAG = "tag:yaml.org,2002:null"
_INTEGER = re.compile(r"^[+-]?[0-9]+$")
_NUMBER = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")


def _is_repeated(field):
    # protobuf >= 6.31 has the property and deprecates `label`.
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:
        return field.label == _FD.LABEL_REPEATED
    return repeated() if callable(repeated) else repeated


def _invalid(message):
    return LayerflowError(grpc.StatusCode.INVALID_ARGUMENT, message)


class _Reader:
    def __init__(self, source):
        self.source = source

    def location(self, node):
        mark = getattr(node, "start_mark", None)
        if mark is None:
            return self.source
        return "%s:%d:%d" % (self.source, mark.line + 1, mark.column + 1)

    def field_error(self, node, field, what):
        return _invalid("%s: field '%s': %s" % (self.location(node), field, what))

    def error(self, node, what):
        return _invalid("%s: %s" % (self.location(node), what))

    @staticmethod
    def describe(node):
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _NULL_TAG and node.value in ("", "~", "null", "Null", "NULL"):
                return "nothing (null)"
            text = node.value
            if len(text) > 40:
                text = text[:37] + "..."
            return "'%s'" % text
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        if isinstance(node, yaml.MappingNode):
            return "a map"
        return "an undefined value"

    def expected(self, what, node):
        return "expected %s, got %s" % (what, self.describe(node))

    @staticmethod
    def is_scalar(node):
        return isinstance(node, yaml.ScalarNode) and not (
            node.tag == _NULL_TAG and node.value in ("", "~", "null", "Null", "NULL"))

    # --- scalars -----------------------------------------------------------

    def integer(self, node, path, field):
        signed = field.name in _SIGNED_FIELDS
        if field.type in _INT32:
            low, high = (-2**31 if signed else 0), 2**31 - 1
        elif field.type in _INT64:
            low, high = (-2**63 if signed else 0), 2**63 - 1
        else:
            low, high = 0, (2**32 - 1 if field.type in (_FD.TYPE_UINT32, _FD.TYPE_FIXED32)
                            else 2**64 - 1)
        kind = "a non-negative integer" if low == 0 else "an integer"
        if not self.is_scalar(node) or not _INTEGER.match(node.value):
            raise self.field_error(node, path, self.expected(kind, node))
        value = int(node.value)
        if value < low or value > high:
            raise self.field_error(
                node, path, self.expected("%s in [%d, %d]" % (kind, low, high), node))
        return value

    def number(self, node, path):
        if not self.is_scalar(node) or not _NUMBER.match(node.value):
            raise self.field_error(node, path, self.expected("a number", node))
        value = float(node.value)
        if not math.isfinite(value):
            raise self.field_error(node, path, self.expected("a number", node))
        return value

    def boolean(self, node, path):
        if self.is_scalar(node) and node.value.lower() in ("true", "false"):
            return node.value.lower() == "true"
        raise self.field_error(node, path, self.expected("true or false", node))

    def string(self, node, path):
        if not self.is_scalar(node):
            raise self.field_error(node, path, self.expected("a string", node))
        return node.value

    def enum(self, node, path, field):
        # JOB_KIND_PROBE may be written as such or as "probe".
        names = [v.name for v in field.enum_type.values]
        prefix = os.path.commonprefix(names) if len(names) > 1 else ""
        if self.is_scalar(node):
            for value in field.enum_type.values:
                if node.value.upper() in (value.name, value.name[len(prefix):]):
                    return value.number
        raise self.field_error(node, path, self.expected("one of " + ", ".join(names), node))

    # --- messages ----------------------------------------------------------

    def scalar_value(self, node, path, field):
        if field.type in _INT32 + _INT64 + _UINT:
            return self.integer(node, path, field)
        if field.type in _FLOAT:
            return self.number(node, path)
        if field.type == _FD.TYPE_BOOL:
            return self.boolean(node, path)
        if field.type == _FD.TYPE_ENUM:
            return self.enum(node, path, field)
        if field.type == _FD.TYPE_STRING:
            return self.string(node, path)
        raise self.field_error(node, path, "fields of type %d cannot be set from a sweep file"
                               % field.type)

    def message(self, node, path, message):
        descriptor = message.DESCRIPTOR
        if self.is_scalar(node):
            # `kvpr` for {name: kvpr}, `probe: kvpr` for {task: kvpr}.
            first = descriptor.fields[0]
            if first.type == _FD.TYPE_STRING and not _is_repeated(first):
                setattr(message, first.name, node.value)
                return
        if not isinstance(node, yaml.MappingNode):
            first = descriptor.fields[0].name
            raise self.field_error(node, path, self.expected(
                "a %s or a map {%s, ...}" % (first.replace("_", " "), first), node))
        self.fields(node, path, message)

    def fields(self, node, prefix, message):
        descriptor = message.DESCRIPTOR
        known = [f.name for f in descriptor.fields]
        first_line = {}
        for key, value in node.value:
            if not self.is_scalar(key):
                raise self.error(key, self.expected("a field name", key))
            name = key.value
            path = "%s.%s" % (prefix, name) if prefix else name
            field = descriptor.fields_by_name.get(name)
            if field is None:
                raise self.error(key, "unknown field '%s'%s" % (path, _suggest(name, known)))
            if name in first_line:
                raise self.error(key, "field '%s' repeated (first set on line %d)"
                                 % (path, first_line[name]))
            first_line[name] = key.start_mark.line + 1
            self.field(value, path, message, field)
        if descriptor.name == "ProbeSpec" and not message.task:
            raise self.field_error(node, prefix,
                                   "missing 'task' (the data set to probe, e.g. task: kvpr)")

    def field(self, node, path, message, field):
        is_message = field.type == _FD.TYPE_MESSAGE
        if _is_repeated(field):
            target = getattr(message, field.name)
            if isinstance(node, yaml.SequenceNode):
                elements = [(e, "%s[%d]" % (path, i)) for i, e in enumerate(node.value)]
            elif self.is_scalar(node) or (is_message and isinstance(node, yaml.MappingNode)):
                elements = [(node, path)]
            else:
                kind = "a " + field.message_type.name if is_message else "a value"
                raise self.field_error(node, path,
                                       self.expected("%s or a list of them" % kind, node))
            for element, element_path in elements:
                if is_message:
                    self.message(element, element_path, target.add())
                else:
                    target.append(self.scalar_value(element, element_path, field))
        elif is_message:
            self.message(node, path, getattr(message, field.name))
        else:
            setattr(message, field.name, self.scalar_value(node, path, field))


def _edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
        prev = cur
    return prev[len(b)]


def _suggest(key, known):
    """" (did you mean 'seeds'?)" for a near miss, else the known fields."""
    normalized = key.replace("-", "_").lower()
    threshold = max(2, len(normalized) // 3)
    best, best_distance = None, threshold + 1
    for candidate in known:
        d = _edit_distance(normalized, candidate)
        if len(normalized) >= 4 and normalized in candidate:
            d = min(d, 1)
        if d < best_distance:
            best, best_distance = candidate, d
    if best is not None:
        return " (did you mean '%s'?)" % best
    return " (known fields: %s)" % ", ".join(known)


def parse_sweep_yaml(text, source="<sweep>"):
    """The SweepSpec of a sweep file's text; ``source`` names it in errors."""
    reader = _Reader(source)
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = ("%s:%d:%d" % (source, mark.line + 1, mark.column + 1)) if mark else source
        raise _invalid("%s: YAML syntax error: %s" % (where, e.problem or e.context)) from None
    except yaml.YAMLError as e:
        raise _invalid("%s: invalid YAML: %s" % (source, e)) from None
    documents = [d for d in documents if d is not None]
    if len(documents) > 1:
        raise reader.error(documents[1], "a sweep file holds one YAML document; found a second one")
    if not documents or (isinstance(documents[0], yaml.ScalarNode)
                         and not reader.is_scalar(documents[0])):
        raise _invalid("%s: empty sweep file; expected a map of sweep fields "
                       "(name, models, ...; see docs/sweep-file.md)" % source)
    root = documents[0]
    if not isinstance(root, yaml.MappingNode):
        raise reader.error(root, reader.expected(
            "a map of sweep fields (name: ..., models: [...])", root))
    spec = experiment_pb2.SweepSpec()
    reader.fields(root, "", spec)
    return spec


def read_sweep_file(path):
    """The SweepSpec of the sweep file at ``path``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise LayerflowError(grpc.StatusCode.NOT_FOUND, "sweep file not found: %s" % path)
    if os.path.isdir(path):
        raise _invalid("sweep file is a directory, not a file: %s" % path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise LayerflowError(grpc.StatusCode.PERMISSION_DENIED
                             if isinstance(e, PermissionError) else grpc.StatusCode.UNKNOWN,
                             "cannot read sweep file %s: %s" % (path, e.strerror or e)) from None
    except UnicodeDecodeError as e:
        raise _invalid("cannot read sweep file %s: not UTF-8 text (%s)" % (path, e)) from None
    return parse_sweep_yaml(text, path)


def looks_like_path(text):
    """True for a one-line string naming a file (not YAML text)."""
    if "\n" in text or (":" in text and not os.path.exists(text)):
        return False
    return text.endswith((".yaml", ".yml")) or os.path.isfile(text)
