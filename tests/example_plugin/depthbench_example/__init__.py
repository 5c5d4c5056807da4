"""Example depthbench plugin: models registered through the `depthbench.models` entry points in pyproject.toml."""
