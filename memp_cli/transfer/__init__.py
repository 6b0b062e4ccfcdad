"""Memories that travel: the export format (format.py), `memp export` (export.py), `memp import` (importer.py) and
Agent Skills folders (skills.py). The format is described in README "Export and import" and, line by line, in
`memp_cli/schemas/export.schema.json`.
"""
