"""Root conftest: the Hypothesis profiles (ci / dev / fuzz). The plugin itself is
registered through the ``pytest11`` entry point, see harness/plugin.py."""

from harness.strategies import register_profiles

register_profiles()
