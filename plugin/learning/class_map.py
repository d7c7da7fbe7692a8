"""Label values -> the eight urban functions: a user-editable CSV table.

The bundled table (``resources/class_maps/default.csv``) covers OpenStreetMap land use (the
Geofabrik ``fclass`` values and the raw ``landuse``/``natural``/``leisure``/``amenity`` tags) and
our own class names and codes. A user's CSV has the same two columns (``value,function``);
``function`` is a class name or ``ignore``. Pure Python: no torch, no qgis.
"""
import csv
import os

from ..core.classes import CLASS_BY_KEY, FUNCTION_CLASSES
from ..core.environment import PLUGIN_ROOT
from ..core.errors import InputError

DEFAULT_CLASS_MAP = os.path.join(PLUGIN_ROOT, "resources", "class_maps", "default.csv")
IGNORE = "ignore"


def normalise_value(value):
    """'  Landuse=Forest ' -> 'landuse=forest'; integers and floats like 3.0 -> '3'."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return " ".join(str(value).strip().lower().replace("-", "_").split()).replace(" ", "_")


class ClassMap:
    """A mapping from label values to function keys (or ``ignore``)."""

    def __init__(self, table, path):
        self.table = dict(table)
        self.path = path
        # our own class names, labels and codes are always understood
        for c in FUNCTION_CLASSES:
            for alias in (c.key, c.label, str(c.code)):
                self.table.setdefault(normalise_value(alias), c.key)

    def lookup(self, value):
        """Function key, ``ignore``, or None for an unknown value."""
        if value is None:
            return None
        v = normalise_value(value)
        if v in self.table:
            return self.table[v]
        if "=" in v:  # a raw tag: try its value alone
            return self.table.get(v.split("=", 1)[1])
        return None

    def resolve(self, values, field=None):
        """{value: function key or ignore} for every distinct value; raises an InputError that
        lists the unknown values and names the file to edit (and, when most values are unknown,
        asks whether ``field`` is the right field)."""
        out, unknown = {}, []
        for value in values:
            key = self.lookup(value)
            if key is None:
                unknown.append(value)
            else:
                out[value] = key
        if unknown:
            shown = ", ".join(repr(v) for v in sorted(unknown, key=str)[:30])
            more = f" and {len(unknown) - 30} more" if len(unknown) > 30 else ""
            raise InputError(
                f"{len(unknown)} label value(s) are not in the class map: {shown}{more}. Add "
                f"them to a copy of {self.path} (one line 'value,function', function one of "
                f"{', '.join(c.key for c in FUNCTION_CLASSES)} or ignore) and give that file "
                "as the class map (CLASS_MAP)." + (wrong_field_words(field) if field and
                                                   len(unknown) > len(out) else ""))
        return out

    def as_dict(self):
        return dict(sorted(self.table.items()))


def wrong_field_words(field):
    """Most values unknown: perhaps the field holds names or ids, not classes."""
    return (f" Most values of {field!r} are unknown: is it the field that holds the classes? "
            "In OpenStreetMap land use it is fclass (Geofabrik extracts) or landuse, natural, "
            "leisure or amenity (QuickOSM).")


def load_class_map(path=None):
    """The table in ``path`` (default: the bundled one); clear errors for a malformed file,
    naming its line numbers as an editor shows them."""
    path = path or DEFAULT_CLASS_MAP
    if not os.path.isfile(path):
        raise InputError(f"Class map file not found: {path!r}.")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise InputError(f"Class map {path}: not UTF-8 text ({exc.reason} at byte {exc.start}). "
                         "Save it as UTF-8 (CSV UTF-8 in a spreadsheet).") from exc
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), 1)
                if line.strip() and not line.lstrip().startswith("#")]
    rows = [(n, row) for (n, _), row in zip(numbered, csv.reader(line for _, line in numbered))]
    if rows and [c.strip().lower() for c in rows[0][1][:2]] == ["value", "function"]:
        rows = rows[1:]
    table, where = {}, {}
    for n, row in rows:
        if len(row) < 2 or not row[0].strip():
            raise InputError(f"Class map {path}: line {n} ({','.join(row)!r}) must be "
                             "'value,function'.")
        function = normalise_value(row[1])
        if function != IGNORE and function not in CLASS_BY_KEY:
            raise InputError(f"Class map {path}: line {n} maps {row[0]!r} to {row[1]!r}, which "
                             f"is not one of {', '.join(CLASS_BY_KEY)} or ignore.")
        value = normalise_value(row[0])
        if value in table and table[value] != function:
            raise InputError(f"Class map {path}: {row[0]!r} is mapped twice, to "
                             f"{table[value]!r} on line {where[value]} and to {function!r} on "
                             f"line {n}. Keep one of the two lines.")
        table[value], where[value] = function, n
    return ClassMap(table, path)
