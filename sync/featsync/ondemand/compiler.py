"""On-demand features: SQL expressions over stored features and request fields, defined once.

A feature service may declare request fields (typed values the caller sends with each
request) and on-demand features (SQL expressions over the service's stored features and
those request fields). Each expression is parsed once with sqlglot when the registry
loads, type-checked against the declared column types, and compiled in one pass into

- SQL for each warehouse (DuckDB, Postgres, Snowflake, Spark), generated from that parsed form
  with the semantics pinned explicitly (below), which `featsync.point_in_time_join` puts
  into training sets (through the generated macro ``featsync_on_demand_sql``); and
- a Python closure that computes the same value online, after the Redis read.

Anything outside the supported subset is rejected at load time, so evaluation never
fails at request time. Pinned semantics, identical in SQL and Python:

- arithmetic (``+ - * /``, unary minus) is IEEE double precision: integer operands are
  cast to double first, so there is no integer overflow and ``/`` never truncates;
- ``a / b`` is NULL when ``b`` is 0 (Postgres would raise, DuckDB return infinity);
- any NULL operand gives NULL; AND, OR and NOT use SQL's three-valued logic; a CASE
  condition that is NULL counts as false; COALESCE returns its first non-NULL argument;
- comparisons of two integers are exact, of mixed numbers in double precision; text
  compares only with = and <> (ordering would depend on collation);
- a double becomes an integer (``cast(x as bigint)``, or a bigint output) by rounding half
  to even, as both engines' casts do; outside the int64 range it is NULL, not an error;
- date parts (year, quarter, month, week, day, doy, dow, isodow, hour, minute, second)
  are whole numbers of the UTC timestamp; dow counts Sunday as 0; second drops fractions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from featsync.errors import BIGINT_MAX, BIGINT_MIN, FeatsyncError, shown
from featsync.times import is_aware, parse_time

DIALECTS = ("duckdb", "postgres", "snowflake", "spark")
# Kinds of values an expression handles, named as in featsync.registry.types (the one table
# of column types, which maps declared types to them); "null" is the type of a bare NULL.
# A timestamp is an aware UTC datetime here, whether its column is naive (UTC) or zoned.
INT, FLOAT, BOOL, TEXT, TIMESTAMP, NULL = "int", "float", "bool", "text", "timestamp", "null"
EVALUATOR_KINDS = (INT, FLOAT, BOOL, TEXT, TIMESTAMP)
NUMERIC = (INT, FLOAT)
OUTPUT_KINDS = (INT, FLOAT, BOOL)
_INT64_LIMIT = float(2**63)
PLACEHOLDER = "featsync_input:"  # compiled SQL names each input as the quoted identifier "featsync_input:<name>"


class ExpressionError(ValueError):
    """An on-demand expression outside the supported subset; the registry reports it with file and node."""


@dataclass(frozen=True)
class RequestField:
    """A typed value sent with each online request; offline, the spine column of the same name."""

    name: str
    data_type: str
    kind: str
    description: str = ""
    default_now: bool = False  # timestamp fields only: online, a missing value is the request's arrival time

    def coerce(self, value: Any) -> Any:
        """The value as the evaluator's kind; FeatsyncError naming the field if it does not fit."""
        if value is None:
            return None
        kind = self.kind
        if kind == BOOL and isinstance(value, bool):
            return value
        if kind == INT and isinstance(value, int) and not isinstance(value, bool):
            if BIGINT_MIN <= value <= BIGINT_MAX:
                return value
            raise FeatsyncError(f"request field '{self.name}' is {self.data_type}; {shown(value)} is outside 64-bit integers")
        if kind == FLOAT and isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise FeatsyncError(
                    f"request field '{self.name}' is {self.data_type}; {shown(value)} is beyond a double"
                ) from None
        if kind == TEXT and isinstance(value, str):
            return value
        if kind == TIMESTAMP:
            if isinstance(value, str):
                return self.parse(value)
            if isinstance(value, datetime):
                return self._utc(value, shown(value))
        raise FeatsyncError(f"request field '{self.name}' is {self.data_type}; got {type(value).__name__} {shown(value)}")

    def _utc(self, value: datetime, shown: str) -> datetime:
        """featsync times are UTC: a time without a zone is refused rather than guessed."""
        if not is_aware(value):
            raise FeatsyncError(
                f"request field '{self.name}': {shown} has no time zone; featsync times are UTC, "
                "give one (e.g. 2024-04-29T02:30:00Z or a datetime with tzinfo=UTC)"
            )
        try:
            return value.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00 is in year 0 once in UTC
            raise FeatsyncError(
                f"request field '{self.name}': {shown} is outside the years 1 to 9999 once converted to UTC"
            ) from None

    def parse(self, text: str) -> Any:
        """A value from text (a request field given on a command line), typed by the declaration."""
        try:
            if self.kind == INT:
                return self.coerce(int(text))
            if self.kind == FLOAT:
                return float(text)
            if self.kind == BOOL:
                lowered = text.strip().lower()
                if lowered in {"true", "1", "yes"}:
                    return True
                if lowered in {"false", "0", "no"}:
                    return False
                raise ValueError("not true/false")
            if self.kind == TIMESTAMP:
                # The one rule for a time given as text (featsync.times, docs/time-and-types.md).
                return parse_time(text.strip(), f"request field '{self.name}'")
            return text
        except ValueError:
            raise FeatsyncError(f"request field '{self.name}' is {self.data_type}; cannot read {shown(text)} as one") from None


