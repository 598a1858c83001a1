"""The lake's lifecycle: deleting rows (``delete.py``), retained catalog files (``retained.py``), what the
catalog references (``refs.py``) and garbage collection of unreferenced assets (``gc.py``). No Dagster here."""
