"""Retraining scripts: arguments -> config -> library calls -> model folder."""