@dataclass(frozen=True)
class OnDemandFeature:
    """One compiled on-demand feature: its SQL per engine and its Python evaluator."""

    name: str
    data_type: str
    kind: str  # int, float or bool
    expression: str
    inputs: tuple[str, ...]  # stored features and request fields it reads, in first-use order
    sql: Mapping[str, str]  # per dialect, inputs as "featsync_input:<name>" placeholders
    evaluate: Callable[[Mapping[str, Any]], Any] = field(compare=False, repr=False)
    description: str = ""


@dataclass
class _Compiled:
    kind: str
    sql: exp.Expression
    fn: Callable[[Mapping[str, Any]], Any]


def compile_feature(
    name: str,
    expression: str,
    data_type: str,
    columns: Mapping[str, str | None],
    description: str = "",
    output: str | None = None,
) -> OnDemandFeature:
    """Parse, type-check and compile one expression; `columns` maps each usable name to its kind.

    `output` is the kind of `data_type` (the registry reads it in the target's dialect);
    without it, the type is read in generic SQL. Raises ExpressionError naming the offending part.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ExpressionError("must be a non-empty SQL expression")
    if output is None and isinstance(data_type, str):
        from featsync.registry.types import TypeProblem, column_type  # the registry imports this module

        try:
            output = column_type(data_type).kind
        except TypeProblem:
            output = None
    if output not in OUTPUT_KINDS:
        raise ExpressionError(f"data_type {data_type!r} is not supported; use bigint, float8 (double) or boolean")
    try:
        tree = sqlglot.parse_one(expression)
    except ParseError as exc:
        raise ExpressionError(f"is not valid SQL: {exc.errors[0]['description'] if exc.errors else exc}") from None
    inputs: dict[str, None] = {}
    body = _Compiler(columns, inputs).compile(tree)
    result = _finish(body, output, data_type)
    sql = {dialect: _render(result.sql, dialect) for dialect in DIALECTS}
    return OnDemandFeature(name, data_type, output, expression, tuple(inputs), sql, result.fn, description)


# -- compiling one parsed expression into (kind, pinned SQL, Python closure) -------------

_COMPARISONS: dict[type, tuple[str, Callable[[Any, Any], bool]]] = {
    exp.EQ: ("=", lambda a, b: a == b),
    exp.NEQ: ("<>", lambda a, b: a != b),
    exp.LT: ("<", lambda a, b: a < b),
    exp.LTE: ("<=", lambda a, b: a <= b),
    exp.GT: (">", lambda a, b: a > b),
    exp.GTE: (">=", lambda a, b: a >= b),
}
_ARITHMETIC: dict[type, Callable[[float, float], float]] = {
    exp.Add: lambda a, b: a + b,
    exp.Sub: lambda a, b: a - b,
    exp.Mul: lambda a, b: a * b,
}
_DATE_PARTS: dict[str, Callable[[datetime], int]] = {
    "YEAR": lambda t: t.year,
    "QUARTER": lambda t: (t.month - 1) // 3 + 1,
    "MONTH": lambda t: t.month,
    "WEEK": lambda t: t.isocalendar()[1],
    "DAY": lambda t: t.day,
    "DOY": lambda t: t.timetuple().tm_yday,
    "DOW": lambda t: t.isoweekday() % 7,
    "ISODOW": lambda t: t.isoweekday(),
    "HOUR": lambda t: t.hour,
    "MINUTE": lambda t: t.minute,
    "SECOND": lambda t: t.second,
}
_PART_ALIASES = {"DAYOFWEEK": "DOW", "DAYOFYEAR": "DOY", "DAYOFMONTH": "DAY", "WEEKOFYEAR": "WEEK", "DAYOFWEEKISO": "ISODOW"}
_PART_FUNCTIONS = {
    exp.Year: "YEAR",
    exp.Quarter: "QUARTER",
    exp.Month: "MONTH",
    exp.WeekOfYear: "WEEK",
    exp.Day: "DAY",
    exp.DayOfMonth: "DAY",
    exp.DayOfYear: "DOY",
    exp.DayOfWeek: "DOW",
    exp.DayOfWeekIso: "ISODOW",
    exp.Hour: "HOUR",
    exp.Minute: "MINUTE",
    exp.Second: "SECOND",
}
SUPPORTED = (
    "columns, numbers, strings, true/false/null, + - * /, comparisons, and/or/not, is [not] null, "
    "case when, coalesce, cast(... as bigint|double|boolean), extract(part from ts) / date_part('part', ts)"
)


_SQL_TYPES = {INT: "bigint", FLOAT: "double", BOOL: "boolean", TEXT: "text", TIMESTAMP: "timestamp"}
_ROUNDING_CAST = "featsync_rounding_cast"  # meta flag: a double -> bigint cast that must round half to even


def _render(tree: exp.Expression, dialect: str) -> str:
    """The pinned SQL in one dialect. sqlglot spells the tree for each engine; where Spark's
    functions mean something else, the tree is first rewritten to Spark's way of saying it."""
    if dialect == "spark":
        # Two passes: a replaced node's subtree is not visited again within one transform.
        tree = tree.transform(_spark_rounding).transform(_spark_date_parts)
    return tree.sql(dialect=dialect)


