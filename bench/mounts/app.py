"""The benchmark's "source": it imports what the pip step installed and writes a short report.
bench/run-mounts.sh appends a comment line to a copy of this file to make a source change."""
import babel
import django
import pygments
import requests
import sympy

x = sympy.symbols("x")
print("django", django.get_version(), "babel", babel.__version__, "pygments", pygments.__version__)
print("requests", requests.__version__, "sympy", sympy.__version__, sympy.integrate(x**2, x))
