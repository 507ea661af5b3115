"""Backup and restore of a whole lakehouse: catalog, tables, registry, dashboards, and
the readings still waiting in Kafka.

A backup is consistent at one commit of Nessie's main: files are never deleted while it
runs (it holds the maintenance lock), Nessie's database is dumped first, and the Kafka
messages from bronze's committed offsets (read before that dump) onwards are exported,
so every reading the gateway accepted is in the tables or in the backup. A restore
rebuilds a new home from it, with Kafka messages back at their original offsets.
"""