def _spark_rounding(node: exp.Expression) -> exp.Expression:
    """Spark's double -> bigint cast truncates; the pinned rounding is half to even, which BROUND does."""
    if isinstance(node, exp.Cast) and node.meta.get(_ROUNDING_CAST):
        return exp.Cast(this=exp.Anonymous(this="BROUND", expressions=[node.this.copy()]), to=node.to.copy())
    return node


def _spark_date_parts(node: exp.Expression) -> exp.Expression:
    """Spark's DAYOFWEEK counts Sunday as 1 (pinned: 0); its ISO weekday is DAYOFWEEK_ISO."""
    if isinstance(node, exp.Extract):
        part = node.this.name.upper()
        if part == "DOW":
            day = exp.Extract(this=exp.var("DAYOFWEEK"), expression=node.expression)
            return exp.Paren(this=exp.Sub(this=day, expression=exp.Literal.number(1)))
        if part == "ISODOW":
            return exp.Extract(this=exp.var("DAYOFWEEK_ISO"), expression=node.expression)
    return node


def _double(node: exp.Expression) -> exp.Expression:
    return exp.Cast(this=node, to=exp.DataType.build("double"))


def _as_double(c: _Compiled) -> exp.Expression:
    """SQL of a numeric value as a double; floats stay as they are."""
    return c.sql if c.kind == FLOAT else _double(c.sql)


def _strict(fn: Callable, op: Callable) -> Callable:
    """op of one operand; NULL in, NULL out (SQL's strict functions)."""

    def run(env):
        value = fn(env)
        return None if value is None else op(value)

    return run


