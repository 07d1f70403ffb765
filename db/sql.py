"""SQL the supported databases (PostgreSQL, SQLite) spell differently, as expressions that
compile to each one's own."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class seconds_between(FunctionElement):
    """`seconds_between(start, end)`: the seconds from `start` to `end`, two timestamps, as
    a float; NULL when either is. Named in lower case, as SQLAlchemy's SQL functions are."""

    type = Float()
    name = "seconds_between"
    inherit_cache = True


def _bounds(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> tuple[str, str]:
    start, end = element.clauses
    return compiler.process(start, **kw), compiler.process(end, **kw)


@compiles(seconds_between)
def _postgresql(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = _bounds(element, compiler, **kw)
    return f"CAST(EXTRACT(EPOCH FROM ({end}) - ({start})) AS DOUBLE PRECISION)"


@compiles(seconds_between, "sqlite")
def _sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    """SQLite keeps timestamps as text and reads them to the millisecond; rounding to it
    removes julianday's floating-point error (tens of microseconds), so a duration on a
    bound (0.5 s) compares as that bound."""
    start, end = _bounds(element, compiler, **kw)
    return f"ROUND((julianday({end}) - julianday({start})) * 86400.0, 3)"
