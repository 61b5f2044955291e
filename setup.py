from setuptools import find_packages, setup

# twisted/plugins has no __init__.py on purpose (it would hide the real
# Twisted package); it is listed by hand so the plugin gets installed.
setup(packages=find_packages(exclude=["tests", "tests.*"]) + ["twisted.plugins"])
