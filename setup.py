"""Build config for the one C extension (everything else is in pyproject.toml).

``mediasrv.rtp._fastsend`` holds a leg's packet state (the PacketState type, RtpLeg's base) and
runs the media clock's common case (a leg slicing one pre-encoded playback, or sending silence)
in C from that state; see mediasrv/rtp/fastpath.py.  Needs gcc and the Python
headers (Debian: python3-dev), which scripts/test.sh installs.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mediasrv.rtp._fastsend",
            ["mediasrv/rtp/_fastsend.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers",
                                "-Werror=implicit-function-declaration"],
            optional=False,
        )
    ],
)
