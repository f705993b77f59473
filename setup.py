"""Build the optional C accelerators; everything else is in pyproject.toml.

The extensions are optional: without a compiler the package installs and runs on its pure-Python
path (correct, slower), and ``stream-triage doctor``-style checks report which path is active.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "stream_triage.pipeline._kernel",
            ["stream_triage/pipeline/_kernel.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wno-missing-field-initializers"],
            optional=True,
        ),
        # Live ingest: octet-counted RFC 5424 / logplex frames straight into LineBatches.
        Extension(
            "stream_triage.sources._syslog_fast",
            ["stream_triage/sources/_syslog_fast.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        ),
    ]
)
