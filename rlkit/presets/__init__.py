"""Preset YAML files, read as package resources (see rlkit.config.load_preset)."""
