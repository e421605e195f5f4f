"""Pipelines that turn recordings into session files (one sub-package per brainset)."""
