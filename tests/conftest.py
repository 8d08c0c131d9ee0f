"""Settings for the whole suite."""

from hypothesis import settings

# Shared 2-core machines stall now and then; a per-example deadline would turn that into
# flaky failures. Each test still has pytest-timeout's limit.
settings.register_profile("flowweaver", deadline=None)
settings.load_profile("flowweaver")
