"""Every merge method, one module each. Importing this package imports every module in it (and so
registers every method): there is no list of imports to forget."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
