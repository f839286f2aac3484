"""The rows every message reads and writes, with SQL built once per model.

A send reads its conversation, adds three rows and updates the conversation,
on the one database thread; the ORM spent longer building each statement than
the database spent running it.

Model.save() builds its INSERT from scratch each time: about 0.35 ms on the one
database thread, three times for every message sent. For a model with no save()
of its own and no signal receivers, this is the same INSERT, built once: the
same field preparation (defaults, auto_now_add, foreign keys, decimals) and the
new id read back with RETURNING, which SQLite (3.35 on) and PostgreSQL both have.
"""

import functools

from django.db import connection


def insert(row):
    """Save a new row of a model with an automatic id; returns it, as save() leaves it."""
    sql, fields = _insert_sql(type(row))
    values = [field.get_db_prep_save(field.pre_save(row, True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        row.pk = cursor.fetchone()[0]
    row._state.adding, row._state.db = False, connection.alias
    return row


@functools.cache
def _insert_sql(model) -> tuple[str, list]:
    meta = model._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    marks = ", ".join(["%s"] * len(fields))
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({marks}) "  # noqa: S608
        f"RETURNING {quote(meta.pk.column)}"
    )
    return sql, fields


def one(model, where: str, params, *, lock: bool = False):
    """The row of `model` that `where` (SQL over its columns) finds, loaded as the ORM
    loads it (each column through the same converters), or None. `lock`: FOR UPDATE,
    where the database has it. The same query through the ORM took 0.4 ms to build."""
    lock = lock and connection.features.has_select_for_update
    sql, (loader,) = _select(model, where, lock)
    row = _first_row(sql, params)
    return None if row is None else loader.load(row)


def one_with(model, relation: str, where: str, params):
    """one(), with the row that its foreign key `relation` points to, in the same
    statement (select_related's join); `where` names columns with their table's name."""
    sql, (loader, related) = _select(model, where, False, relation)
    row = _first_row(sql, params)
    if row is None:
        return None
    found = loader.load(row[: loader.width])
    setattr(found, relation, related.load(row[loader.width :]))
    return found


def exists(model, where: str, params) -> bool:
    """Whether `where` finds a row of `model` (QuerySet.exists(), built once)."""
    return _first_row(_exists_sql(model, where), params) is not None


@functools.cache
def _exists_sql(model, where: str) -> str:
    return f"SELECT 1 FROM {connection.ops.quote_name(model._meta.db_table)} WHERE {where} LIMIT 1"  # noqa: S608


def _first_row(sql: str, params):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


class _Loader:
    """Builds a model's row from its columns as the ORM does (each through the same
    converters)."""

    def __init__(self, model):
        meta = model._meta
        self.model, self.width = model, len(meta.concrete_fields)
        self.names = [field.attname for field in meta.concrete_fields]
        self.converters = []
        for field in meta.concrete_fields:
            column = field.get_col(meta.db_table)
            steps = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
            self.converters.append((column, steps))

    def columns(self) -> str:
        quote = connection.ops.quote_name
        table = quote(self.model._meta.db_table)
        return ", ".join(
            f"{table}.{quote(field.column)}" for field in self.model._meta.concrete_fields
        )

    def load(self, row):
        values = []
        for value, (column, steps) in zip(row, self.converters, strict=True):
            for step in steps:
                value = step(value, column, connection)
            values.append(value)
        return self.model.from_db(connection.alias, self.names, values)


@functools.cache
def _select(model, where: str, lock: bool, relation: str | None = None):
    quote = connection.ops.quote_name
    loaders = [_Loader(model)]
    source = quote(model._meta.db_table)
    if relation:
        field = model._meta.get_field(relation)
        loaders.append(_Loader(field.related_model))
        target = quote(field.related_model._meta.db_table)
        source += (
            f" JOIN {target} ON {target}.{quote(field.target_field.column)}"
            f" = {quote(model._meta.db_table)}.{quote(field.column)}"
        )
    columns = ", ".join(loader.columns() for loader in loaders)
    sql = f"SELECT {columns} FROM {source} WHERE {where}"  # noqa: S608
    return sql + (" FOR UPDATE" if lock else ""), loaders


def db_value(model, name: str, value):
    """A value for a query parameter on `model`'s field `name`, prepared as the ORM
    prepares it (a UUID's text form, say); junk raises as the ORM's lookup would."""
    field = model._meta.get_field(name)
    return field.get_db_prep_value(field.get_prep_value(value), connection, prepared=True)


def update(row, names: tuple[str, ...]):
    """save(update_fields=names) for a model with no save() or signals of its own, with
    the UPDATE built once (auto_now fields are stamped, as save() stamps them)."""
    meta = row._meta
    values = {name: meta.get_field(name).pre_save(row, False) for name in names}
    where = f"{connection.ops.quote_name(meta.pk.column)} = %s"
    update_where(type(row), values, where, [meta.pk.get_db_prep_value(row.pk, connection)])


def update_where(model, values: dict, where: str, params) -> int:
    """queryset.update(**values) for the rows `where` finds, the UPDATE built once per
    set of fields (values are prepared as the ORM prepares them; nothing is stamped)."""
    sql, fields = _update_sql(model, tuple(values), where)
    prepared = [field.get_db_prep_save(values[field.name], connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*prepared, *params])
        return cursor.rowcount


@functools.cache
def _update_sql(model, names: tuple[str, ...], where: str) -> tuple[str, list]:
    meta = model._meta
    fields = [meta.get_field(name) for name in names]
    quote = connection.ops.quote_name
    sets = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    return f"UPDATE {quote(meta.db_table)} SET {sets} WHERE {where}", fields  # noqa: S608