def _strict2(lf: Callable, rf: Callable, op: Callable) -> Callable:
    """op of two operands; NULL if either is NULL, the right one not evaluated after a left NULL."""

    def run(env):
        a = lf(env)
        if a is None:
            return None
        b = rf(env)
        if b is None:
            return None
        return op(a, b)

    return run


def _to_float(fn: Callable) -> Callable:
    return _strict(fn, float)


def _round_to_int(sql: exp.Expression, fn: Callable) -> _Compiled:
    """Double to bigint: round half to even (DuckDB's and Postgres' cast; Spark's truncates, so
    _render rounds there first), NULL outside int64."""
    cast = exp.Cast(this=sql.copy(), to=exp.DataType.build("bigint"))
    cast.meta[_ROUNDING_CAST] = True
    guarded = exp.Case(
        ifs=[exp.If(this=exp.LT(this=exp.Abs(this=sql), expression=_double(exp.Literal.number(str(2**63)))), true=cast)]
    )

    def run(env):
        value = fn(env)
        if value is None or not abs(value) < _INT64_LIMIT:
            return None
        return round(value)

    return _Compiled(INT, guarded, run)


def _unify(parts: list[_Compiled], what: str) -> str:
    kinds = {p.kind for p in parts} - {NULL}
    if not kinds:
        return NULL
    if kinds <= set(NUMERIC):
        return FLOAT if FLOAT in kinds else INT
    if len(kinds) > 1:
        raise ExpressionError(f"{what} mixes {', '.join(sorted(kinds))} values; cast them to one type")
    return kinds.pop()


def _coerced(part: _Compiled, kind: str) -> tuple[exp.Expression, Callable]:
    """A branch of CASE/COALESCE as the unified kind (ints widened to double when mixed)."""
    if kind == FLOAT and part.kind == INT:
        return _double(part.sql), _to_float(part.fn)
    if part.kind == NULL and kind in _SQL_TYPES:
        return exp.Cast(this=exp.Null(), to=exp.DataType.build(_SQL_TYPES[kind])), part.fn
    return part.sql, part.fn


def _finish(body: _Compiled, output: str, data_type: str) -> _Compiled:
    """The expression's value as the declared output type."""
    if body.kind == NULL:
        return _Compiled(
            output,
            exp.Cast(this=exp.Null(), to=exp.DataType.build({INT: "bigint", FLOAT: "double"}.get(output, "boolean"))),
            lambda env: None,
        )
    if output == BOOL:
        if body.kind != BOOL:
            raise ExpressionError(f"declared boolean but the expression gives {body.kind}")
        return body
    if body.kind not in NUMERIC:
        raise ExpressionError(f"declared {data_type} but the expression gives {body.kind}; cast it explicitly")
    if output == FLOAT:
        return _Compiled(FLOAT, _as_double(body), body.fn if body.kind == FLOAT else _to_float(body.fn))
    return body if body.kind == INT else _round_to_int(body.sql, body.fn)


