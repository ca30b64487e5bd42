"""Only what setup.cfg cannot say: the cffi build of the native VapourSynth plugin."""

from setuptools import setup

setup(cffi_modules=["filters/build_plugin.py:ffibuilder"])
