"""The serving tables: what each holds, where it comes from and which rows a run changes.

Every table has a `tenant` column; row-level security is keyed on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# How a run's changes are found, from the silver rows it added (see publish.TOUCHED):
#   hours  - the (device, metric, hour) groups they fall in
#   days   - the (site, metric, day) groups they fall in
#   since  - per (device, metric), every hour from the earliest one they touch (rolling
#            windows carry a change forward)
#   all    - small tables, replaced whole every time
Scope = Literal["hours", "days", "since", "all"]

_TRINO_TYPES = {
    "text": "varchar",
    "bigint": "bigint",
    "double precision": "double",
    "boolean": "boolean",
    "timestamptz": "timestamp(6) with time zone",
    "date": "date",
}


@dataclass(frozen=True)
class ServingTable:
    name: str
    layer: str
    source: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    scope: Scope
    # Extra rows filter on the source (anomalies keep flagged readings only).
    where: str = "true"
    # The column the source is partitioned by: a lower bound on it prunes files.
    time_column: str | None = None
    indexes: tuple[tuple[str, ...], ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    def create_sql(self, schema: str) -> str:
        columns = ",\n    ".join(
            f"{name} {pg_type}{' not null' if name in self.key or name == 'tenant' else ''}"
            for name, pg_type in self.columns
        )
        return (
            f"create table if not exists {schema}.{self.name} (\n    {columns},\n"
            f"    primary key ({', '.join(self.key)})\n)"
        )

    def index_sql(self, schema: str) -> list[str]:
        return [
            f"create index if not exists {self.name}_{'_'.join(cols)} "
            f"on {schema}.{self.name} ({', '.join(cols)})"
            for cols in self.indexes
        ]

    def select_list(self, alias: str = "s") -> str:
        """Trino columns cast to the types PostgreSQL stores."""
        return ", ".join(
            f'cast({alias}."{name}" as {_TRINO_TYPES[pg_type]})' for name, pg_type in self.columns
        )


_TIME = "timestamptz"
_NUM = "double precision"

TABLES: tuple[ServingTable, ...] = (
    ServingTable(
        name="device_hourly",
        layer="gold",
        source="fct_device_hourly",
        columns=(
            ("tenant", "text"),
            ("site", "text"),
            ("device_id", "text"),
            ("metric", "text"),
            ("hour", _TIME),
            ("readings", "bigint"),
            ("value_min", _NUM),
            ("value_max", _NUM),
            ("value_avg", _NUM),
            ("value_stddev", _NUM),
            ("first_ts", _TIME),
            ("last_ts", _TIME),
        ),
        key=("device_id", "metric", "hour"),
        scope="hours",
        time_column="hour",
        indexes=(("tenant", "hour"), ("hour",), ("site", "metric", "hour")),
    ),
    ServingTable(
        name="site_daily",
        layer="gold",
        source="fct_site_daily",
        columns=(
            ("tenant", "text"),
            ("site", "text"),
            ("metric", "text"),
            ("day", "date"),
            ("readings", "bigint"),
            ("devices_reporting", "bigint"),
            ("device_hours", "bigint"),
            ("value_min", _NUM),
            ("value_max", _NUM),
            ("value_avg", _NUM),
            ("value_stddev", _NUM),
            ("uptime_pct", _NUM),
        ),
        key=("site", "metric", "day"),
        scope="days",
        time_column="day",
        indexes=(("tenant", "day"),),
    ),
    ServingTable(
        name="device_health",
        layer="gold",
        source="device_health",
        columns=(
            ("tenant", "text"),
            ("site", "text"),
            ("device_id", "text"),
            ("is_active", "boolean"),
            ("first_seen", _TIME),
            ("last_seen", _TIME),
            ("readings", "bigint"),
            ("active_hours", "bigint"),
            ("span_hours", "bigint"),
            ("uptime_pct", _NUM),
            ("gaps", "bigint"),
            ("longest_gap_hours", "bigint"),
        ),
        key=("device_id",),
        scope="all",
        indexes=(("tenant",),),
    ),
    ServingTable(
        name="device_features",
        layer="platinum",
        source="device_features",
        columns=(
            ("tenant", "text"),
            ("site", "text"),
            ("device_id", "text"),
            ("metric", "text"),
            ("hour", _TIME),
            ("readings_1h", "bigint"),
            ("mean_1h", _NUM),
            ("stddev_1h", _NUM),
            ("readings_24h", "bigint"),
            ("mean_24h", _NUM),
            ("stddev_24h", _NUM),
            ("lag_1h", _NUM),
            ("rate_of_change_1h", _NUM),
            ("missing_ratio_24h", _NUM),
        ),
        key=("device_id", "metric", "hour"),
        scope="since",
        time_column="hour",
        indexes=(("tenant", "hour"),),
    ),
    ServingTable(
        name="anomalies",
        layer="platinum",
        source="anomaly_scores",
        columns=(
            ("tenant", "text"),
            ("site", "text"),
            ("device_id", "text"),
            ("seq", "bigint"),
            ("metric", "text"),
            ("ts", _TIME),
            ("hour", _TIME),
            ("value", _NUM),
            ("baseline_median", _NUM),
            ("baseline_mad", _NUM),
            ("robust_z", _NUM),
        ),
        key=("device_id", "seq"),
        scope="since",
        time_column="ts",
        where="s.is_anomaly",
        indexes=(("tenant", "ts"), ("device_id", "metric", "hour")),
    ),
    ServingTable(
        name="sites",
        layer="silver",
        source="dim_site",
        columns=(("tenant", "text"), ("site", "text"), ("lat", _NUM), ("lon", _NUM)),
        key=("site",),
        scope="all",
        indexes=(("tenant",),),
    ),
)