@dataclass
class _Compiler:
    columns: Mapping[str, str]
    inputs: dict[str, None]

    def compile(self, node: exp.Expression) -> _Compiled:
        compiled = self._compile(node)
        if compiled.kind == NULL:
            # Always NULL (e.g. CASE WHEN p THEN NULL END): emit a bare NULL, which every engine
            # types from its context; Postgres would type the CASE itself as text.
            return _Compiled(NULL, exp.Null(), compiled.fn)
        return compiled

    def _compile(self, node: exp.Expression) -> _Compiled:
        method = getattr(self, f"_{type(node).__name__.lower()}", None)
        if method is not None:
            return method(node)
        for cls, part in _PART_FUNCTIONS.items():
            if type(node) is cls:
                return self._date_part(part, node.this, node)
        if isinstance(node, (exp.Select, exp.Subquery, exp.Query)):
            raise ExpressionError("subqueries are not supported; an on-demand feature is one expression per row")
        if isinstance(node, exp.AggFunc):
            raise ExpressionError(f"aggregate {node.sql()} is not supported; aggregate in a feature view instead")
        if isinstance(node, exp.Func):
            raise ExpressionError(f"function {node.sql()} is not supported (supported: {SUPPORTED})")
        raise ExpressionError(f"{node.sql()!r} is not supported (supported: {SUPPORTED})")

    # leaves

    def _column(self, node: exp.Column) -> _Compiled:
        if node.table:
            raise ExpressionError(f"'{node.sql()}': refer to features and request fields by bare name")
        name = node.name
        if name not in self.columns:
            known = ", ".join(sorted(self.columns)) or "none"
            raise ExpressionError(f"unknown name '{name}': not a feature of the service or a request field (known: {known})")
        kind = self.columns[name]
        if kind is None:
            raise ExpressionError(f"'{name}' has a type on-demand expressions cannot use")
        self.inputs[name] = None
        return _Compiled(kind, exp.column(exp.to_identifier(PLACEHOLDER + name, quoted=True)), lambda env: env[name])

    def _literal(self, node: exp.Literal) -> _Compiled:
        if node.is_string:
            value = node.this
            return _Compiled(TEXT, exp.Literal.string(value), lambda env: value)
        text = node.this
        try:
            number = int(text)
        except ValueError:
            number = float(text)
            if not math.isfinite(number):
                raise ExpressionError(f"number {text} is out of range") from None
            # Float literals are doubles everywhere (Postgres would read 0.1 as numeric).
            return _Compiled(FLOAT, _double(exp.Literal.number(repr(number))), lambda env: number)
        if not -(2**63) <= number < 2**63:
            raise ExpressionError(f"integer {text} is outside bigint's range")
        return _Compiled(INT, exp.Literal.number(text), lambda env: number)

    def _boolean(self, node: exp.Boolean) -> _Compiled:
        value = bool(node.this)
        return _Compiled(BOOL, exp.Boolean(this=value), lambda env: value)

    def _null(self, node: exp.Null) -> _Compiled:
        return _Compiled(NULL, exp.Null(), lambda env: None)

    def _paren(self, node: exp.Paren) -> _Compiled:
        inner = self.compile(node.this)
        return _Compiled(inner.kind, exp.Paren(this=inner.sql), inner.fn)

    # arithmetic

    def _numeric(self, node: exp.Expression, what: str) -> _Compiled:
        c = self.compile(node)
        if c.kind not in (*NUMERIC, NULL):
            raise ExpressionError(f"{what} needs numbers; '{node.sql()}' is {c.kind}")
        return c

    def _binary_arithmetic(self, node: exp.Binary) -> _Compiled:
        left = self._numeric(node.this, f"'{node.sql()}'")
        right = self._numeric(node.expression, f"'{node.sql()}'")
        op = _ARITHMETIC[type(node)]
        run = _strict2(left.fn, right.fn, lambda a, b: op(float(a), float(b)))
        sql = type(node)(this=_as_double(left), expression=_as_double(right))
        return _Compiled(FLOAT, exp.Paren(this=sql), run)

    _add = _sub = _mul = _binary_arithmetic

    def _div(self, node: exp.Div) -> _Compiled:
        left = self._numeric(node.this, f"'{node.sql()}'")
        right = self._numeric(node.expression, f"'{node.sql()}'")
        run = _strict2(left.fn, right.fn, lambda a, b: None if b == 0 else float(a) / float(b))
        divisor = exp.Nullif(this=_as_double(right), expression=_double(exp.Literal.number(0)))
        return _Compiled(FLOAT, exp.Paren(this=exp.Div(this=_as_double(left), expression=divisor)), run)

    def _neg(self, node: exp.Neg) -> _Compiled:
        inner = self._numeric(node.this, "unary minus")
        return _Compiled(FLOAT, exp.Paren(this=exp.Neg(this=_as_double(inner))), _strict(inner.fn, lambda a: -float(a)))

    # comparisons and logic

    def _comparison(self, node: exp.Binary) -> _Compiled:
        left, right = self.compile(node.this), self.compile(node.expression)
        symbol, op = _COMPARISONS[type(node)]
        kinds = {left.kind, right.kind} - {NULL}
        if len(kinds) == 2 and not kinds <= set(NUMERIC):
            raise ExpressionError(f"'{node.sql()}' compares {left.kind} with {right.kind}")
        kind = kinds.pop() if len(kinds) == 1 else (FLOAT if kinds else NULL)
        if kind == TEXT and symbol not in ("=", "<>"):
            raise ExpressionError(f"'{node.sql()}': text compares only with = and <> (ordering depends on collation)")
        exact = left.kind == right.kind or NULL in (left.kind, right.kind)
        if kind in NUMERIC and not exact:
            lsql, rsql = _as_double(left), _as_double(right)
            lf, rf = _to_float(left.fn), _to_float(right.fn)
        else:
            lsql, rsql, lf, rf = left.sql, right.sql, left.fn, right.fn
        return _Compiled(BOOL, exp.Paren(this=type(node)(this=lsql, expression=rsql)), _strict2(lf, rf, op))

    _eq = _neq = _lt = _lte = _gt = _gte = _comparison

    def _boolean_operand(self, node: exp.Expression, what: str) -> _Compiled:
        c = self.compile(node)
        if c.kind not in (BOOL, NULL):
            raise ExpressionError(f"{what} needs booleans; '{node.sql()}' is {c.kind}")
        return c

    def _and(self, node: exp.And) -> _Compiled:
        return self._connective(node, exp.And, dominant=False)

    def _or(self, node: exp.Or) -> _Compiled:
        return self._connective(node, exp.Or, dominant=True)

    def _connective(self, node: exp.Connector, cls: type[exp.Connector], dominant: bool) -> _Compiled:
        """AND (dominant False) and OR (dominant True) in SQL's three-valued logic: the dominant
        value wins even against NULL; otherwise NULL if either side is NULL."""
        what = cls.__name__.upper()
        left = self._boolean_operand(node.this, what)
        right = self._boolean_operand(node.expression, what)
        lf, rf = left.fn, right.fn

        def run(env):
            a = lf(env)
            if a is dominant:
                return dominant
            b = rf(env)
            if b is dominant:
                return dominant
            return None if a is None or b is None else not dominant

        return _Compiled(BOOL, exp.Paren(this=cls(this=left.sql, expression=right.sql)), run)

    def _not(self, node: exp.Not) -> _Compiled:
        inner = self._boolean_operand(node.this, "NOT")
        fn = inner.fn

        def run(env):
            a = fn(env)
            return None if a is None else not a

        return _Compiled(BOOL, exp.Paren(this=exp.Not(this=inner.sql)), run)

    def _is(self, node: exp.Is) -> _Compiled:
        if not isinstance(node.expression, exp.Null):
            raise ExpressionError(f"'{node.sql()}': only IS [NOT] NULL is supported")
        inner = self.compile(node.this)
        fn = inner.fn
        return _Compiled(BOOL, exp.Paren(this=exp.Is(this=inner.sql, expression=exp.Null())), lambda env: fn(env) is None)

    # conditionals

    def _case(self, node: exp.Case) -> _Compiled:
        if node.this is not None:
            raise ExpressionError(
                f"'{node.sql()}': write CASE WHEN <condition> THEN ... (the simple CASE x WHEN form is not supported)"
            )
        conditions = [self._boolean_operand(branch.this, "CASE WHEN") for branch in node.args.get("ifs") or []]
        results = [self.compile(branch.args["true"]) for branch in node.args.get("ifs") or []]
        default = (
            self.compile(node.args["default"])
            if node.args.get("default") is not None
            else _Compiled(NULL, exp.Null(), lambda env: None)
        )
        kind = _unify([*results, default], "CASE")
        coerced = [_coerced(r, kind) for r in [*results, default]]
        pairs = [(c.fn, fn) for c, (_, fn) in zip(conditions, coerced, strict=False)]
        default_fn = coerced[-1][1]

        def run(env):
            for condition, value in pairs:
                if condition(env) is True:
                    return value(env)
            return default_fn(env)

        sql = exp.Case(
            ifs=[exp.If(this=c.sql, true=s) for c, (s, _) in zip(conditions, coerced, strict=False)],
            default=coerced[-1][0],
        )
        return _Compiled(kind, sql, run)

    def _coalesce(self, node: exp.Coalesce) -> _Compiled:
        parts = [self.compile(node.this), *(self.compile(e) for e in node.expressions)]
        kind = _unify(parts, "COALESCE")
        coerced = [_coerced(p, kind) for p in parts]
        fns = [fn for _, fn in coerced]

        def run(env):
            for fn in fns:
                value = fn(env)
                if value is not None:
                    return value
            return None

        sql = exp.Coalesce(this=coerced[0][0], expressions=[s for s, _ in coerced[1:]])
        return _Compiled(kind, sql, run)

    # casts and date parts

    def _cast(self, node: exp.Cast) -> _Compiled:
        if isinstance(node, exp.TryCast):
            raise ExpressionError("TRY_CAST is not supported; use CAST")
        target = node.to.this
        inner = self.compile(node.this)
        if target in (exp.DataType.Type.BIGINT, exp.DataType.Type.INT, exp.DataType.Type.SMALLINT):
            if inner.kind == BOOL:
                # Postgres casts boolean only to integer: go through it.
                sql = exp.Cast(this=exp.Cast(this=inner.sql, to=exp.DataType.build("int")), to=exp.DataType.build("bigint"))
                return _Compiled(INT, sql, _strict(inner.fn, int))
            if inner.kind in (INT, NULL):
                return _Compiled(INT, exp.Cast(this=inner.sql, to=exp.DataType.build("bigint")), inner.fn)
            if inner.kind == FLOAT:
                return _round_to_int(inner.sql, inner.fn)
        elif target == exp.DataType.Type.DOUBLE:
            if inner.kind in (*NUMERIC, NULL):
                return _Compiled(FLOAT, _double(inner.sql), _to_float(inner.fn))
        elif target == exp.DataType.Type.BOOLEAN:
            if inner.kind in (BOOL, NULL):
                return _Compiled(BOOL, exp.Cast(this=inner.sql, to=exp.DataType.build("boolean")), inner.fn)
            if inner.kind in NUMERIC:
                raise ExpressionError(f"'{node.sql()}': write a comparison (x <> 0) instead of casting a number to boolean")
        else:
            raise ExpressionError(f"'{node.sql()}': casts go to bigint, double (float8) or boolean only")
        raise ExpressionError(f"'{node.sql()}': cannot cast {inner.kind} to {node.to.sql()}")

    def _extract(self, node: exp.Extract) -> _Compiled:
        return self._date_part(node.this.name, node.expression, node)

    def _anonymous(self, node: exp.Anonymous) -> _Compiled:
        if str(node.this).lower() == "date_part" and len(node.expressions) == 2 and node.expressions[0].is_string:
            return self._date_part(node.expressions[0].this, node.expressions[1], node)
        raise ExpressionError(f"function {node.sql()} is not supported (supported: {SUPPORTED})")

    def _date_part(self, part: str, argument: exp.Expression, node: exp.Expression) -> _Compiled:
        part = _PART_ALIASES.get(part.upper(), part.upper())
        if part not in _DATE_PARTS:
            raise ExpressionError(
                f"'{node.sql()}': date part '{part.lower()}' is not supported (supported: {', '.join(_DATE_PARTS).lower()})"
            )
        inner = self.compile(argument)
        if inner.kind not in (TIMESTAMP, NULL):
            raise ExpressionError(f"'{node.sql()}' needs a timestamp; '{argument.sql()}' is {inner.kind}")
        if inner.kind == NULL:
            return _Compiled(INT, exp.Cast(this=exp.Null(), to=exp.DataType.build("bigint")), lambda env: None)
        sql = exp.Cast(
            this=exp.Floor(this=exp.Extract(this=exp.var(part), expression=inner.sql)), to=exp.DataType.build("bigint")
        )
        return _Compiled(INT, sql, _strict(inner.fn, _DATE_PARTS[part]))


# -- the generated dbt macro --------------------------------------------------------------
