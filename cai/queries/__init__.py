"""Read-side queries of the workbench database, grouped by subject, for the web app and any other reader.

Each function takes the sqlite-utils `Database` and returns plain rows (dicts) or values, so `ui/` lays
out components around them and holds no SQL; tests call them on an in-memory or temporary store.
"""
