"""Reading an ONNX file's ``metadata_props`` without onnxruntime.

The model picker must list the installed models (their cards) even before onnxruntime is
installed, so that a user sees what the plugin offers and why Run is disabled. An ONNX file is a
protobuf ``ModelProto``; its ``metadata_props`` (field 14) are top-level
``StringStringEntryProto`` records. We walk the top-level fields and seek past the rest (the
graph with its weights), so listing a 100 MB model reads a few kilobytes.
"""
import os

_METADATA_PROPS = 14   # ModelProto.metadata_props
_WIRE_VARINT, _WIRE_64BIT, _WIRE_BYTES, _WIRE_32BIT = 0, 1, 2, 5


class NotOnnx(ValueError):
    """The file is not a readable ONNX protobuf (truncated, or another format)."""


def _varint(read):
    shift = result = 0
    while True:
        byte = read(1)
        if not byte:
            raise NotOnnx("the file ends inside a field (truncated?)")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise NotOnnx("a field header is malformed (not an ONNX file?)")


def _entry(data):
    """(key, value) of a StringStringEntryProto."""
    pos, fields = 0, {}

    def read(n):
        nonlocal pos
        chunk = data[pos:pos + n]
        pos += len(chunk)
        return chunk

    while pos < len(data):
        key = _varint(read)
        if key & 7 != _WIRE_BYTES:
            raise NotOnnx("a metadata entry is malformed")
        size = _varint(read)
        if pos + size > len(data):
            raise NotOnnx("a metadata entry is truncated")
        fields[key >> 3] = read(size).decode("utf-8", errors="replace")
    return fields.get(1, ""), fields.get(2, "")


def read_metadata_props(path):
    """{key: value} of the model's ``metadata_props``. Raises :class:`NotOnnx` or ``OSError``."""
    props = {}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise NotOnnx("the file is empty")
        while f.tell() < size:
            key = _varint(f.read)
            field, wire = key >> 3, key & 7
            if field == 0:
                raise NotOnnx("a field number is 0 (not an ONNX file)")
            if wire == _WIRE_VARINT:
                _varint(f.read)
                continue
            length = {_WIRE_64BIT: 8, _WIRE_32BIT: 4}.get(wire)
            if length is None:
                if wire != _WIRE_BYTES:
                    raise NotOnnx(f"wire type {wire} does not occur in ONNX files")
                length = _varint(f.read)
            if f.tell() + length > size:
                raise NotOnnx("a field runs past the end of the file (truncated?)")
            if field == _METADATA_PROPS and wire == _WIRE_BYTES:
                k, v = _entry(f.read(length))
                props[k] = v
            else:
                f.seek(length, os.SEEK_CUR)
    return props
